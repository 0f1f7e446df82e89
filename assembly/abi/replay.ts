// Replay of compiled trace records inside the core: the host copies a chunk of records into
// the scratch buffer and one call runs them all, stopping only where the host must act (a
// mismatch to report, a migration point, a mark). The record layout is the .btrace layout of
// src/trace/compiled.ts; a test checks the two agree.

import { hypervisor } from "./instance";
import { InterruptAnswer, RECORD_RULE_ROWS, RecordField, RecordRule, ReplayCounter, ReplayStop, RuleFlag, SipiState, TraceCheck, TraceOp } from "./codes";

let scratch = new StaticArray<u8>(0);
let stopReason: ReplayStop = ReplayStop.End;
let actualLow: u32 = 0;
let actualHigh: u32 = 0;
let reads: f64 = 0;
let checked: f64 = 0;
let interrupts: f64 = 0;
/** The rule table checkRecords applies: static memory the host fills once per instance. */
const RULES: usize = memory.data(RECORD_RULE_ROWS * RecordRule.Size * 4, 16);
/** The largest time a record may carry: 2^53 - 1 ns, exact as an f64 on both sides. */
const MAX_TIME: u64 = 0x1f_ffff_ffff_ffff;

/** Power-on: the counters start again (a reused instance keeps its scratch buffer). */
export function resetReplay(): void {
  stopReason = ReplayStop.End;
  actualLow = actualHigh = 0;
  reads = checked = interrupts = 0;
}

/** A buffer of at least `bytes` bytes for the host to fill with records. */
export function replayScratch(bytes: i32): usize {
  __collect(); // a buffer outgrown by an earlier call is freed here (see index.ts)
  if (scratch.length < bytes) scratch = new StaticArray<u8>(bytes);
  return changetype<usize>(scratch);
}

/** Counters since the machine started, and why and where the last call stopped (a ReplayCounter). */
export function replayStatus(which: ReplayCounter): f64 {
  switch (which) {
    case ReplayCounter.Reads:
      return reads;
    case ReplayCounter.Checked:
      return checked;
    case ReplayCounter.Interrupts:
      return interrupts;
    case ReplayCounter.StopReason:
      return <f64>stopReason;
    case ReplayCounter.ActualLow:
      return <f64>actualLow;
    default:
      return <f64>actualHigh;
  }
}

/**
 * Runs records `from` .. `to` - 1 of the scratch buffer. Returns the index of the record it
 * stopped after (its reason in replayStatus(ReplayCounter.StopReason)), or `to` at the end.
 */
export function replayRecords(from: i32, to: i32): i32 {
  const base = changetype<usize>(scratch);
  const hv = hypervisor;
  for (let i = from; i < to; i++) {
    const r = base + <usize>(i * RecordField.Size);
    hv.advanceTo(load<i64>(r, RecordField.Time));
    const op: TraceOp = load<u8>(r, RecordField.Op);
    const a = load<u32>(r, RecordField.A);
    const b = load<u32>(r, RecordField.B);
    let result: u64 = 0;
    // A CPU waiting for a start-up IPI executes nothing: its port, MMIO and MSR events are mismatches.
    if (!hv.board.cpuRunning && op <= TraceOp.Rdmsr) return stop(i, ReplayStop.CpuWaiting, 0);
    switch (op) {
      case TraceOp.Outb:
        hv.portOut(a, b, 1);
        continue;
      case TraceOp.Outw:
        hv.portOut(a, b, 2);
        continue;
      case TraceOp.Outl:
        hv.portOut(a, b, 4);
        continue;
      case TraceOp.Writel:
        hv.writel(a, b);
        continue;
      case TraceOp.Wrmsr:
        hv.wrmsr(a, (<u64>load<u32>(r, RecordField.High) << 32) | <u64>b);
        continue;
      case TraceOp.Irq:
        hv.board.setIsaLine(<i32>(a & 15), b != 0);
        continue;
      case TraceOp.Gsi:
        hv.board.setGsiLine(<i32>a, b != 0);
        continue;
      case TraceOp.Mark:
        return stop(i, ReplayStop.Mark, 0);
      case TraceOp.Migrate:
        return stop(i, ReplayStop.Migrate, 0);
      case TraceOp.Cpu:
        // The host checked every record against the board's CPUs; a bad one stops here too.
        if (<i32>a >= hv.board.cpuCount) return stop(i, ReplayStop.Mismatch, <u64>a);
        hv.selectCpu(<i32>a);
        continue;
      case TraceOp.Sipi: {
        const state = hv.board.sipiState(hv.board.cpu);
        const check: TraceCheck = load<u8>(r, RecordField.Check);
        if (check == TraceCheck.None) continue;
        checked += 1;
        const ok = check == TraceCheck.NoInterrupt ? state == SipiState.Waiting : state == <i32>load<u32>(r, RecordField.Value);
        if (!ok) return stop(i, ReplayStop.Mismatch, <u64>(<i64>state));
        continue;
      }
      case TraceOp.Inb:
        result = hv.portIn(a, 1);
        break;
      case TraceOp.Inw:
        result = hv.portIn(a, 2);
        break;
      case TraceOp.Inl:
        result = hv.portIn(a, 4);
        break;
      case TraceOp.Readl:
        result = hv.readl(a);
        break;
      case TraceOp.Rdmsr:
        result = hv.rdmsr(a);
        break;
      case TraceOp.Inta: {
        const vector = hv.inta();
        if (vector >= 0) interrupts += 1;
        const check: TraceCheck = load<u8>(r, RecordField.Check);
        if (check == TraceCheck.None) continue;
        checked += 1;
        let ok: bool;
        if (check == TraceCheck.NoInterrupt) ok = vector < 0;
        else if (check == TraceCheck.Nmi) ok = vector == InterruptAnswer.Nmi;
        else ok = vector == <i32>load<u32>(r, RecordField.Value);
        if (!ok) return stop(i, ReplayStop.Mismatch, <u64>(<i64>vector));
        continue;
      }
      default:
        continue;
    }
    reads += 1;
    if (load<u8>(r, RecordField.Check) != TraceCheck.Value) continue;
    checked += 1;
    const expected = (<u64>load<u32>(r, RecordField.High) << 32) | <u64>load<u32>(r, RecordField.Value);
    const mask = (<u64>load<u32>(r, RecordField.MaskHigh) << 32) | <u64>load<u32>(r, RecordField.Mask);
    if (((result ^ expected) & mask) != 0) return stop(i, ReplayStop.Mismatch, result);
  }
  stopReason = ReplayStop.End;
  return to;
}

