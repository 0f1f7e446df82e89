// Random programs for machines with several CPUs: each step runs on one CPU and touches its
// local APIC (xAPIC page or x2APIC MSRs), sends IPIs of every kind, starts or resets CPUs,
// switches to x2APIC, drives I/O APIC pins routed to any CPU, or lets time pass.

import fc from "fast-check";
import type { Machine } from "../../src/core/machine.js";
import { LEVEL, MASKED, MSR_APIC_BASE, PERIODIC, REG, TSC_DEADLINE, ioEntry } from "./apic.js";

export type SmpStep =
  | { op: "write"; cpu: number; offset: number; value: number }
  | { op: "read"; cpu: number; offset: number }
  | { op: "ipi"; cpu: number; low: number; dest: number }
  | { op: "x2"; cpu: number }
  | { op: "selfIpi"; cpu: number; vector: number }
  | { op: "inta"; cpu: number }
  | { op: "sipi"; cpu: number }
  | { op: "entry"; pin: number; low: number; dest: number }
  | { op: "gsi"; pin: number; level: number }
  | { op: "advance"; ns: number }
  | { op: "pic"; cpu: number; base: number; mask: number }
  | { op: "irq"; line: number; level: number };

const MODES = [0, 1, 2, 4, 5, 6].map((m) => m << 8);
const SHORTHANDS = [0, 1, 2, 3].map((s) => s << 18);
const vector = fc.integer({ min: 0x20, max: 0xef });
/** Registers a program writes (ESR and the divider aside: ERRORS_SINCE_ESR_WRITE, divide by 1 only). */
const WRITABLE = [REG.tpr, REG.ldr, REG.dfr, REG.svr, REG.eoi, REG.lvtTimer, REG.lvtLint1, REG.lvtError, REG.initialCount];
const READABLE = [REG.id, REG.tpr, REG.ppr, REG.ldr, REG.svr, REG.isr + 0x40, REG.irr + 0x40, REG.tmr + 0x40, REG.icrLow, REG.icrHigh, REG.lvtTimer, REG.initialCount, REG.currentCount];

function registerValue(offset: number): fc.Arbitrary<number> {
  switch (offset) {
    case REG.svr:
      return fc.constantFrom(0x1ff, 0x1ff, 0x1ff, 0xff);
    case REG.lvtTimer:
      return fc.tuple(vector, fc.constantFrom(0, PERIODIC, TSC_DEADLINE, MASKED)).map(([v, m]) => v | m);
    case REG.initialCount:
      return fc.integer({ min: 0, max: 5000 });
    case REG.dfr:
      return fc.constantFrom(0xffffffff, 0x0fffffff);
    case REG.ldr:
      return fc.integer({ min: 0, max: 0xff }).map((v) => v << 24);
    case REG.tpr:
      return fc.integer({ min: 0, max: 0xff });
    default:
      return fc.integer({ min: 0, max: 0xffffffff });
  }
}

export function smpStep(cpus: number): fc.Arbitrary<SmpStep> {
  const cpu = fc.integer({ min: 0, max: cpus - 1 });
  const write = fc.constantFrom(...WRITABLE).chain((offset) =>
    fc.record({ op: fc.constant("write" as const), cpu, offset: fc.constant(offset), value: registerValue(offset) }),
  );
  const ipi = fc.record({
    op: fc.constant("ipi" as const),
    cpu,
    low: fc.tuple(vector, fc.constantFrom(...MODES), fc.constantFrom(...SHORTHANDS), fc.boolean(), fc.boolean()).map(
      ([v, mode, shorthand, logical, assert]) => v | mode | shorthand | (logical ? 1 << 11 : 0) | (mode === 5 << 8 && !assert ? LEVEL : 1 << 14),
    ),
    dest: fc.oneof(fc.integer({ min: 0, max: cpus - 1 }), fc.constantFrom(0xff, 0xffffffff), fc.integer({ min: 0, max: 0xff })),
  });
  return fc.oneof(
    { weight: 5, arbitrary: write },
    { weight: 3, arbitrary: fc.record({ op: fc.constant("read" as const), cpu, offset: fc.constantFrom(...READABLE) }) },
    { weight: 4, arbitrary: ipi },
    { weight: 1, arbitrary: fc.record({ op: fc.constant("x2" as const), cpu }) },
    { weight: 1, arbitrary: fc.record({ op: fc.constant("selfIpi" as const), cpu, vector }) },
    { weight: 3, arbitrary: fc.record({ op: fc.constant("inta" as const), cpu }) },
    { weight: 1, arbitrary: fc.record({ op: fc.constant("sipi" as const), cpu }) },
    {
      weight: 1,
      arbitrary: fc.record({
        op: fc.constant("entry" as const),
        pin: fc.integer({ min: 16, max: 19 }),
        low: fc.tuple(vector, fc.constantFrom(0, 1 << 8, 4 << 8), fc.boolean(), fc.boolean()).map(([v, mode, level, logical]) => v | mode | (level ? LEVEL : 0) | (logical ? 1 << 11 : 0)),
        dest: fc.integer({ min: 0, max: 0xff }),
      }),
    },
    { weight: 2, arbitrary: fc.record({ op: fc.constant("gsi" as const), pin: fc.integer({ min: 16, max: 19 }), level: fc.integer({ min: 0, max: 1 }) }) },
    { weight: 2, arbitrary: fc.record({ op: fc.constant("advance" as const), ns: fc.integer({ min: 1, max: 3000 }) }) },
    {
      weight: 1,
      arbitrary: fc.record({ op: fc.constant("pic" as const), cpu, base: fc.integer({ min: 2, max: 0x1d }).map((b) => b << 3), mask: fc.integer({ min: 0, max: 0xff }) }),
    },
    { weight: 1, arbitrary: fc.record({ op: fc.constant("irq" as const), line: fc.integer({ min: 3, max: 7 }), level: fc.integer({ min: 0, max: 1 }) }) },
  );
}

