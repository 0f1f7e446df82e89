// The xAPIC register map and timer arithmetic as the SDM (vol. 3, ch. 10) defines them. Both
// the local APIC device and the hypervisor's capture and reconstruction code speak this
// interface, so it lives outside the device: knowing the architecture is not knowing the
// device's internals.

import { edgeTime, edgesAt } from "../common/clock";
import { LAPIC_VERSION } from "../common/hardware";

export const MSR_APIC_BASE: u32 = 0x1b;
export const MSR_TSC_DEADLINE: u32 = 0x6e0;

// IA32_APIC_BASE fields.
export const APIC_BASE_BSP: u64 = 1 << 8;
export const APIC_BASE_ENABLE: u64 = 1 << 11;
/** x2APIC mode (EXTD); valid only together with the global enable. */
export const APIC_BASE_X2APIC: u64 = 1 << 10;
export const APIC_BASE_ADDRESS: u64 = 0xfffff000;
export const APIC_DEFAULT_PAGE: u32 = 0xfee00000;
export const APIC_BASE_RESET: u64 = <u64>APIC_DEFAULT_PAGE | APIC_BASE_ENABLE | APIC_BASE_BSP;
/** An application processor's IA32_APIC_BASE at reset: no BSP flag. */
export const APIC_BASE_RESET_AP: u64 = <u64>APIC_DEFAULT_PAGE | APIC_BASE_ENABLE;

/** IA32_APIC_BASE at reset on CPU `cpu` (CPU 0 is the bootstrap processor). */
export function apicBaseAtReset(cpu: i32): u64 {
  return cpu == 0 ? APIC_BASE_RESET : APIC_BASE_RESET_AP;
}

// x2APIC: register offset/16 is MSR 0x800 + offset/16.
export const MSR_X2APIC_FIRST: u32 = 0x800;
export const MSR_X2APIC_LAST: u32 = 0x8ff;
/** x2APIC register indexes (MSR − 0x800) with no xAPIC counterpart or a different form. */
export const X2APIC_ICR: u32 = 0x30;
export const X2APIC_SELF_IPI: u32 = 0x3f;
/** The x2APIC physical and logical broadcast destination. */
export const X2APIC_BROADCAST: u32 = 0xffff_ffff;
/** The xAPIC broadcast destination (ICR bits 63:56, I/O APIC entry bits 63:56). */
export const XAPIC_BROADCAST: u32 = 0xff;

@inline
export function isX2ApicMsr(msr: u32): bool {
  return msr >= MSR_X2APIC_FIRST && msr <= MSR_X2APIC_LAST;
}

/** SDM 10.12.10.2: the x2APIC logical ID, derived from the x2APIC ID (cluster, bit in cluster). */
export function x2ApicLogicalId(id: u32): u32 {
  return ((id >>> 4) << 16) | (<u32>1 << (id & 0xf));
}

// Register offsets within the 4 KiB page. Registers sit on 16-byte boundaries; the index
// (offset >> 4) names a register.
export const REG_ID: u32 = 0x020;
export const REG_TPR: u32 = 0x080;
export const REG_PPR: u32 = 0x0a0;
export const REG_EOI: u32 = 0x0b0;
export const REG_LDR: u32 = 0x0d0;
export const REG_DFR: u32 = 0x0e0;
export const REG_SVR: u32 = 0x0f0;
export const REG_ISR: u32 = 0x100;
export const REG_TMR: u32 = 0x180;
export const REG_IRR: u32 = 0x200;
export const REG_ESR: u32 = 0x280;
export const REG_ICR_LOW: u32 = 0x300;
export const REG_ICR_HIGH: u32 = 0x310;
export const REG_LVT_FIRST: u32 = 0x320;
export const REG_INITIAL_COUNT: u32 = 0x380;
export const REG_CURRENT_COUNT: u32 = 0x390;
export const REG_DIVIDE: u32 = 0x3e0;
/** A register that does not exist on this xAPIC: any access to it is an illegal address. */
export const REG_UNIMPLEMENTED: u32 = 0x010;

