// Work a reconstruction leaves for after the guest resumes: state that can only be put right
// at a later moment (the true initial count of a periodic APIC timer at its first expiry), and
// guest reads that must be answered from the record until then. The hypervisor keeps a
// VMX-preemption-timer-like deadline for it and traps the local APIC page while it is active.

import { HardwareBus } from "./bus";
import { MAX_CPUS } from "../board/config";

export abstract class PendingFixup {
  /** True while the fixup still has work or reads to emulate. */
  abstract active(): bool;
  /** When the hypervisor must call fire(); clock.NEVER if nothing is due. */
  abstract deadline(): i64;
  /** Called once the clock has reached deadline(). */
  abstract fire(bus: HardwareBus): void;
  /** A guest read of the local APIC page at `offset`: the value to return instead, or -1. */
  abstract emulateRead(offset: u32): i64;
  /** A guest write to the local APIC page at `offset` (after it was performed). */
  abstract guestWrote(offset: u32, value: u32): void;
}

/** The fixups a reconstruction left, one per CPU at most (each CPU's local APIC has its own). */
export class FixupTable {
  private items: StaticArray<PendingFixup | null> = new StaticArray<PendingFixup | null>(MAX_CPUS);
  /** How many CPUs have a fixup. */
  count: i32 = 0;

  @inline
  get(cpu: i32): PendingFixup | null {
    return unchecked(this.items[cpu]);
  }

  set(cpu: i32, fixup: PendingFixup | null): void {
    const had = unchecked(this.items[cpu]) != null;
    unchecked((this.items[cpu] = fixup));
    if (had && fixup == null) this.count--;
    else if (!had && fixup != null) this.count++;
  }

  clear(): void {
    for (let k = 0; k < MAX_CPUS; k++) unchecked((this.items[k] = null));
    this.count = 0;
  }
}
