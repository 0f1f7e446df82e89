// The I/O APIC's software interface as the 82093AA datasheet (and the version-0x20 EOI
// register) defines it: what hypervisor code needs to program it without knowing the device.

export const IOAPIC_BASE_ADDRESS: u32 = 0xfec00000;
export const IOAPIC_IOREGSEL: u32 = 0x00;
export const IOAPIC_IOWIN: u32 = 0x10;
export const IOAPIC_EOI: u32 = 0x40;

export const IOAPIC_REG_ID: u32 = 0x00;
/** Redirection entry n: low word at 0x10 + 2n, high word at 0x11 + 2n. */
export const IOAPIC_REDIRECTION: u32 = 0x10;
export const IOAPIC_PIN_COUNT: i32 = 24;
export const IOAPIC_ID_BITS: u32 = 0x0f00_0000;

// Redirection entry, low word.
export const ENTRY_LOGICAL: u32 = 1 << 11;
export const ENTRY_REMOTE_IRR: u32 = 1 << 14;
export const ENTRY_LEVEL: u32 = 1 << 15;
export const ENTRY_MASKED: u32 = 1 << 16;