/** LVT entries in register order (0x320 + 0x10·i): timer, thermal, perf, LINT0, LINT1, error. */
export const LVT_TIMER: i32 = 0;
export const LVT_LINT0: i32 = 3;
export const LVT_LINT1: i32 = 4;
export const LVT_ERROR: i32 = 5;
export const LVT_COUNT: i32 = 6;

export const APIC_VERSION: u32 = LAPIC_VERSION;

export const SVR_ENABLE: u32 = 1 << 8;

// Fields shared by LVT entries and the ICR.
export const VECTOR_MASK: u32 = 0xff;
export const MODE_SHIFT: u32 = 8;
export const LVT_ACTIVE_LOW: u32 = 1 << 13;
export const LVT_REMOTE_IRR: u32 = 1 << 14;
export const LVT_LEVEL: u32 = 1 << 15;
export const LVT_MASKED: u32 = 1 << 16;
export const TIMER_MODE_SHIFT: u32 = 17;

export const enum TimerMode {
  OneShot = 0,
  Periodic = 1,
  TscDeadline = 2,
}

/** Timer mode of an LVT timer value; QEMU 7.2 knows only bit 17 (periodic). */
export function timerModeOf(lvt: u32, compatQemu: bool): TimerMode {
  const bits = (lvt >>> TIMER_MODE_SHIFT) & 3;
  if (compatQemu) return (bits & 1) != 0 ? TimerMode.Periodic : TimerMode.OneShot;
  // Mode 3 is reserved; it counts like one-shot.
  return bits == 2 ? TimerMode.TscDeadline : bits == 1 ? TimerMode.Periodic : TimerMode.OneShot;
}

// ICR low fields beyond the shared ones.
export const ICR_LOGICAL: u32 = 1 << 11;
export const ICR_ASSERT: u32 = 1 << 14;
export const ICR_LEVEL: u32 = 1 << 15;
export const ICR_SHORTHAND_SHIFT: u32 = 18;
export const enum Shorthand {
  None = 0,
  Self = 1,
  AllIncludingSelf = 2,
  AllExcludingSelf = 3,
}

// ESR bits this model can raise.
export const ESR_SEND_ILLEGAL_VECTOR: u32 = 1 << 5;
export const ESR_RECEIVE_ILLEGAL_VECTOR: u32 = 1 << 6;
export const ESR_ILLEGAL_REGISTER: u32 = 1 << 7;

/** Vectors 0–15 are reserved for exceptions: a fixed interrupt cannot carry one. */
export const FIRST_LEGAL_VECTOR: u32 = 16;

/** Divide configuration (bits 0, 1, 3) to divisor: 0→2, 1→4, 2→8, 3→16, 8→32, 9→64, 10→128, 11→1. */
/** The divide configuration that counts every bus clock. */
export const DIVIDE_BY_1: u32 = 0xb;

export function divisorOf(divideConfig: u32): i64 {
  const code = (divideConfig & 3) | ((divideConfig >>> 1) & 4);
  return <i64>1 << <i64>((code + 1) & 7);
}

/** Whole divided-clock periods of the timer between `from` and `to` (spec "Clocks"). */
export function timerTicksBetween(from: i64, to: i64, divisor: i64, busHz: i64): i64 {
  return edgesAt(to - from, busHz) / divisor;
}

/** The time at which `ticks` divided-clock periods have passed since `from`. */
export function timerTickTime(from: i64, ticks: i64, divisor: i64, busHz: i64): i64 {
  return from + edgeTime(ticks * divisor, busHz);
}

/**
 * Divided-clock periods from loading a count until the timer expires: the datasheet counter
 * expires as it reaches 0; QEMU's spends one more period at 0 first.
 */
export function ticksToExpiry(count: i64, compatQemu: bool): i64 {
  return compatQemu ? count + 1 : count;
}
