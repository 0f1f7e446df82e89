// Random guest behaviour for the local APIC and the I/O APIC, as plain steps on the Machine
// API: local APIC setup (software enable, TPR, destinations), self-IPIs and other ICR
// commands, acknowledges and EOIs, error-causing accesses, the timer in every mode, I/O APIC
// entries and the levels of their lines, all interleaved with the passage of time.

import fc from "fast-check";
import { Machine, type MachineOptions } from "../../src/core/machine.js";
import {
  ALL_EXCLUDING_SELF, ALL_INCLUDING_SELF, LEVEL, MASKED, MSR_APIC_BASE, MSR_TSC_DEADLINE, PERIODIC, REG, SELF,
  TSC_DEADLINE,
} from "./apic-registers.js";
import type { Step } from "./steps.js";

export * from "./apic-registers.js";

export interface LapicTimerState {
  initialCount: number;
  divideConfig: number;
  deadline: number | bigint;
  armed: number;
  epoch: number;
  expiryTick: number | bigint;
  nextEvent: number | bigint;
}
export interface LapicState {
  apicBase: number;
  id: number;
  tpr: number;
  ppr: number;
  ldr: number;
  dfr: number;
  svr: number;
  isr: number[];
  tmr: number[];
  irr: number[];
  esr: number;
  esrPending: number;
  icrLow: number;
  icrHigh: number;
  lvt: number[];
  lintLevels: number;
  timer: LapicTimerState;
  cpuEvents: Record<"smi" | "nmi" | "init" | "startup" | "extint", number>;
}
export interface IoApicState {
  ioregsel: number;
  id: number;
  entries: { low: number; high: number }[];
  levels: number;
  irr: number;
}

export const lapicOf = (m: Machine) => m.inspect().lapic as unknown as LapicState;
export const ioapicOf = (m: Machine) => m.inspect().ioapic as unknown as IoApicState;

/** A board with the two APICs only: no PIC (LINT0 stays low), no PIT on ISA line 0. */
export function apicMachine(options: MachineOptions = {}): Machine {
  return Machine.create({ pic: false, pit: false, pitIrq0: false, ...options });
}

/** Bit `v` of a 256-bit register (ISR, TMR or IRR) as inspect() shows it. */
export const bitOf = (words: number[], v: number) => ((words[v >>> 5] >>> (v & 31)) & 1) === 1;

const write = (offset: number, value: number): Step => ({ op: "write", offset, value });

const byte = fc.integer({ min: 0, max: 0xff });
/** Mostly legal vectors, now and then an illegal one (0–15). */
const vector = fc.oneof({ weight: 9, arbitrary: fc.integer({ min: 0x10, max: 0xff }) }, { weight: 1, arbitrary: fc.integer({ min: 0, max: 15 }) });
/** A few vectors in few classes, so that priorities collide. */
const commonVector = fc.constantFrom(0x31, 0x35, 0x41, 0x52, 0x58, 0x6e, 0x80, 0xec, 0xfe);
const anyVector = fc.oneof({ weight: 3, arbitrary: commonVector }, { weight: 1, arbitrary: vector });

const svr: fc.Arbitrary<Step> = fc
  .record({ enable: fc.constantFrom(1, 1, 1, 0), vec: byte, focus: fc.boolean() })
  .map(({ enable, vec, focus }) => write(REG.svr, (enable << 8) | vec | (focus ? 1 << 9 : 0)));
const tpr: fc.Arbitrary<Step> = fc.oneof(fc.constant(0), byte).map((v) => write(REG.tpr, v));
const destinationSetup: fc.Arbitrary<Step[]> = fc
  .record({ ldr: byte, cluster: fc.boolean(), id: fc.constantFrom(0, 0, 1, 5) })
  .map(({ ldr, cluster, id }) => [
    write(REG.ldr, ldr << 24),
    write(REG.dfr, cluster ? 0x0fffffff : 0xffffffff),
    write(REG.id, id << 24),
  ]);

/** ICR commands: self-IPIs mostly, every shorthand and mode now and then. */
const icr: fc.Arbitrary<Step[]> = fc
  .record({
    vec: anyVector,
    mode: fc.oneof({ weight: 6, arbitrary: fc.constant(0) }, { weight: 2, arbitrary: fc.integer({ min: 0, max: 7 }) }),
    shorthand: fc.constantFrom(SELF, SELF, SELF, ALL_INCLUDING_SELF, ALL_EXCLUDING_SELF, 0),
    logical: fc.boolean(),
    levelBits: fc.constantFrom(0, 1 << 14, LEVEL | (1 << 14), LEVEL),
    dest: fc.constantFrom(0, 1, 0xff, 0x03),
  })
  .map(({ vec, mode, shorthand, logical, levelBits, dest }) => [
    write(REG.icrHigh, dest << 24),
    write(REG.icrLow, vec | (mode << 8) | (logical ? 1 << 11 : 0) | levelBits | shorthand),
  ]);
