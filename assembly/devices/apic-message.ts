// An interrupt message on the APIC bus (or the system bus, for xAPIC): what the I/O APIC sends
// and what a local APIC accepts or ignores. Devices stay unaware of each other; the board
// implements the sink and routes each message.

export const enum DeliveryMode {
  Fixed = 0,
  LowestPriority = 1,
  SMI = 2,
  NMI = 4,
  INIT = 5,
  StartUp = 6,
  ExtINT = 7,
}

export abstract class ApicMessageSink {
  /**
   * Delivers one message. `dest` is the 8-bit destination field, `logical` selects logical
   * destination mode, `level` is the trigger mode (true = level). Returns whether some local
   * APIC accepted it.
   */
  abstract deliver(dest: u32, logical: bool, mode: u32, vector: u32, level: bool): bool;
}
