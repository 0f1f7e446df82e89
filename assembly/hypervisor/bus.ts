// The hardware interface: the only door capture and reconstruction have into the machine.
// It offers what real hypervisor software has on a PC — port I/O, MMIO, MSRs, the interrupt
// lines the board lets software drive, the CPU's interrupt acknowledge and the passage of
// time — and nothing else. Modules that capture or rebuild device state import this file and
// their own shadow, never a device module; that is how a reader can check the honesty rule.

export { BoardConfig } from "../board/config";
import { BoardConfig } from "../board/config";

/**
 * How long before the resume time T a destination starts reconstruction. The PIT needs clock
 * edges to pass between writes (a count is loaded on the edge after it is written), so its
 * rebuild runs in this window and must leave the clock at exactly T. Replaying a load up to
 * 2^17 PIT clocks (110 ms) back makes NULL COUNT, the count register and a one-shot count
 * past its terminal count come out exact; shorter windows leave those as documented exceptions.
 */
export const RECONSTRUCT_WINDOW_NS: i64 = 120_000_000;

export abstract class HardwareBus {
  abstract config(): BoardConfig;
  /** Current virtual time in ns. */
  abstract now(): i64;
  /** Lets time pass (timers run) until `t`. Only reconstruction uses it, inside its window. */
  abstract advanceTo(t: i64): void;

  abstract inb(port: u32): u32;
  abstract outb(port: u32, value: u32): void;
  abstract readl(addr: u32): u32;
  abstract writel(addr: u32, value: u32): void;
  abstract rdmsr(msr: u32): u64;
  abstract wrmsr(msr: u32, value: u64): void;

  /** Level of ISA line 0–15 as the PIC and I/O APIC see it (line 0 is PIT OUT0 when wired). */
  abstract isaLine(line: i32): bool;
  /** Drives ISA line 0–15 from the board's external side. */
  abstract setIsaLine(line: i32, level: bool): void;
  /** Level driven onto I/O APIC pin 0–23 directly (the trace's `gsi`), not through ISA lines. */
  abstract gsiLine(pin: i32): bool;
  abstract setGsiLine(pin: i32, level: bool): void;
  /**
   * Connects or disconnects PIT OUT0 from ISA line 0, as the HPET legacy-replacement route does
   * on real chipsets. While disconnected, setIsaLine(0, …) drives the line.
   */
  abstract setPitIrq0Route(connected: bool): void;
  abstract pitIrq0Routed(): bool;

  /** The current CPU takes the next interrupt now (external-interrupt exit with acknowledge): its vector, or -1. */
  abstract inta(): i32;

  // Several CPUs. The hypervisor runs on each; the register accesses above are the current
  // CPU's (its local APIC's page and MSRs). What follows is CPU state a VMCS holds.

  /** Makes CPU `k` (0 ≤ k < config().cpus) the one the accesses above run on. */
  abstract selectCpu(k: i32): void;
  abstract cpu(): i32;
  /** The current CPU's activity: SipiState.Reset, SipiState.Waiting, or the vector it started on. */
  abstract sipiState(): i32;
  abstract setSipiState(state: i32): void;
  /** Whether an NMI waits for the current CPU (VM-entry event injection can put one back). */
  abstract nmiPending(): bool;
  abstract setNmiPending(pending: bool): void;
}