/** Where the host writes the rule table (RecordRule rows, one per op code). */
export function recordRules(): usize {
  return RULES;
}

/**
 * Checks records 0 .. `count` - 1 of the scratch buffer against the rule table: known op, a
 * check the op allows, reserved bytes 0, operands within their limits (a label index below
 * `labelCount`, a CPU below `cpus`), expectations within the op's width and unused fields 0,
 * times non-decreasing from `lastTime` and below 2^53. Returns the index of the first record
 * that fails (the host words the reason), or `count`.
 */
export function checkRecords(count: i32, labelCount: u32, cpus: u32, lastTime: f64): i32 {
  const base = changetype<usize>(scratch);
  let last = <u64>lastTime;
  for (let i = 0; i < count; i++) {
    const r = base + <usize>(i * RecordField.Size);
    const op = <u32>load<u8>(r, RecordField.Op);
    const check = <u32>load<u8>(r, RecordField.Check);
    if (op >= <u32>RECORD_RULE_ROWS || check >= <u32>RuleFlag.CheckBits) return i;
    const rule = RULES + <usize>(op * RecordRule.Size * 4);
    const flags = load<u32>(rule, RecordRule.Flags * 4);
    if (((flags >>> check) & 1) == 0 || load<u16>(r, RecordField.Reserved) != 0) return i;
    const a = <u64>load<u32>(r, RecordField.A);
    const aLimit: u64 = flags & RuleFlag.ALabel ? <u64>labelCount : flags & RuleFlag.ACpu ? <u64>cpus : <u64>load<u32>(rule, RecordRule.AMax * 4) + 1;
    if (a >= aLimit || load<u32>(r, RecordField.B) > load<u32>(rule, RecordRule.BMax * 4)) return i;
    const time = load<u64>(r, RecordField.Time);
    if (time < last || time > MAX_TIME) return i;
    last = time;
    const high = load<u32>(r, RecordField.High);
    const value = load<u32>(r, RecordField.Value);
    const mask = load<u32>(r, RecordField.Mask);
    const maskHigh = load<u32>(r, RecordField.MaskHigh);
    if (check == TraceCheck.Value) {
      const width = load<u32>(rule, RecordRule.Width * 4);
      if (value > width || mask > width) return i;
      if ((high | maskHigh) != 0 && (flags & RuleFlag.HighExpected) == 0) return i;
    } else {
      if ((value | mask | maskHigh) != 0) return i;
      if (high != 0 && (flags & RuleFlag.HighOperand) == 0) return i;
    }
  }
  return count;
}

/**
 * Reads every field of records `from` .. `to` - 1 and executes none: the floor a replay of the
 * same records cannot go below (a benchmark's baseline). Returns a checksum of what it read.
 */
export function decodeRecords(from: i32, to: i32): f64 {
  const base = changetype<usize>(scratch);
  let sum: u64 = 0;
  for (let i = from; i < to; i++) {
    const r = base + <usize>(i * RecordField.Size);
    sum += load<u64>(r, RecordField.Time) ^ <u64>load<u8>(r, RecordField.Op) ^ <u64>load<u8>(r, RecordField.Check);
    sum += <u64>(load<u32>(r, RecordField.A) ^ load<u32>(r, RecordField.B) ^ load<u32>(r, RecordField.High));
    sum += <u64>(load<u32>(r, RecordField.Value) ^ load<u32>(r, RecordField.Mask) ^ load<u32>(r, RecordField.MaskHigh));
  }
  return <f64>(sum & 0xfffffffffffff);
}

function stop(i: i32, reason: ReplayStop, actual: u64): i32 {
  stopReason = reason;
  actualLow = <u32>actual;
  actualHigh = <u32>(actual >>> 32);
  return i;
}