export interface SmpOptions {
  /**
   * Include LVT timer writes that no new initial count on the same CPU follows. A QEMU-mode
   * continuation leaves them out (QEMU_LOAD_TIME: QEMU re-derives the count from its load time,
   * and the destination's differs); drivers reload the count.
   */
  timerChangesWithoutCount?: boolean;
}

/** One guest action: a step, or an LVT timer write and the new count that goes with it. */
function smpAction(cpus: number, { timerChangesWithoutCount = true }: SmpOptions): fc.Arbitrary<SmpStep[]> {
  return smpStep(cpus).chain((s): fc.Arbitrary<SmpStep[]> => {
    if (timerChangesWithoutCount || s.op !== "write" || s.offset !== REG.lvtTimer) return fc.constant([s]);
    return registerValue(REG.initialCount).map((value): SmpStep[] => [s, { op: "write", cpu: s.cpu, offset: REG.initialCount, value }]);
  });
}

export const smpProgram = (cpus: number, max: number, options: SmpOptions = {}): fc.Arbitrary<SmpStep[]> =>
  fc.array(smpAction(cpus, options), { maxLength: max }).map((actions) => actions.flat());

const x2 = (m: Machine) => (m.rdmsr(MSR_APIC_BASE) & 0x400n) !== 0n;

/** Runs one step; returns what the guest saw (a read, a vector, a start-up state), else undefined. */
export function applySmpStep(m: Machine, s: SmpStep): unknown {
  if ("cpu" in s) m.selectCpu(s.cpu);
  switch (s.op) {
    case "write":
      if (x2(m)) {
        if (s.offset !== REG.ldr && s.offset !== REG.dfr) m.wrmsr(0x800 + (s.offset >> 4), BigInt(s.value >>> 0));
      } else {
        m.writel(0xfee00000 + s.offset, s.value >>> 0);
      }
      return undefined;
    case "read":
      return x2(m) ? m.rdmsr(0x800 + (s.offset >> 4)) : m.readl(0xfee00000 + s.offset) >>> 0;
    case "ipi":
      if (x2(m)) {
        m.wrmsr(0x830, (BigInt(s.dest >>> 0) << 32n) | BigInt(s.low));
      } else {
        m.writel(0xfee00310, (s.dest & 0xff) << 24);
        m.writel(0xfee00300, s.low);
      }
      return undefined;
    case "x2": {
      // IA32_APIC_BASE: xAPIC → x2APIC (ignored unless the APIC is enabled in xAPIC mode).
      const base = m.rdmsr(MSR_APIC_BASE);
      if ((base & 0xc00n) === 0x800n) m.wrmsr(MSR_APIC_BASE, base | 0x400n);
      return undefined;
    }
    case "selfIpi":
      if (x2(m)) m.wrmsr(0x83f, BigInt(s.vector));
      return undefined;
    case "inta":
      return m.inta();
    case "sipi":
      return m.sipiState();
    case "entry":
      ioEntry(m, s.pin, s.low, s.dest);
      return undefined;
    case "gsi":
      m.setGsi(s.pin, s.level);
      return undefined;
    case "advance":
      m.advanceTo(m.now() + s.ns);
      return undefined;
    case "pic":
      // The master PIC initialised as Linux does, from whichever CPU; its INT then reaches
      // every CPU whose LINT0 is ExtINT (this one's is made so).
      for (const [port, value] of [[0x20, 0x11], [0x21, s.base], [0x21, 0x04], [0x21, 0x01], [0x21, s.mask]]) m.outb(port, value);
      if (!x2(m)) m.writel(0xfee00350, 0x700);
      return undefined;
    case "irq":
      m.setIrq(s.line, s.level);
      return undefined;
  }
}

/**
 * Gets a machine of several CPUs going as an OS would: every AP but the last started
 * (INIT, start-up), every running CPU's APIC software-enabled, every timer dividing by 1
 * (TIMER_PHASE: whole-ns periods). The last AP still waits for its start-up IPI.
 */
export function prepareSmp(m: Machine): void {
  const n = m.config.cpus;
  for (let k = 1; k < n - 1; k++) {
    m.writel(0xfee00310, k << 24);
    m.writel(0xfee00300, 0xc500);
    m.writel(0xfee00300, 0x0610);
  }
  for (let k = 0; k < n; k++) {
    m.selectCpu(k);
    m.writel(0xfee003e0, 0xb);
    if (k < n - 1) m.writel(0xfee000f0, 0x1ff);
  }
  m.selectCpu(0);
}
