// An interrupt message on the APIC bus (or the system bus, for xAPIC): what the I/O APIC and a
// local APIC's ICR send, and what each local APIC accepts or ignores. Devices stay unaware of
// each other; the board routes each message to the CPUs it reaches: the I/O APIC hands its
// messages to the sink the board implements, and the board takes a local APIC's IPI from it
// once the register write that sent it is done.

import { Shorthand } from "../registers/lapic";

export const enum DeliveryMode {
  Fixed = 0,
  LowestPriority = 1,
  SMI = 2,
  NMI = 4,
  INIT = 5,
  StartUp = 6,
  ExtINT = 7,
}

/** The CPU a message comes from when it comes from no CPU (the I/O APIC, an MSI). */
export const FROM_BUS: i32 = -1;

/** One message: its destination and what it delivers. The sender fills it, the sink routes it. */
export class ApicMessage {
  /** CPU number of the sending local APIC, or FROM_BUS. */
  source: i32 = FROM_BUS;
  /** Destination field: 8 bits (xAPIC, I/O APIC) or 32 bits (x2APIC, `wide`). */
  dest: u32 = 0;
  /** The destination is an x2APIC one (32 bits; 0xffffffff broadcasts). */
  wide: bool = false;
  logical: bool = false;
  shorthand: u32 = Shorthand.None;
  mode: u32 = DeliveryMode.Fixed;
  vector: u32 = 0;
  /** Trigger mode: true = level. */
  level: bool = false;
}

export abstract class ApicMessageSink {
  /**
   * Delivers one message from the I/O APIC. `dest` is the 8-bit destination field, `logical`
   * selects logical destination mode, `level` is the trigger mode (true = level). Returns
   * whether some local APIC accepted it.
   */
  abstract deliver(dest: u32, logical: bool, mode: u32, vector: u32, level: bool): bool;
}
