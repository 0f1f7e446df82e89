// Register access to the local APIC and I/O APIC through the HardwareBus, as hypervisor
// software does it: MMIO to the current CPU's APIC page (wherever IA32_APIC_BASE puts it), or
// its x2APIC MSRs once it is in x2APIC mode, and the I/O APIC's select-then-window pair.

import { HardwareBus } from "../bus";
import { IOAPIC_BASE_ADDRESS, IOAPIC_EOI, IOAPIC_IOREGSEL, IOAPIC_IOWIN, IOAPIC_REDIRECTION } from "../../registers/ioapic";
import {
  APIC_BASE_ADDRESS, APIC_BASE_ENABLE, APIC_BASE_X2APIC, APIC_DEFAULT_PAGE, ICR_ASSERT, ICR_LEVEL, ICR_LOGICAL,
  ICR_SHORTHAND_SHIFT, MODE_SHIFT, MSR_APIC_BASE, MSR_X2APIC_FIRST, REG_ICR_HIGH, REG_ICR_LOW, REG_ID, Shorthand,
  X2APIC_ICR, XAPIC_BROADCAST,
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

export function lapicX2(bus: HardwareBus): bool {
  return (bus.rdmsr(MSR_APIC_BASE) & APIC_BASE_X2APIC) != 0;
}

export class LapicPort {
  /** In x2APIC mode the registers are MSRs; the ICR is one 64-bit MSR. */
  private x2: bool;
  /** x2APIC: the destination for the next ICR-low write (ICR high has no MSR of its own). */
  private icrHigh: u32 = 0;

  constructor(public bus: HardwareBus, public page: u32) {
    this.x2 = lapicX2(bus);
  }

  read(offset: u32): u32 {
    if (!this.x2) return this.bus.readl(this.page + offset);
    if (offset == REG_ICR_HIGH) return <u32>(this.bus.rdmsr(MSR_X2APIC_FIRST + X2APIC_ICR) >>> 32);
    return <u32>this.bus.rdmsr(MSR_X2APIC_FIRST + (offset >>> 4));
  }

  write(offset: u32, value: u32): void {
    if (!this.x2) {
      this.bus.writel(this.page + offset, value);
    } else if (offset == REG_ICR_HIGH) {
      this.icrHigh = value;
    } else if (offset == REG_ICR_LOW) {
      this.bus.wrmsr(MSR_X2APIC_FIRST + X2APIC_ICR, (<u64>this.icrHigh << 32) | <u64>value);
    } else {
      this.bus.wrmsr(MSR_X2APIC_FIRST + (offset >>> 4), <u64>value);
    }
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

/** A destination matching no APIC: logical 0 matches no LDR; physical: an ID no CPU has. */
function nobodyFor(lapic: LapicPort, low: u32): u32 {
  if ((low & ICR_LOGICAL) != 0) return 0;
  return unusedApicId(lapic.bus) << 24;
}

/** The lowest xAPIC ID that no CPU's local APIC has (there are at most 64 CPUs, 255 IDs). */
export function unusedApicId(bus: HardwareBus): u32 {
  const current = bus.cpu();
  const n = bus.config().cpus;
  let used0: u64 = 0;
  let used1: u64 = 0;
  let used2: u64 = 0;
  let used3: u64 = 0;
  for (let k = 0; k < n; k++) {
    bus.selectCpu(k);
    const x2 = lapicX2(bus);
    if (!lapicEnabled(bus)) continue;
    const id = x2 ? <u32>k : new LapicPort(bus, lapicPage(bus)).read(REG_ID) >>> 24;
    const bit: u64 = <u64>1 << <u64>(id & 63);
    if (id < 64) used0 |= bit;
    else if (id < 128) used1 |= bit;
    else if (id < 192) used2 |= bit;
    else used3 |= bit;
  }
  bus.selectCpu(current);
  for (let id: u32 = 0; id < XAPIC_BROADCAST; id++) {
    const bit: u64 = <u64>1 << <u64>(id & 63);
    const used = id < 64 ? used0 : id < 128 ? used1 : id < 192 ? used2 : used3;
    if ((used & bit) == 0) return id;
  }
  return 0;
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