const inta: fc.Arbitrary<Step> = fc.constant({ op: "inta" });
const eoi: fc.Arbitrary<Step> = fc.constant(write(REG.eoi, 0));
/** A self-IPI taken by the CPU: fills ISR. */
const interrupt: fc.Arbitrary<Step[]> = commonVector.map((v) => [write(REG.icrLow, SELF | v), { op: "inta" }]);
const errors: fc.Arbitrary<Step> = fc.constantFrom<Step>(
  { op: "read", offset: REG.unimplemented },
  write(0x3f0, 0),
  write(REG.esr, 0),
  write(REG.esr, 0),
);

const divideConfig = fc.constantFrom(0x0, 0x1, 0x2, 0x3, 0x8, 0x9, 0xa, 0xb);
const count = fc.oneof(
  { weight: 4, arbitrary: fc.integer({ min: 1, max: 300 }) },
  { weight: 1, arbitrary: fc.integer({ min: 0, max: 0xffffffff }) },
);
const timerLvt = fc
  .record({ mode: fc.constantFrom(0, PERIODIC, PERIODIC, TSC_DEADLINE), masked: fc.constantFrom(0, 0, 0, MASKED), vec: anyVector })
  .map(({ mode, masked, vec }) => mode | masked | vec);
/** Programming the timer as drivers do: divider and LVT, then the count that starts it. */
const timerStart: fc.Arbitrary<Step[]> = fc
  .record({ div: divideConfig, lvt: timerLvt, count })
  .map(({ div, lvt, count }) => [write(REG.divide, div), write(REG.lvtTimer, lvt), write(REG.initialCount, count)]);
/** An LVT timer change alone, with the count running (not exact across a QEMU-mode migration). */
const lvtOnly: fc.Arbitrary<Step> = timerLvt.map((v) => write(REG.lvtTimer, v));
const timerTouch: fc.Arbitrary<Step> = fc.oneof(
  count.map((v) => write(REG.initialCount, v)),
  fc
    .oneof(fc.integer({ min: -50, max: 3000 }), fc.integer({ min: 3000, max: 10_000_000 }))
    .map((ticks): Step => ({ op: "deadlineIn", ticks })),
  fc.constant<Step>({ op: "wrmsr", msr: MSR_TSC_DEADLINE, value: 0n }),
);
/** A divider change alone, with the count running (not exact across a QEMU-mode migration). */
const divideOnly: fc.Arbitrary<Step> = divideConfig.map((v) => write(REG.divide, v));
/** Other LVT entries: fixed, NMI or ExtINT; the LINT pins' also level-triggered. */
const otherLvt: fc.Arbitrary<Step> = fc
  .record({
    which: fc.constantFrom(REG.lvtThermal, REG.lvtPerf, REG.lvtLint0, REG.lvtLint1, REG.lvtError),
    masked: fc.constantFrom(0, MASKED),
    mode: fc.constantFrom(0, 0x400, 0x700),
    level: fc.constantFrom(0, LEVEL),
    vec: anyVector,
  })
  .map(({ which, masked, mode, level, vec }) => {
    const lint = which === REG.lvtLint0 || which === REG.lvtLint1;
    return write(which, masked | (which === REG.lvtError ? 0 : mode) | (lint ? level : 0) | vec);
  });

const pin = fc.oneof({ weight: 3, arbitrary: fc.integer({ min: 16, max: 23 }) }, { weight: 2, arbitrary: fc.integer({ min: 0, max: 15 }) });
const ioEntryLow = fc
  .record({
    vec: commonVector,
    level: fc.constantFrom(true, true, false),
    masked: fc.constantFrom(0, 0, MASKED),
    activeLow: fc.constantFrom(0, 0, 0, 1 << 13),
    logical: fc.constantFrom(0, 0, 1 << 11),
  })
  .map(({ vec, level, masked, activeLow, logical }) => vec | (level ? LEVEL : 0) | masked | activeLow | logical);
const ioProgram: fc.Arbitrary<Step[]> = fc
  .record({ pin, low: ioEntryLow, dest: fc.constantFrom(0, 0, 1, 0xff) })
  .map(({ pin, low, dest }) => [
    { op: "ioWrite", reg: 0x11 + 2 * pin, value: dest << 24 },
    { op: "ioWrite", reg: 0x10 + 2 * pin, value: low },
  ]);
const gsi: fc.Arbitrary<Step> = fc
  .record({ pin, level: fc.constantFrom<0 | 1>(0, 1, 1) })
  .map(({ pin, level }) => ({ op: "gsi", pin, level }));
const ioOther: fc.Arbitrary<Step> = fc.oneof(
  commonVector.map((vector): Step => ({ op: "ioEoi", vector })),
  byte.map((value): Step => ({ op: "ioSelect", value })),
  fc.constantFrom<Step>({ op: "ioWrite", reg: 0, value: 0x0a000000 }, { op: "ioRead", reg: 0x01 }),
);
const registerRead: fc.Arbitrary<Step> = fc
  .constantFrom(
    REG.id, REG.version, REG.tpr, REG.apr, REG.ppr, REG.ldr, REG.dfr, REG.svr, REG.esr, REG.icrLow, REG.icrHigh,
    REG.lvtTimer, REG.lvtLint0, REG.lvtError, REG.initialCount, REG.currentCount, REG.currentCount, REG.divide,
    REG.isr + 0x10, REG.irr + 0x20, REG.tmr + 0x30, REG.isr + 0x70, REG.irr + 0x70, REG.tmr + 0x70,
  )
  .map((offset): Step => ({ op: "read", offset }));
