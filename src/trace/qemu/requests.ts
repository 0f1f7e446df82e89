// Which CPU asked for which interrupt vector, followed from a multi-CPU QEMU log, so that an
// accepted interrupt (which QEMU logs without its CPU) can be given to the one CPU that had
// asked for it. docs/traces.md ("Which CPU a line belongs to") states the rule.

import type { ApicMessage } from "./log.js";

/** Delivery modes 0 (fixed) and 1 (lowest priority) ask for a vector; the others for none. */
const FIXED = 0;
const LOWEST_PRIORITY = 1;
/** INIT: resets the target's local APIC (its requests and logical destination with it). */
const INIT = 5;
/** ICR bits 15:14 (trigger mode, level) of an INIT level de-assert, which resets nothing. */
const INIT_LEVEL_BITS = 0xc000;
const INIT_DEASSERT = 0x8000;
const PHYSICAL_BROADCAST = 0xff;
/** DFR model bits 31:28: 0xf flat, 0x0 cluster. */
const DFR_FLAT = 0xf;

const ICR_LOW = 0x300;
const ICR_HIGH = 0x310;
const LDR = 0x0d0;
const DFR = 0x0e0;
const SHORTHAND_SELF = 1;
const SHORTHAND_ALL = 2;
const SHORTHAND_OTHERS = 3;

/** Per CPU: the vectors requested and not yet accepted, and what its destination registers hold. */
export class InterruptRequests {
  private readonly pending: Set<number>[];
  private readonly ldr: number[];
  private readonly dfr: number[];
  private readonly icrHigh: number[];

  constructor(readonly cpus: number) {
    this.pending = Array.from({ length: cpus }, () => new Set<number>());
    this.ldr = new Array<number>(cpus).fill(0);
    this.dfr = new Array<number>(cpus).fill(0xffff_ffff);
    this.icrHigh = new Array<number>(cpus).fill(0);
  }

  /** A local APIC register write by `cpu` (offset in the page): destination registers and IPIs. */
  write(cpu: number, offset: number, value: number): void {
    switch (offset) {
      case LDR:
        this.ldr[cpu] = value >>> 0;
        break;
      case DFR:
        this.dfr[cpu] = value >>> 0;
        break;
      case ICR_HIGH:
        this.icrHigh[cpu] = value >>> 0;
        break;
      case ICR_LOW:
        this.sendIpi(cpu, value);
        break;
    }
  }

  /** A message from the I/O APIC or an MSI (`apic_deliver_irq`). */
  message(target: ApicMessage): void {
    this.request(this.destinations(target.dest, target.logical), target.deliveryMode, target.vector);
  }

  /** CPU `cpu`'s own source (its LVT timer) asks for `vector`. */
  local(cpu: number, vector: number): void {
    this.pending[cpu]!.add(vector);
  }

  /** The CPUs that asked for `vector` and have not yet accepted it. */
  askedBy(vector: number): number[] {
    const cpus: number[] = [];
    for (let cpu = 0; cpu < this.cpus; cpu++) if (this.pending[cpu]!.has(vector)) cpus.push(cpu);
    return cpus;
  }

  /** CPU `cpu` accepted `vector`. */
  accepted(cpu: number, vector: number): void {
    this.pending[cpu]!.delete(vector);
  }

  private sendIpi(from: number, low: number): void {
    const shorthand = (low >>> 18) & 3;
    const mode = (low >>> 8) & 7;
    let cpus: number[];
    if (shorthand === SHORTHAND_SELF) cpus = [from];
    else if (shorthand === SHORTHAND_ALL) cpus = this.all();
    else if (shorthand === SHORTHAND_OTHERS) cpus = this.all().filter((cpu) => cpu !== from);
    else cpus = this.destinations(this.icrHigh[from]! >>> 24, (low & 0x800) !== 0);
    if (mode === INIT) {
      if ((low & INIT_LEVEL_BITS) !== INIT_DEASSERT) this.init(cpus);
    } else {
      this.request(cpus, mode, low & 0xff);
    }
  }

  /** Lowest priority goes to the first CPU of the set, as QEMU 7.2 does (docs/traces.md). */
  private request(cpus: number[], mode: number, vector: number): void {
    if (mode === FIXED) for (const cpu of cpus) this.pending[cpu]!.add(vector);
    else if (mode === LOWEST_PRIORITY && cpus.length > 0) this.pending[cpus[0]!]!.add(vector);
  }

  private init(cpus: number[]): void {
    for (const cpu of cpus) {
      this.pending[cpu]!.clear();
      this.ldr[cpu] = 0;
      this.dfr[cpu] = 0xffff_ffff;
    }
  }

  private all(): number[] {
    return Array.from({ length: this.cpus }, (_, cpu) => cpu);
  }

  /** QEMU 7.2's destination decoding: physical by APIC ID (= CPU), logical by LDR and DFR. */
  private destinations(dest: number, logical: boolean): number[] {
    if (!logical) return dest === PHYSICAL_BROADCAST ? this.all() : dest < this.cpus ? [dest] : [];
    return this.all().filter((cpu) => {
      const id = this.ldr[cpu]! >>> 24;
      if (this.dfr[cpu]! >>> 28 === DFR_FLAT) return (dest & id) !== 0;
      return (dest & 0xf0) === (id & 0xf0) && (dest & id & 0x0f) !== 0;
    });
  }
}
