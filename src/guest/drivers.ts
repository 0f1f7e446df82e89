// The guest kernel's interrupt drivers: what an OS writes to the PIC/PIT or to the local APIC
// and I/O APIC at boot, in its interrupt handlers, and when it looks at the hardware. All of it
// goes through the machine's port, MMIO and line interface, like a real guest's accesses.

import type { Machine } from "../core/machine.js";
import { PIT_HZ } from "../../assembly/common/hardware.js";

export type InterruptSetup = "pic" | "apic";

export interface InterruptDriver {
  readonly timerVector: number;
  /** Vector of the workload's own device line. */
  readonly deviceVector: number;
  /** Input clocks per timer period for a `hz` tick. */
  timerCount(hz: number): number;
  /** Boot-time programming, the timer at `count` input clocks per tick. */
  program(count: number): void;
  /** End of the timer interrupt. */
  eoiTimer(): void;
  /** End of the device interrupt (after the device has dropped its line). */
  eoiDevice(): void;
  /** The device asserts (1) or releases (0) its interrupt line. */
  setDeviceLine(level: number): void;
  /** Reads registers that depend on the device state and folds each value into `hash`. */
  readBack(hash: number): number;
}

/** Folds a 32-bit word into a 32-bit hash (FNV-1a over words). */
export function foldWord(hash: number, word: number): number {
  return Math.imul(hash ^ word, 0x0100_0193) >>> 0;
}

function checkedCount(count: number, min: number, max: number, hz: number): number {
  if (!(count >= min && count <= max)) throw new RangeError(`a ${hz} Hz timer needs a count of ${count}, outside ${min}..${max}`);
  return count;
}

export function interruptDriver(setup: InterruptSetup, machine: Machine): InterruptDriver {
  const c = machine.config;
  if (setup === "pic") {
    if (!c.pic || !c.pit) throw new RangeError('the "pic" interrupt setup needs a machine with a PIC and a PIT');
    return new PicDriver(machine);
  }
  if (!c.lapic || !c.ioapic) throw new RangeError('the "apic" interrupt setup needs a machine with a local APIC and an I/O APIC');
  return new ApicDriver(machine);
}

export const LAPIC = 0xfee0_0000;
export const LAPIC_EOI = LAPIC + 0xb0;
export const LAPIC_SVR = LAPIC + 0xf0;
const LAPIC_ISR = LAPIC + 0x100;
export const LAPIC_ICR_LOW = LAPIC + 0x300;
export const LAPIC_ICR_HIGH = LAPIC + 0x310;
export const LAPIC_LVT_TIMER = LAPIC + 0x320;
export const LAPIC_LVT_LINT0 = LAPIC + 0x350;
const LAPIC_LVT_LINT1 = LAPIC + 0x360;
const LAPIC_LVT_ERROR = LAPIC + 0x370;
export const LAPIC_INITIAL_COUNT = LAPIC + 0x380;
export const LAPIC_CURRENT_COUNT = LAPIC + 0x390;
export const LAPIC_DIVIDE = LAPIC + 0x3e0;
const LVT_MASKED = 1 << 16;
export const LVT_PERIODIC = 1 << 17;
const DELIVERY_NMI = 4 << 8;
export const DELIVERY_EXTINT = 7 << 8;
export const SVR_ENABLE = 1 << 8;
const SPURIOUS_VECTOR = 0xff;
const ERROR_VECTOR = 0xfe;

/** Software-enables the current CPU's local APIC, spurious vector 0xff. */
export function softwareEnableApic(m: Machine): void {
  m.writel(LAPIC_SVR, SVR_ENABLE | SPURIOUS_VECTOR);
}

/** Software-enables the local APIC with LINT0 as given and LINT1 as NMI, as firmware and OSes do. */
function enableLocalApic(m: Machine, lint0: number): void {
  softwareEnableApic(m);
  m.writel(LAPIC_LVT_LINT0, lint0);
  m.writel(LAPIC_LVT_LINT1, DELIVERY_NMI);
}

const MASTER_BASE = 0x20;
const SLAVE_BASE = 0x28;
const OCW2_EOI = 0x20;
const OCW3_READ_IRR = 0x0a;
const OCW3_READ_ISR = 0x0b;

/** ICW1–ICW4 for both PICs (edge, cascade on IR2, 8086 mode), leaving every input masked. */
function initPics(m: Machine): void {
  m.outb(0x20, 0x11);
  m.outb(0x21, MASTER_BASE);
  m.outb(0x21, 0x04);
  m.outb(0x21, 0x01);
  m.outb(0xa0, 0x11);
  m.outb(0xa1, SLAVE_BASE);
  m.outb(0xa1, 0x02);
  m.outb(0xa1, 0x01);
  m.outb(0x21, 0xff);
  m.outb(0xa1, 0xff);
}

/** PIT channel 0 in mode 2 drives IRQ0; the device sits on IRQ12, behind the slave. */
class PicDriver implements InterruptDriver {
  readonly timerVector = MASTER_BASE;
  readonly deviceVector = SLAVE_BASE + 4;
  private static readonly DEVICE_IRQ = 12;

  constructor(private readonly m: Machine) {}

