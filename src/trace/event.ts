// The in-memory form of a blmv-trace (format version 1): one header and a stream of events.
//
// An event is a flat record of numbers (plus a label string that is "" except on `mark`), so
// that every event has the same shape and a replayer can process tens of millions of them
// without allocating per expectation. Operands are unsigned 32-bit integers held in JS numbers.
// The only 64-bit quantities, the MSR value of `wrmsr` and the expected value and mask of
// `rdmsr`, are split into low and high 32-bit halves (`b`/`bHi`, `value`/`valueHi`,
// `mask`/`maskHi`); `msrValue()` and `msrExpectation()` join them into bigints.

import { TraceOp as Op, TraceCheck as Check } from "../../assembly/abi/codes.js";

/** Operation codes and expectation kinds: the same numbers are the bytes of a compiled (.btrace) record. */
export { Op, Check };

/** The op's spelling in a trace file, indexed by op code. */
export const OP_NAMES: readonly string[] = [
  "",
  "outb",
  "outw",
  "outl",
  "inb",
  "inw",
  "inl",
  "writel",
  "readl",
  "wrmsr",
  "rdmsr",
  "irq",
  "gsi",
  "inta",
  "mark",
  "migrate",
  "cpu",
  "sipi",
];

export interface TraceEvent {
  /** Virtual ns since machine reset, an integer in 0 .. 2^53 − 1 (always absolute here). */
  time: number;
  op: Op;
  /** First operand: port, MMIO address, MSR number, ISA line, I/O APIC pin or CPU number; 0 if none. */
  a: number;
  /** Second operand: value written (low 32 bits for wrmsr) or line level 0/1; 0 if none. */
  b: number;
  /** wrmsr only: bits 63..32 of the value written; 0 otherwise. */
  bHi: number;
  check: Check;
  /** Check.Value: expected result (low 32 bits for rdmsr); 0 otherwise. */
  value: number;
  /** Check.Value: bits compared (low 32 bits for rdmsr); the operand's full width when the trace gives no `/M`. */
  mask: number;
  /** rdmsr with Check.Value: bits 63..32 of the expected value; 0 otherwise. */
  valueHi: number;
  /** rdmsr with Check.Value: bits 63..32 of the mask; 0 otherwise. */
  maskHi: number;
  /** mark only: the label; "" otherwise. */
  label: string;
  /** 1-based line of the event in its source text (0 for events that never came from text). */
  line: number;
}

export interface MachineDevices {
  pic: boolean;
  pit: boolean;
  lapic: boolean;
  ioapic: boolean;
}

export interface TraceHeader {
  machine: MachineDevices;
  apicBusHz: number;
  tscHz: number;
  /** `!wire pit-irq0`: PIT OUT0 drives ISA line 0. */
  pitIrq0: boolean;
  /** `!source`, if given. */
  source?: string;
  /** `!compat qemu`. */
  compatQemu: boolean;
  /** `!cpus N`: CPUs on the board, 1..64. */
  cpus: number;
}

/** The header a trace has when it gives no directives. */
export function defaultHeader(): TraceHeader {
  return {
    machine: { pic: true, pit: true, lapic: true, ioapic: true },
    apicBusHz: 1_000_000_000,
    tscHz: 1_000_000_000,
    pitIrq0: true,
    compatQemu: false,
    cpus: 1,
  };
}

/** Largest value of the data an op reads or writes (its value operand or expected result). */
export function valueWidthMask(op: Op): number {
  switch (op) {
    case Op.Outb:
    case Op.Inb:
    case Op.Inta:
    case Op.Sipi:
      return 0xff;
    case Op.Outw:
    case Op.Inw:
      return 0xffff;
    default:
      return 0xffffffff;
  }
}

/** Ops whose result a trace may check with `= V`. */
export function isCheckable(op: Op): boolean {
  return op === Op.Inb || op === Op.Inw || op === Op.Inl || op === Op.Readl || op === Op.Rdmsr || op === Op.Inta || op === Op.Sipi;
}

/** Ops a CPU performs by executing an instruction: a CPU waiting for a start-up IPI performs none. */
export function isCpuAccess(op: Op): boolean {
  return op >= Op.Outb && op <= Op.Rdmsr;
}

/**
 * An event with every field present: `fields` gives op and time and whatever else it needs;
 * the rest are 0, Check.None or "". Handy for importers and tests.
 */
export function makeEvent(fields: Partial<TraceEvent> & { op: Op; time: number }): TraceEvent {
  return {
    time: fields.time,
    op: fields.op,
    a: fields.a ?? 0,
    b: fields.b ?? 0,
    bHi: fields.bHi ?? 0,
    check: fields.check ?? Check.None,
    value: fields.value ?? 0,
    mask: fields.mask ?? 0,
    valueHi: fields.valueHi ?? 0,
    maskHi: fields.maskHi ?? 0,
    label: fields.label ?? "",
    line: fields.line ?? 0,
  };
}

const TWO_32 = 0x1_0000_0000n;

/** The 64-bit value a wrmsr event writes. */
export function msrValue(e: TraceEvent): bigint {
  return (BigInt(e.bHi) << 32n) | BigInt(e.b);
}

/** The expected 64-bit value and mask of an rdmsr event with Check.Value. */
export function msrExpectation(e: TraceEvent): { value: bigint; mask: bigint } {
  return {
    value: (BigInt(e.valueHi) << 32n) | BigInt(e.value),
    mask: (BigInt(e.maskHi) << 32n) | BigInt(e.mask),
  };
}

/** Splits a 64-bit unsigned bigint into [low, high] 32-bit halves. */
export function splitU64(v: bigint): [number, number] {
  return [Number(v % TWO_32), Number(v / TWO_32)];
}

/** Whether two events are the same, ignoring where they came from (`line`). */
export function sameEvent(x: TraceEvent, y: TraceEvent): boolean {
  return (
    x.time === y.time &&
    x.op === y.op &&
    x.a === y.a &&
    x.b === y.b &&
    x.bHi === y.bHi &&
    x.check === y.check &&
    x.value === y.value &&
    x.mask === y.mask &&
    x.valueHi === y.valueHi &&
    x.maskHi === y.maskHi &&
    x.label === y.label
  );
}

export function sameHeader(x: TraceHeader, y: TraceHeader): boolean {
  const m = x.machine;
  const n = y.machine;
  return (
    m.pic === n.pic &&
    m.pit === n.pit &&
    m.lapic === n.lapic &&
    m.ioapic === n.ioapic &&
    x.apicBusHz === y.apicBusHz &&
    x.tscHz === y.tscHz &&
    x.pitIrq0 === y.pitIrq0 &&
    x.source === y.source &&
    x.compatQemu === y.compatQemu &&
    x.cpus === y.cpus
  );
}
