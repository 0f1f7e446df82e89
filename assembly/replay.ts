// Replay of compiled trace records inside the core: the host copies a chunk of records into
// the scratch buffer and one call runs them all, stopping only where the host must act (a
// mismatch to report, a migration point, a mark). The record layout is the .btrace layout of
// src/trace/compiled.ts; a test checks the two agree.

import { hypervisor } from "./machine";

export const RECORD_SIZE: i32 = 40;
const AT_OP: i32 = 0;
const AT_CHECK: i32 = 1;
const AT_A: i32 = 8;
const AT_B: i32 = 12;
const AT_HIGH: i32 = 16;
const AT_VALUE: i32 = 20;
const AT_MASK: i32 = 24;
const AT_MASK_HIGH: i32 = 28;
const AT_TIME: i32 = 32;

export const OP_OUTB: u8 = 1;
export const OP_OUTW: u8 = 2;
export const OP_OUTL: u8 = 3;
export const OP_INB: u8 = 4;
export const OP_INW: u8 = 5;
export const OP_INL: u8 = 6;
export const OP_WRITEL: u8 = 7;
export const OP_READL: u8 = 8;
export const OP_WRMSR: u8 = 9;
export const OP_RDMSR: u8 = 10;
export const OP_IRQ: u8 = 11;
export const OP_GSI: u8 = 12;
export const OP_INTA: u8 = 13;
export const OP_MARK: u8 = 14;
export const OP_MIGRATE: u8 = 15;

const CHECK_VALUE: u8 = 1;
const CHECK_NO_INTERRUPT: u8 = 2;

/** Why replayRecords() returned. */
export const STOP_END: i32 = 0;
export const STOP_MISMATCH: i32 = 1;
export const STOP_MIGRATE: i32 = 2;
export const STOP_MARK: i32 = 3;

let scratch = new StaticArray<u8>(0);
let stopReason: i32 = STOP_END;
let actualLow: u32 = 0;
let actualHigh: u32 = 0;
let reads: f64 = 0;
let checked: f64 = 0;
let interrupts: f64 = 0;

/** Power-on: the counters start again (a reused instance keeps its scratch buffer). */
export function resetReplay(): void {
  stopReason = STOP_END;
  actualLow = actualHigh = 0;
  reads = checked = interrupts = 0;
}

/** A buffer of at least `bytes` bytes for the host to fill with records. */
export function replayScratch(bytes: i32): usize {
  __collect(); // a buffer outgrown by an earlier call is freed here (see index.ts)
  if (scratch.length < bytes) scratch = new StaticArray<u8>(bytes);
  return changetype<usize>(scratch);
}

/** Counters since the machine started: 0 reads, 1 checked, 2 interrupts; 3 stop reason, 4/5 actual value of the stopping record. */
export function replayStatus(which: i32): f64 {
  switch (which) {
    case 0:
      return reads;
    case 1:
      return checked;
    case 2:
      return interrupts;
    case 3:
      return <f64>stopReason;
    case 4:
      return <f64>actualLow;
    default:
      return <f64>actualHigh;
  }
}

/**
 * Runs records `from` .. `to` - 1 of the scratch buffer. Returns the index of the record it
 * stopped after (its reason in replayStatus(3)), or `to` at the end.
 */
export function replayRecords(from: i32, to: i32): i32 {
  const base = changetype<usize>(scratch);
  const hv = hypervisor;
  for (let i = from; i < to; i++) {
    const r = base + <usize>(i * RECORD_SIZE);
    hv.advanceTo(load<i64>(r, AT_TIME));
    const op = load<u8>(r, AT_OP);
    const a = load<u32>(r, AT_A);
    const b = load<u32>(r, AT_B);
    let result: u64 = 0;
    switch (op) {
      case OP_OUTB:
        hv.portOut(a, b, 1);
        continue;
      case OP_OUTW:
        hv.portOut(a, b, 2);
        continue;
      case OP_OUTL:
        hv.portOut(a, b, 4);
        continue;
      case OP_WRITEL:
        hv.writel(a, b);
        continue;
      case OP_WRMSR:
        hv.wrmsr(a, (<u64>load<u32>(r, AT_HIGH) << 32) | <u64>b);
        continue;
      case OP_IRQ:
        hv.board.setIsaLine(<i32>(a & 15), b != 0);
        continue;
      case OP_GSI:
        hv.board.setGsiLine(<i32>a, b != 0);
        continue;
      case OP_MARK:
        return stop(i, STOP_MARK, 0);
      case OP_MIGRATE:
        return stop(i, STOP_MIGRATE, 0);
      case OP_INB:
        result = hv.portIn(a, 1);
        break;
      case OP_INW:
        result = hv.portIn(a, 2);
        break;
      case OP_INL:
        result = hv.portIn(a, 4);
        break;
      case OP_READL:
        result = hv.readl(a);
        break;
      case OP_RDMSR:
        result = hv.rdmsr(a);
        break;
      case OP_INTA: {
        const vector = hv.inta();
        if (vector >= 0) interrupts += 1;
        const check = load<u8>(r, AT_CHECK);
        if (check == 0) continue;
        checked += 1;
        const ok = check == CHECK_NO_INTERRUPT ? vector < 0 : vector == <i32>load<u32>(r, AT_VALUE);
        if (!ok) return stop(i, STOP_MISMATCH, <u64>(<i64>vector));
        continue;
      }
      default:
        continue;
    }
    reads += 1;
    if (load<u8>(r, AT_CHECK) != CHECK_VALUE) continue;
    checked += 1;
    const expected = (<u64>load<u32>(r, AT_HIGH) << 32) | <u64>load<u32>(r, AT_VALUE);
    const mask = (<u64>load<u32>(r, AT_MASK_HIGH) << 32) | <u64>load<u32>(r, AT_MASK);
    if (((result ^ expected) & mask) != 0) return stop(i, STOP_MISMATCH, result);
  }
  stopReason = STOP_END;
  return to;
}

/**
 * Reads every field of records `from` .. `to` - 1 and executes none: the floor a replay of the
 * same records cannot go below (a benchmark's baseline). Returns a checksum of what it read.
 */
export function decodeRecords(from: i32, to: i32): f64 {
  const base = changetype<usize>(scratch);
  let sum: u64 = 0;
  for (let i = from; i < to; i++) {
    const r = base + <usize>(i * RECORD_SIZE);
    sum += load<u64>(r, AT_TIME) ^ <u64>load<u8>(r, AT_OP) ^ <u64>load<u8>(r, AT_CHECK);
    sum += <u64>(load<u32>(r, AT_A) ^ load<u32>(r, AT_B) ^ load<u32>(r, AT_HIGH));
    sum += <u64>(load<u32>(r, AT_VALUE) ^ load<u32>(r, AT_MASK) ^ load<u32>(r, AT_MASK_HIGH));
  }
  return <f64>(sum & 0xfffffffffffff);
}

function stop(i: i32, reason: i32, actual: u64): i32 {
  stopReason = reason;
  actualLow = <u32>actual;
  actualHigh = <u32>(actual >>> 32);
  return i;
}
