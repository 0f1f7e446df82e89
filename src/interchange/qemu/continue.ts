// Runs a rebuilt machine on from the stream's moment as a guest that does nothing but take
// interrupts would: the clock moves to each timer event, every CPU takes what is deliverable
// and ends it with an EOI to whichever controller delivered it. docs/qemu-state.md.

import type { Machine } from "../../core/machine.js";
import { LAPIC, LAPIC_EOI } from "../../guest/drivers.js";
import type { KvmPicState } from "../kvm/layout.js";

export interface TakenInterrupt {
  timeNs: number;
  cpu: number;
  vector: number;
  /** Who delivered it, as the EOI went: the local APIC, or the PICs (ExtINT or no APIC). */
  from: "lapic" | "pic";
}

const LAPIC_ISR = LAPIC + 0x100;
const PIC_MASTER_COMMAND = 0x20;
const PIC_SLAVE_COMMAND = 0xa0;
const OCW2_EOI = 0x20;
/** Enough for any sensible window; a machine that takes more is in an interrupt storm. */
export const MAX_TAKEN = 10_000;

export interface ContinueOptions {
  /** The slave PIC's state, to tell its vectors (which need its EOI too) from the master's. */
  slave: KvmPicState;
  /**
   * Nanoseconds after the start at which the resume's own bookkeeping acts (the timer phases
   * applied at the resume restart the counts then): the clock stops at each first, so that
   * timer events are taken at their times and not at the next stop after them.
   */
  settleNs?: readonly number[];
}

/** Runs `machine` for `durationNs` of virtual time; the interrupts the CPUs took, in order. */
export function continueMachine(machine: Machine, durationNs: number, options: ContinueOptions): TakenInterrupt[] {
  const taken: TakenInterrupt[] = [];
  const end = machine.now() + durationNs;
  const takeAll = () => {
    for (let k = 0; k < machine.config.cpus && taken.length < MAX_TAKEN; k++) {
      machine.selectCpu(k);
      for (let v = machine.inta(); v >= 0 && taken.length < MAX_TAKEN; v = machine.inta()) {
        const inService = machine.config.lapic && ((machine.readl(LAPIC_ISR + (v >>> 5) * 16) >>> (v & 31)) & 1) === 1;
        if (inService) machine.writel(LAPIC_EOI, 0);
        else {
          if ((v & ~7) === (options.slave.irqBase & ~7)) machine.outb(PIC_SLAVE_COMMAND, OCW2_EOI);
          machine.outb(PIC_MASTER_COMMAND, OCW2_EOI);
        }
        taken.push({ timeNs: machine.now(), cpu: k, vector: v, from: inService ? "lapic" : "pic" });
      }
    }
  };
  takeAll();
  const start = machine.now();
  for (const ns of [...new Set(options.settleNs ?? [])].sort((a, b) => a - b)) if (ns > 0 && ns <= durationNs) machine.advanceTo(start + ns);
  for (let next = machine.nextTimerEvent(); next <= end && taken.length < MAX_TAKEN; next = machine.nextTimerEvent()) {
    machine.advanceTo(next);
    takeAll();
  }
  if (machine.now() < end) machine.advanceTo(end);
  machine.selectCpu(0);
  return taken;
}