  timerCount(hz: number): number {
    // Mode 2 needs a count of at least 2; 65536 is written as 0.
    return checkedCount(Math.round(PIT_HZ / hz), 2, 0x10000, hz);
  }

  program(count: number): void {
    const m = this.m;
    initPics(m);
    // Virtual wire mode: the PIC's INT reaches the CPU through LINT0 as ExtINT.
    if (m.config.lapic) enableLocalApic(m, DELIVERY_EXTINT);
    m.outb(0x43, 0x34); // channel 0, LSB then MSB, mode 2, binary
    m.outb(0x40, count & 0xff);
    m.outb(0x40, (count >>> 8) & 0xff);
    m.outb(0x21, 0xfa); // IRQ0 and the cascade
    m.outb(0xa1, 0xef); // IRQ12
  }

  eoiTimer(): void {
    this.m.outb(0x20, OCW2_EOI);
  }

  eoiDevice(): void {
    this.m.outb(0xa0, OCW2_EOI);
    this.m.outb(0x20, OCW2_EOI);
  }

  setDeviceLine(level: number): void {
    this.m.setIrq(PicDriver.DEVICE_IRQ, level);
  }

  readBack(hash: number): number {
    const m = this.m;
    m.outb(0x43, 0x00); // latch channel 0
    const lsb = m.inb(0x40);
    hash = foldWord(hash, lsb | (m.inb(0x40) << 8));
    hash = foldWord(hash, m.inb(0x21));
    m.outb(0x20, OCW3_READ_ISR);
    m.outb(0xa0, OCW3_READ_ISR);
    hash = foldWord(hash, m.inb(0x20) | (m.inb(0xa0) << 8));
    m.outb(0x20, OCW3_READ_IRR);
    m.outb(0xa0, OCW3_READ_IRR);
    return hash;
  }
}

export const IOAPIC_SELECT = 0xfec0_0000;
export const IOAPIC_WINDOW = 0xfec0_0010;
const REDIRECTION_LEVEL = 1 << 15;
/**
 * Divide configuration 0b1011: divide by 1. The phase of a divided clock within its period is
 * not readable, so a migrated timer may expire up to one divided period late; undivided, at
 * whole bus ticks per ns, there is no such phase and a migration is exact.
 */
const DIVIDE_BY_1 = 0xb;
const DIVISOR = 1;

/** Bus clocks per `periods` periods of a `hz` local APIC timer. */
export function apicTimerCount(m: Machine, hz: number, periods = 1): number {
  return checkedCount(Math.round((m.config.apicBusHz * periods) / (DIVISOR * hz)), 1, 0xffff_ffff, hz);
}

/** The current CPU's local APIC timer: periodic, `vector`, `count` bus clocks per tick. */
export function startApicTimer(m: Machine, vector: number, count: number): void {
  m.writel(LAPIC_DIVIDE, DIVIDE_BY_1);
  m.writel(LAPIC_LVT_TIMER, LVT_PERIODIC | vector);
  m.writel(LAPIC_INITIAL_COUNT, count);
}

/** The local APIC timer ticks; the device is a level-triggered line on I/O APIC pin 16. */
class ApicDriver implements InterruptDriver {
  readonly timerVector = 0xef;
  readonly deviceVector = 0x41;
  private static readonly DEVICE_PIN = 16;

  constructor(private readonly m: Machine) {}

  timerCount(hz: number): number {
    return apicTimerCount(this.m, hz);
  }

  program(count: number): void {
    const m = this.m;
    // The legacy PICs are initialised and then left fully masked, as an APIC-mode OS does.
    initPics(m);
    enableLocalApic(m, LVT_MASKED | DELIVERY_EXTINT);
    m.writel(LAPIC_LVT_ERROR, ERROR_VECTOR);
    startApicTimer(m, this.timerVector, count);
    // Destination (physical APIC 0) first, then the low word, which unmasks the entry.
    const entry = 0x10 + 2 * ApicDriver.DEVICE_PIN;
    m.writel(IOAPIC_SELECT, entry + 1);
    m.writel(IOAPIC_WINDOW, 0);
    m.writel(IOAPIC_SELECT, entry);
    m.writel(IOAPIC_WINDOW, REDIRECTION_LEVEL | this.deviceVector);
  }

  eoiTimer(): void {
    this.m.writel(LAPIC_EOI, 0);
  }

  eoiDevice(): void {
    this.m.writel(LAPIC_EOI, 0);
  }

  setDeviceLine(level: number): void {
    this.m.setGsi(ApicDriver.DEVICE_PIN, level);
  }

  readBack(hash: number): number {
    const m = this.m;
    hash = foldWord(hash, m.readl(LAPIC_CURRENT_COUNT));
    hash = foldWord(hash, m.readl(LAPIC_ISR + 0x10 * (this.timerVector >>> 5)));
    hash = foldWord(hash, m.readl(LAPIC_ISR + 0x10 * (this.deviceVector >>> 5)));
    // The entry's remote IRR and delivery status show where the level interrupt stands.
    m.writel(IOAPIC_SELECT, 0x10 + 2 * ApicDriver.DEVICE_PIN);
    return foldWord(hash, m.readl(IOAPIC_WINDOW));
  }
}
