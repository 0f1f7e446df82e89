// The guest kernel's multiprocessor driver: how CPU 0 starts the other CPUs (INIT, then a
// start-up IPI each, as an OS boots its application processors), how each CPU programs its own
// local APIC (logical ID, timer) and the IPIs the CPUs send one another. Every access goes to the
// current CPU's local APIC through the machine's MMIO interface. docs/migration.md.

import type { Machine } from "../core/machine.js";
import { LAPIC, LAPIC_CURRENT_COUNT, LAPIC_EOI, LAPIC_ICR_HIGH, LAPIC_ICR_LOW, apicTimerCount, softwareEnableApic, startApicTimer } from "./drivers.js";

const LAPIC_LDR = LAPIC + 0xd0;
const ICR_LOWEST_PRIORITY = 1 << 8;
const ICR_INIT = 5 << 8;
const ICR_STARTUP = 6 << 8;
const ICR_LOGICAL = 1 << 11;
const ICR_ASSERT = 1 << 14;
const ICR_LEVEL = 1 << 15;
const ICR_ALL_EXCLUDING_SELF = 3 << 18;
const DESTINATION_SHIFT = 24;

/** CPUs 0..7 have a flat logical ID, one bit of the LDR each; the others have none. */
export const FLAT_LOGICAL_CPUS = 8;
/** Each CPU's own local APIC timer (CPU 0's too under the "apic" setup). */
export const CPU_TIMER_VECTOR = 0xef;
/** The fixed IPI, and the lowest-priority IPI to a logical set of CPUs. */
export const IPI_VECTOR = 0xe1;
export const LOWEST_PRIORITY_VECTOR = 0xe2;
/** An application processor starts at 0x9a000, a real-mode trampoline below 1 MiB. */
export const STARTUP_VECTOR = 0x9a;

/** Input clocks per period of CPU `cpu`'s timer: CPU k's runs (8 + k) / 8 times CPU 0's period. */
export function cpuTimerCount(machine: Machine, timerHz: number, cpu: number): number {
  return apicTimerCount(machine, timerHz, (8 + cpu) / 8);
}

/** CPU 0 sends INIT to every other CPU (assert, then de-assert): each waits for its start-up IPI. */
export function initOtherCpus(m: Machine): void {
  m.writel(LAPIC_ICR_LOW, ICR_ALL_EXCLUDING_SELF | ICR_LEVEL | ICR_ASSERT | ICR_INIT);
  m.writel(LAPIC_ICR_LOW, ICR_ALL_EXCLUDING_SELF | ICR_LEVEL | ICR_INIT);
}

/** CPU 0 sends CPU `cpu` its start-up IPI. */
export function startCpu(m: Machine, cpu: number): void {
  m.writel(LAPIC_ICR_HIGH, cpu << DESTINATION_SHIFT);
  m.writel(LAPIC_ICR_LOW, ICR_ASSERT | ICR_STARTUP | STARTUP_VECTOR);
}

/** The current CPU `cpu` enables its local APIC and takes its logical ID (if it has one). */
export function enableCpuApic(m: Machine, cpu: number): void {
  softwareEnableApic(m);
  if (cpu < FLAT_LOGICAL_CPUS) m.writel(LAPIC_LDR, 1 << (DESTINATION_SHIFT + cpu));
}

/** The current CPU starts its own periodic timer at `count` bus clocks per tick. */
export function startCpuTimer(m: Machine, count: number): void {
  startApicTimer(m, CPU_TIMER_VECTOR, count);
}

/** A fixed IPI from the current CPU to CPU `cpu` (physical destination). */
export function sendIpi(m: Machine, cpu: number): void {
  m.writel(LAPIC_ICR_HIGH, cpu << DESTINATION_SHIFT);
  m.writel(LAPIC_ICR_LOW, ICR_ASSERT | IPI_VECTOR);
}

/** A lowest-priority IPI from the current CPU to the flat logical set `mask` (bit k: CPU k). */
export function sendLowestPriorityIpi(m: Machine, mask: number): void {
  m.writel(LAPIC_ICR_HIGH, mask << DESTINATION_SHIFT);
  m.writel(LAPIC_ICR_LOW, ICR_ASSERT | ICR_LOGICAL | ICR_LOWEST_PRIORITY | LOWEST_PRIORITY_VECTOR);
}

export function endOfInterrupt(m: Machine): void {
  m.writel(LAPIC_EOI, 0);
}

/** The current CPU's timer count, which moves with time: what an IPI handler reads back. */
export function timerCurrentCount(m: Machine): number {
  return m.readl(LAPIC_CURRENT_COUNT);
}
