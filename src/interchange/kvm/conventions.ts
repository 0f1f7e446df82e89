// KVM's conventions where they are not the hardware's: a PIT channel stores no counting element,
// only the count and count_load_time, from which the count and OUT are computed from the ticks
// elapsed (arch/x86/kvm/i8254.c, the same as QEMU's i8254); the flip-flops as RW states; the
// fixed PC wiring the PIC struct assumes; derived APIC registers. docs/interchange.md.

import { PIT_HZ } from "../../../assembly/common/hardware.js";

const NS_PER_S = 1_000_000_000n;
const HZ = BigInt(PIT_HZ);

/** Whole PIT ticks in `ns` nanoseconds: floor(ns · f / 1e9), as KVM's mul_u64_u32_div. */
export function ticksIn(ns: bigint): bigint {
  return ns <= 0n ? 0n : (ns * HZ) / NS_PER_S;
}

/** The fewest nanoseconds in which `ticks` ticks elapse: the inverse of ticksIn. */
export function nsForTicks(ticks: bigint): bigint {
  return ticks <= 0n ? 0n : (ticks * NS_PER_S + HZ - 1n) / HZ;
}

/** The mode KVM gives every channel at reset, before any control word: no count runs. */
export const KVM_PIT_MODE_RESET = 0xff;

/** Modes 6 and 7 are the 82C54's other encodings of modes 2 and 3 (M2 is "don't care"). */
function datasheetMode(mode: number): number {
  return mode > 5 ? mode - 4 : mode;
}

/**
 * The counting element's 16 bits after `d` ticks of a count `count` (1 .. 0x10000), KVM's
 * pit_get_count (a full count of 0x10000 reads 0). KVM counts modes 6 and 7 as mode 2; with
 * `datasheet` they are the 82C54's modes 2 and 3.
 */
export function countAfter(mode: number, count: number, d: bigint, datasheet: boolean): number {
  const n = BigInt(count);
  switch (datasheet ? datasheetMode(mode) : mode) {
    case 0:
    case 1:
    case 4:
    case 5:
      return Number((n - d) & 0xffffn);
    case 3:
      return Number((n - ((2n * d) % n)) & 0xffffn);
    default:
      return Number((n - (d % n)) & 0xffffn);
  }
}

/**
 * OUT after `d` ticks, KVM's pit_get_out; KVM drives OUT in modes 6 and 7 as in mode 0. With
 * `datasheet`: in mode 2 KVM's OUT is high only on the tick that reloads, where the 82C54's is
 * high except on the one clock before it, and modes 6 and 7 are modes 2 and 3.
 */
export function outAfter(mode: number, count: number, d: bigint, datasheet: boolean): boolean {
  const n = BigInt(count);
  switch (datasheet ? datasheetMode(mode) : mode) {
    case 1:
      return d < n;
    case 2:
      return datasheet ? n - (d % n) !== 1n : d % n === 0n && d !== 0n;
    case 3:
      return d % n < (n + 1n) >> 1n;
    case 4:
    case 5:
      return d === n;
    default:
      return d >= n;
  }
}

/** The bytes of the counting element a read-back shows in RW mode `rwMode` (LSB, MSB or both). */
export function readableBytes(rwMode: number): number {
  return rwMode === 1 ? 0x00ff : rwMode === 2 ? 0xff00 : 0xffff;
}

/** The ticks since the load that give `value` (in the bytes `mask` selects) and `out` for a count `count`. */
export interface CounterReading {
  mode: number;
  count: number;
  value: number;
  mask: number;
  out: boolean;
  datasheet: boolean;
}

function gives(r: CounterReading, d: bigint): boolean {
  return (countAfter(r.mode, r.count, d, r.datasheet) & r.mask) === r.value && outAfter(r.mode, r.count, d, r.datasheet) === r.out;
}

/**
 * The ticks since the load that give the reading: `preferred` if it does, else the fewest, or
 * undefined when none does (an inverse of countAfter and outAfter). Within two periods of the
 * count every state recurs (modes 0, 1, 4 and 5 wrap every 2^16 ticks), so only those are tried.
 */
