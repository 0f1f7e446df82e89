// Numbers of the PC hardware that the core and the host both use. Plain TypeScript that both
// asc and tsc compile (like abi/codes.ts), so each is written once. docs/architecture.md.

/** The 8254's input clock in Hz: the PC's 14.31818 MHz crystal divided by 12. */
export const PIT_HZ = 1_193_182;

/** The local APIC's version register: version 0x14 (integrated xAPIC), max LVT entry 5, no EOI-broadcast suppression (bit 24). */
export const LAPIC_VERSION = 0x0005_0014;
