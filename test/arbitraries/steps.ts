// One guest step on the Machine API, whatever device it concerns, and the one function that runs
// it: the random programs of every device family (pic.ts, pit.ts, apic.ts) are lists of these,
// so they mix freely in one program.

import type { Machine } from "../../src/core/machine.js";
import { IOAPIC_EOI, IOREGSEL, MSR_TSC_DEADLINE, ioRead, ioWrite, readReg, writeReg } from "./apic-registers.js";

const MSR_TSC = 0x10;

export type Step =
  | { op: "outb"; port: number; value: number }
  | { op: "inb"; port: number }
  | { op: "irq"; line: number; level: 0 | 1 }
  | { op: "gsi"; pin: number; level: 0 | 1 }
  | { op: "inta" }
  | { op: "advance"; ns: number }
  | { op: "write"; offset: number; value: number }
  | { op: "read"; offset: number }
  | { op: "ioWrite"; reg: number; value: number }
  | { op: "ioRead"; reg: number }
  | { op: "ioSelect"; value: number }
  | { op: "ioEoi"; vector: number }
  | { op: "wrmsr"; msr: number; value: bigint }
  | { op: "deadlineIn"; ticks: number }
  | { op: "rdmsr"; msr: number };

/** Runs one step; returns what the guest observes (a read value or a vector), if anything. */
export function applyStep(m: Machine, s: Step): number | bigint | undefined {
  switch (s.op) {
    case "outb":
      m.outb(s.port, s.value);
      return undefined;
    case "inb":
      return m.inb(s.port);
    case "irq":
      m.setIrq(s.line, s.level);
      return undefined;
    case "gsi":
      m.setGsi(s.pin, s.level);
      return undefined;
    case "inta":
      return m.inta();
    case "advance":
      m.advanceTo(m.now() + s.ns);
      return undefined;
    case "write":
      writeReg(m, s.offset, s.value);
      return undefined;
    case "read":
      return readReg(m, s.offset);
    case "ioWrite":
      ioWrite(m, s.reg, s.value);
      return undefined;
    case "ioRead":
      return ioRead(m, s.reg);
    case "ioSelect":
      m.writel(IOREGSEL, s.value);
      return undefined;
    case "ioEoi":
      m.writel(IOAPIC_EOI, s.vector);
      return undefined;
    case "wrmsr":
      m.wrmsr(s.msr, s.value);
      return undefined;
    case "deadlineIn": {
      // A deadline relative to the TSC now: negative ticks put it in the past.
      const d = m.rdmsr(MSR_TSC) + BigInt(s.ticks);
      m.wrmsr(MSR_TSC_DEADLINE, d > 0n ? d : 1n);
      return undefined;
    }
    case "rdmsr":
      return m.rdmsr(s.msr);
  }
}

/** Runs a program; returns what each step observed. */
export function run(m: Machine, steps: readonly Step[]): (number | bigint | undefined)[] {
  return steps.map((s) => applyStep(m, s));
}
