// Register access to the local APIC and I/O APIC through the HardwareBus, as hypervisor
// software does it: MMIO to the APIC page (wherever IA32_APIC_BASE puts it) and the
// I/O APIC's select-then-window pair.

import { HardwareBus } from "../bus";
import { IOAPIC_BASE_ADDRESS, IOAPIC_EOI, IOAPIC_IOREGSEL, IOAPIC_IOWIN, IOAPIC_REDIRECTION } from "../../registers/ioapic";
import {
  APIC_BASE_ADDRESS, APIC_BASE_ENABLE, APIC_DEFAULT_PAGE, ICR_ASSERT, ICR_LEVEL, ICR_LOGICAL, ICR_SHORTHAND_SHIFT,
  MODE_SHIFT, MSR_APIC_BASE, REG_ICR_HIGH, REG_ICR_LOW, REG_ID, Shorthand,
} from "../../registers/lapic";
import { PendingFixup } from "../fixup";

/** Where the local APIC's registers decode. QEMU 7.2 never moves the page. */
export function lapicPage(bus: HardwareBus): u32 {
  if (bus.config().compatQemu) return APIC_DEFAULT_PAGE;
  return <u32>(bus.rdmsr(MSR_APIC_BASE) & APIC_BASE_ADDRESS);
}

export function lapicEnabled(bus: HardwareBus): bool {
  return (bus.rdmsr(MSR_APIC_BASE) & APIC_BASE_ENABLE) != 0;
}

export class LapicPort {
  constructor(public bus: HardwareBus, public page: u32) {}

  read(offset: u32): u32 {
    return this.bus.readl(this.page + offset);
  }

  write(offset: u32, value: u32): void {
    this.bus.writel(this.page + offset, value);
  }

  /** Bit `vector` of the 256-bit register at `base` (ISR, TMR or IRR). */
  testVector(base: u32, vector: u32): bool {
    return ((this.read(base + ((vector >>> 5) << 4)) >>> (vector & 31)) & 1) != 0;
  }

  /** A register as the guest would read it: through `fixup`, if it answers for it. */
  readAsGuest(offset: u32, fixup: PendingFixup | null): u32 {
    if (fixup) {
      const emulated = fixup.emulateRead(offset);
      if (emulated >= 0) return <u32>emulated;
    }
    return this.read(offset);
  }
}

export class IoApicPort {
  constructor(public bus: HardwareBus) {}

  selected(): u32 {
    return this.bus.readl(IOAPIC_BASE_ADDRESS + IOAPIC_IOREGSEL);
  }

  select(reg: u32): void {
    this.bus.writel(IOAPIC_BASE_ADDRESS + IOAPIC_IOREGSEL, reg);
  }

  read(reg: u32): u32 {
    this.select(reg);
    return this.bus.readl(IOAPIC_BASE_ADDRESS + IOAPIC_IOWIN);
  }

  write(reg: u32, value: u32): void {
    this.select(reg);
    this.bus.writel(IOAPIC_BASE_ADDRESS + IOAPIC_IOWIN, value);
  }

  readLow(pin: i32): u32 {
    return this.read(IOAPIC_REDIRECTION + 2 * <u32>pin);
  }

  writeLow(pin: i32, value: u32): void {
    this.write(IOAPIC_REDIRECTION + 2 * <u32>pin, value);
  }

  readHigh(pin: i32): u32 {
    return this.read(IOAPIC_REDIRECTION + 2 * <u32>pin + 1);
  }

  writeHigh(pin: i32, value: u32): void {
    this.write(IOAPIC_REDIRECTION + 2 * <u32>pin + 1, value);
  }

  /** The EOI register: clears remote IRR of every entry with this vector. */
  eoi(vector: u32): void {
    this.bus.writel(IOAPIC_BASE_ADDRESS + IOAPIC_EOI, vector);
  }
}

/**
 * Writes ICR high and low so that the command in `low` reaches no APIC: the destination is
 * parked on an ID nobody has while ICR low is written (which sends), then ICR high is put
 * back. Only a command with shorthand "self" or "all including self" can still arrive.
 */
export function writeIcrQuietly(lapic: LapicPort, low: u32, high: u32): void {
  lapic.write(REG_ICR_HIGH, nobodyFor(lapic, low));
  lapic.write(REG_ICR_LOW, low);
  lapic.write(REG_ICR_HIGH, high);
}

/** A destination matching no APIC: logical 0 matches no LDR; physical: an ID other than ours. */
function nobodyFor(lapic: LapicPort, low: u32): u32 {
  if ((low & ICR_LOGICAL) != 0) return 0;
  const ownId = lapic.read(REG_ID) >>> 24;
  return (ownId == 0 ? 1 : 0) << 24;
}

const MODE_INIT: u32 = 5;
const MODE_RESERVED: u32 = 3;

/** QEMU delivers an ICR command with shorthand self or all-including-self to this CPU (INIT de-assert aside). */
export function qemuIpiReachesSelf(low: u32): bool {
  const shorthand = (low >>> ICR_SHORTHAND_SHIFT) & 3;
  if (shorthand != Shorthand.Self && shorthand != Shorthand.AllIncludingSelf) return false;
  const mode = (low >>> MODE_SHIFT) & 7;
  const deassert = mode == MODE_INIT && (low & ICR_ASSERT) == 0 && (low & ICR_LEVEL) != 0;
  return !deassert && mode != MODE_RESERVED;
}