export function ticksFor(r: CounterReading, preferred?: bigint): bigint | undefined {
  if (preferred !== undefined && gives(r, preferred)) return preferred;
  const m = r.datasheet ? datasheetMode(r.mode) : r.mode;
  const n = r.count;
  // The counting element's values the shown bytes allow: one, or 256 when one byte is hidden.
  const hidden = 0xffff & ~r.mask;
  const step = hidden === 0 ? 1 : hidden === 0xff00 ? 0x100 : 1;
  let best: bigint | undefined;
  for (let extra = 0; extra <= hidden; extra += step) {
    for (const d of candidates(m, n, r.value | extra)) {
      const t = BigInt(d);
      if ((best === undefined || t < best) && gives(r, t)) best = t;
    }
  }
  return best;
}

/** Tick counts that may give the counting element `value` in (effective) mode `m` with count `n`. */
function candidates(m: number, n: number, value: number): number[] {
  if (m === 2 || m === 6 || m === 7) {
    const r = (n - value + n) % n;
    return [r, r + n];
  }
  if (m === 3) {
    // 2d ≡ n − value (mod n): one residue for an odd count, two half a period apart for an even one.
    const t = (((n - value) % n) + n) % n;
    if (n % 2 === 1) {
      const r = (t * ((n + 1) / 2)) % n;
      return [r, r + n];
    }
    return t % 2 === 1 ? [] : [t / 2, t / 2 + n / 2, t / 2 + n, t / 2 + (3 * n) / 2];
  }
  const first = (n - value) & 0xffff;
  return [first, first + 0x10000];
}

// ---- the register bits both directions read and write (the PC's, as the devices' own files name them) ----

export const ICW1_IC4 = 0x01;
export const ICW1_INIT = 0x10;
export const ICW4_X86 = 0x01;
export const ICW4_AEOI = 0x02;
export const ICW4_SFNM = 0x10;
export const PIT_STATUS_OUT = 0x80;
export const PORT61_GATE2 = 0x01;
export const PORT61_SPEAKER = 0x02;
export const PORT61_REFRESH = 0x10;
export const PORT61_OUT2 = 0x20;
export const IOAPIC_BASE = 0xfec00000n;
export const LVT_MASKED = 0x10000;
export const IOAPIC_ENTRY_MASKED = 0x10000;
export const APIC_BASE_X2APIC = 0x400n;
export const APIC_BASE_ENABLE = 0x800n;

/** The ELCR bits that exist on a PC (PIIX), as KVM's elcr_mask and the model's chips have them. */
export const ELCR_MASK = { master: 0xf8, slave: 0xde } as const;

export const RW_WORD = 3;
/** KVM's read/write state for the second byte of a word (RW_STATE_WORD1); the first is RW_STATE_WORD0 = 3. */
export const RW_STATE_WORD1 = 4;

/** KVM's read or write state from the RW mode and the flip-flop (true: the MSB of a word is next). */
export function flipFlopState(rwMode: number, msbNext: number): number {
  return rwMode === RW_WORD && msbNext ? RW_STATE_WORD1 : rwMode;
}

/** The highest vector set in a 256-bit register, or 0. */
export function highestVector(words: readonly number[]): number {
  for (let w = 7; w >= 0; w--) if (words[w]) return w * 32 + 31 - Math.clz32(words[w]);
  return 0;
}

/** PPR from TPR and the highest in-service vector (SDM 10.8.3.1). */
export function processorPriority(tpr: number, isr: readonly number[]): number {
  const isrv = highestVector(isr);
  return (tpr & 0xf0) >= (isrv & 0xf0) ? tpr : isrv & 0xf0;
}

/** The x2APIC logical ID: cluster in bits 31..16, one bit of the low 16 for the member (SDM 10.12.10.2). */
export function x2apicLogicalId(id: number): number {
  return (((id >>> 4) << 16) | (1 << (id & 0xf))) >>> 0;
}
