// Where the guest finds the local APIC and the I/O APIC, their register offsets and bits, and
// the accesses a guest makes to them (through the local APIC page wherever the guest moved it).

import type { Machine } from "../../src/core/machine.js";

export const LAPIC = 0xfee00000;
export const IOREGSEL = 0xfec00000;
export const IOWIN = 0xfec00010;
export const IOAPIC_EOI = 0xfec00040;
export const MSR_APIC_BASE = 0x1b;
export const MSR_TSC_DEADLINE = 0x6e0;

export const REG = {
  id: 0x20, version: 0x30, tpr: 0x80, apr: 0x90, ppr: 0xa0, eoi: 0xb0, ldr: 0xd0, dfr: 0xe0, svr: 0xf0,
  isr: 0x100, tmr: 0x180, irr: 0x200, esr: 0x280, icrLow: 0x300, icrHigh: 0x310,
  lvtTimer: 0x320, lvtThermal: 0x330, lvtPerf: 0x340, lvtLint0: 0x350, lvtLint1: 0x360, lvtError: 0x370,
  initialCount: 0x380, currentCount: 0x390, divide: 0x3e0, unimplemented: 0x010,
} as const;

export const MASKED = 1 << 16;
export const LEVEL = 1 << 15;
export const PERIODIC = 1 << 17;
export const TSC_DEADLINE = 2 << 17;
/** ICR destination shorthands. */
export const SELF = 1 << 18;
export const ALL_INCLUDING_SELF = 2 << 18;
export const ALL_EXCLUDING_SELF = 3 << 18;

/** Where the guest finds the local APIC page now (QEMU never moves it). */
export function lapicPage(m: Machine): number {
  if (m.config.compatQemu) return LAPIC;
  return Number(m.rdmsr(MSR_APIC_BASE) & 0xfffff000n);
}

export const readReg = (m: Machine, offset: number) => m.readl(lapicPage(m) + offset) >>> 0;
export const writeReg = (m: Machine, offset: number, value: number) => m.writel(lapicPage(m) + offset, value >>> 0);

export function ioRead(m: Machine, reg: number): number {
  m.writel(IOREGSEL, reg);
  return m.readl(IOWIN) >>> 0;
}

export function ioWrite(m: Machine, reg: number, value: number): void {
  m.writel(IOREGSEL, reg);
  m.writel(IOWIN, value >>> 0);
}

/** Programs redirection entry `pin`: destination first, so an unmasking low word comes last. */
export function ioEntry(m: Machine, pin: number, low: number, dest = 0): void {
  ioWrite(m, 0x11 + 2 * pin, dest << 24);
  ioWrite(m, 0x10 + 2 * pin, low);
}