const msrRead: fc.Arbitrary<Step> = fc.constantFrom<Step>({ op: "rdmsr", msr: MSR_APIC_BASE }, { op: "rdmsr", msr: MSR_TSC_DEADLINE });
const advance: fc.Arbitrary<Step> = fc
  .oneof({ weight: 4, arbitrary: fc.integer({ min: 1, max: 3000 }) }, { weight: 1, arbitrary: fc.integer({ min: 1, max: 2_000_000 }) })
  .map((ns) => ({ op: "advance", ns }));

export interface ApicActionOptions {
  /** Include divider and LVT timer changes that are not followed by a new initial count. */
  timerChangesWithoutCount?: boolean;
}

/** One guest action, as one or more steps. */
export function apicAction({ timerChangesWithoutCount = true }: ApicActionOptions = {}): fc.Arbitrary<Step[]> {
  return fc.oneof(
    { weight: 1, arbitrary: svr.map((s) => [s]) },
    { weight: 2, arbitrary: tpr.map((s) => [s]) },
    { weight: 1, arbitrary: destinationSetup },
    { weight: 4, arbitrary: icr },
    { weight: 4, arbitrary: interrupt },
    { weight: 3, arbitrary: inta.map((s) => [s]) },
    { weight: 3, arbitrary: eoi.map((s) => [s]) },
    { weight: 1, arbitrary: errors.map((s) => [s]) },
    { weight: 3, arbitrary: timerStart },
    { weight: 2, arbitrary: timerTouch.map((s) => [s]) },
    { weight: timerChangesWithoutCount ? 1 : 0, arbitrary: divideOnly.map((s) => [s]) },
    { weight: timerChangesWithoutCount ? 1 : 0, arbitrary: lvtOnly.map((s) => [s]) },
    { weight: 1, arbitrary: otherLvt.map((s) => [s]) },
    { weight: 3, arbitrary: ioProgram },
    { weight: 4, arbitrary: gsi.map((s) => [s]) },
    { weight: 1, arbitrary: ioOther.map((s) => [s]) },
    { weight: 3, arbitrary: registerRead.map((s) => [s]) },
    { weight: 1, arbitrary: msrRead.map((s) => [s]) },
    { weight: 4, arbitrary: advance.map((s) => [s]) },
  );
}

/** The usual start (software enable) most of the time, then random actions. */
export function apicScenario(maxActions = 40, options: ApicActionOptions = {}): fc.Arbitrary<Step[]> {
  return fc
    .tuple(fc.constantFrom(true, true, true, false), fc.array(apicAction(options), { maxLength: maxActions, size: "max" }))
    .map(([enable, actions]) => [...(enable ? [write(REG.svr, 0x1ff)] : []), ...actions.flat()]);
}

/** Board settings worth varying: QEMU mode and the two clocks. */
export const apicSettings = fc.record({
  compatQemu: fc.boolean(),
  apicBusHz: fc.constantFrom(1_000_000_000, 1_000_000_000, 2_000_000_000, 100_000_000, 25_000_000),
  tscHz: fc.constantFrom(1_000_000_000, 3_000_000_000, 2_500_000_000),
  policy: fc.constantFrom<"blmvisor" | "full">("blmvisor", "full"),
});

/** LVT LINT0 as drivers set it with a PIC behind it: ExtINT, or fixed edge- or level-triggered. */
const lint0Setup: fc.Arbitrary<Step> = fc
  .record({ mode: fc.constantFrom(0x700, 0x700, 0), level: fc.constantFrom(0, LEVEL), masked: fc.constantFrom(0, 0, 0, MASKED), vec: commonVector })
  .map(({ mode, level, masked, vec }) => write(REG.lvtLint0, mode | (mode === 0 ? level : 0) | masked | vec));

/**
 * A board whose PIC drives LINT0: the PC's PIC initialisation, the APIC enabled and LINT0 set up,
 * then APIC actions mixed with ISA line changes, acknowledges and PIC EOIs (`picLines`).
 */
export function lint0Scenario(picLines: fc.Arbitrary<Step[]>, maxActions = 40): fc.Arbitrary<Step[]> {
  const action = fc.oneof({ weight: 3, arbitrary: apicAction() }, { weight: 2, arbitrary: lint0Setup.map((s) => [s]) }, { weight: 4, arbitrary: picLines });
  return fc
    .tuple(lint0Setup, fc.array(action, { maxLength: maxActions, size: "max" }))
    .map(([lint0, actions]) => [write(REG.svr, 0x1ff), lint0, ...actions.flat()]);
}
