// Work a reconstruction leaves for after the guest resumes: state that can only be put right
// at a later moment (the true initial count of a periodic APIC timer at its first expiry), and
// guest reads that must be answered from the record until then. The hypervisor keeps a
// VMX-preemption-timer-like deadline for it and traps the local APIC page while it is active.

import { HardwareBus } from "./bus";

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
