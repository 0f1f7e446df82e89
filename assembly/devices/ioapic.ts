// The I/O APIC (Intel 82093AA, with the version-0x20 EOI register of later chipsets): 24 input
// pins, each with a 64-bit redirection entry that turns a pin event into an APIC message.
//
// Delivery is instantaneous: a message is handed to the sink and accepted or not before the
// call returns, so the delivery-status bit never has a moment to be set and always reads 0.
//
// Datasheet model (the default): each pin's input level is kept; a pin is *asserted* when its
// level differs from the entry's polarity bit (1 = active low). An edge entry sends one message
// per asserting transition while unmasked; an edge on a masked pin is ignored, not held. A level
// entry sends whenever the pin is asserted, unmasked and remote IRR is clear; remote IRR is set
// when a local APIC accepts the message and cleared by an EOI carrying the entry's vector. Only
// fixed and lowest-priority entries can be level-triggered: SMI, NMI, INIT and ExtINT ones are
// treated as edge-triggered whatever their trigger-mode bit says (82093AA, delivery mode).
//
// QEMU 7.2 (hw/intc/ioapic.c), with compatQemu, differs as marked "QEMU:" below.

import { FieldIO } from "../common/fields";
import { ApicMessageSink } from "./apic-message";

export const IOAPIC_PINS: i32 = 24;
/** Version register: version 0x20, maximum redirection entry 23. */
const VERSION_REGISTER: u32 = 0x0017_0020;

const REG_ID: u32 = 0x00;
const REG_VERSION: u32 = 0x01;
const REG_ARBITRATION: u32 = 0x02;
const REG_FIRST_ENTRY: u32 = 0x10;
const REG_LAST_ENTRY: u32 = 0x3f;

const OFFSET_IOREGSEL: u32 = 0x00;
const OFFSET_IOWIN: u32 = 0x10;
const OFFSET_EOI: u32 = 0x40;

const ID_MASK: u32 = 0x0f00_0000;

// Low word of a redirection entry.
const VECTOR_MASK: u32 = 0xff;
const DELIVERY_MODE_SHIFT: u32 = 8;
const DEST_LOGICAL: u32 = 1 << 11;
const DELIVERY_STATUS: u32 = 1 << 12;
const ACTIVE_LOW: u32 = 1 << 13;
const REMOTE_IRR: u32 = 1 << 14;
const LEVEL_TRIGGERED: u32 = 1 << 15;
const MASKED: u32 = 1 << 16;
const READ_ONLY_LOW: u32 = DELIVERY_STATUS | REMOTE_IRR;
/** Bits 0–16 are defined; bits 17–31 are reserved and read 0. */
const DEFINED_LOW: u32 = 0x0001_ffff;
/** High word: only the destination field (bits 56–63) is defined. */
const DEFINED_HIGH: u32 = 0xff00_0000;
const DEST_SHIFT: u32 = 24;

/** Datasheet: whether an entry is level-triggered in effect (fixed or lowest priority, trigger bit set). */
@inline
function levelTriggered(low: u32): bool {
  return (low & LEVEL_TRIGGERED) != 0 && ((low >>> DELIVERY_MODE_SHIFT) & 7) <= 1;
}

export class IoApic {
  sink!: ApicMessageSink;
  compatQemu: bool = false;

  private ioregsel: u32 = 0;
  /** ID register bits 27–24; the arbitration ID follows it. */
  private id: u32 = 0;
  private entryLow: StaticArray<u32> = new StaticArray<u32>(IOAPIC_PINS);
  private entryHigh: StaticArray<u32> = new StaticArray<u32>(IOAPIC_PINS);
  /** Input level of each pin as driven by the board (before polarity). */
  private levels: u32 = 0;
  /**
   * QEMU: its latched interrupt request bits. A level pin's bit follows the line while the
   * entry is level-triggered; an edge pin's bit is set by an unmasked assert and cleared when
   * the message is sent. Only compat mode uses it.
   */
  private irr: u32 = 0;

  reset(): void {
    this.ioregsel = 0;
    this.id = 0;
    this.levels = 0;
    this.irr = 0;
    for (let pin = 0; pin < IOAPIC_PINS; pin++) {
      unchecked((this.entryLow[pin] = MASKED));
      unchecked((this.entryHigh[pin] = 0));
    }
  }

  mmioRead(offset: u32): u32 {
    // QEMU: decodes only the low 8 bits of the offset, so the registers repeat every 256 bytes.
    if (this.compatQemu) offset &= 0xff;
    if (offset == OFFSET_IOREGSEL) return this.ioregsel;
    if (offset == OFFSET_IOWIN) return this.readRegister(this.ioregsel);
    return 0;
  }

  mmioWrite(offset: u32, value: u32): void {
    if (this.compatQemu) offset &= 0xff;
    if (offset == OFFSET_IOREGSEL) {
      this.ioregsel = value & 0xff;
    } else if (offset == OFFSET_IOWIN) {
      this.writeRegister(this.ioregsel, value);
    } else if (offset == OFFSET_EOI) {
      // QEMU: compares the whole written value with the vector, so a value above 0xff
      // matches no entry; the datasheet takes the vector from bits 7–0.
      if (this.compatQemu) {
        if (value <= VECTOR_MASK) this.eoi(value);
      } else {
        this.eoi(value & VECTOR_MASK);
      }
    }
  }

  setPin(pin: i32, level: bool): void {
    if (<u32>pin >= <u32>IOAPIC_PINS) return;
    const bit: u32 = 1 << <u32>pin;
    const wasHigh = (this.levels & bit) != 0;
    this.levels = level ? this.levels | bit : this.levels & ~bit;
    const low = unchecked(this.entryLow[pin]);
    if (this.compatQemu) {
      this.qemuSetPin(pin, bit, level, low);
      return;
    }
    if (levelTriggered(low)) {
      this.serviceLevel(pin);
    } else if (level != wasHigh && level != ((low & ACTIVE_LOW) != 0) && (low & MASKED) == 0) {
      this.send(pin, low);
    }
  }

  eoi(vector: u32): void {
    for (let pin = 0; pin < IOAPIC_PINS; pin++) {
      const low = unchecked(this.entryLow[pin]);
      // QEMU: looks only at level-triggered entries; the datasheet clears remote IRR of any
      // entry whose vector matches (on an edge entry it is normally already clear).
      if ((low & VECTOR_MASK) != vector || (low & REMOTE_IRR) == 0) continue;
      if (this.compatQemu && (low & LEVEL_TRIGGERED) == 0) continue;
      unchecked((this.entryLow[pin] = low & ~REMOTE_IRR));
      if (this.compatQemu) this.qemuService();
      else if (levelTriggered(low)) this.serviceLevel(pin);
    }
  }

  private readRegister(reg: u32): u32 {
    if (reg == REG_ID || reg == REG_ARBITRATION) return this.id;
    if (reg == REG_VERSION) return VERSION_REGISTER;
    if (reg < REG_FIRST_ENTRY || reg > REG_LAST_ENTRY) return 0;
    const pin = <i32>((reg - REG_FIRST_ENTRY) >>> 1);
    return (reg & 1) != 0 ? unchecked(this.entryHigh[pin]) : unchecked(this.entryLow[pin]);
  }

  private writeRegister(reg: u32, value: u32): void {
    if (reg == REG_ID) {
      this.id = value & ID_MASK;
      return;
    }
    // Version and arbitration ID are read-only; other registers outside the table do not exist.
    if (reg < REG_FIRST_ENTRY || reg > REG_LAST_ENTRY) return;
    const pin = <i32>((reg - REG_FIRST_ENTRY) >>> 1);
    if ((reg & 1) != 0) {
      unchecked((this.entryHigh[pin] = value & this.storedHighBits()));
      // The destination does not decide whether a message is due, but QEMU services anyway.
      if (this.compatQemu) this.qemuService();
      return;
    }
    const old = unchecked(this.entryLow[pin]);
    let low = (value & this.storedLowBits() & ~READ_ONLY_LOW) | (old & READ_ONLY_LOW);
    // QEMU: an entry written as edge-triggered loses its remote IRR (Linux's trick for
    // I/O APICs without an EOI register); the datasheet leaves the read-only bit alone.
    if (this.compatQemu && (low & LEVEL_TRIGGERED) == 0) low &= ~REMOTE_IRR;
    unchecked((this.entryLow[pin] = low));
    // QEMU: any entry write services every pin with a latched request. The datasheet model
    // re-examines only this pin: a level pin may now be deliverable; a changed polarity or
    // mask is not an edge, since edges are detected only on input transitions.
    if (this.compatQemu) this.qemuService();
    else if (levelTriggered(low)) this.serviceLevel(pin);
  }

  // QEMU: keeps the reserved bits of an entry as written; the datasheet's read 0.
  @inline
  private storedLowBits(): u32 {
    return this.compatQemu ? 0xffff_ffff : DEFINED_LOW;
  }

  @inline
  private storedHighBits(): u32 {
    return this.compatQemu ? 0xffff_ffff : DEFINED_HIGH;
  }

  /** Datasheet: a level entry sends while its pin is asserted, unmasked and not awaiting EOI. */
  private serviceLevel(pin: i32): void {
    const low = unchecked(this.entryLow[pin]);
    if ((low & (MASKED | REMOTE_IRR)) != 0) return;
    const high = ((this.levels >>> <u32>pin) & 1) != 0;
    if (high == ((low & ACTIVE_LOW) != 0)) return;
    if (this.send(pin, low)) unchecked((this.entryLow[pin] = low | REMOTE_IRR));
  }

  /** Sends the message of entry `pin`; returns whether a local APIC accepted it. */
  private send(pin: i32, low: u32): bool {
    const dest = unchecked(this.entryHigh[pin]) >>> DEST_SHIFT;
    const mode = (low >>> DELIVERY_MODE_SHIFT) & 7;
    return this.sink.deliver(dest, (low & DEST_LOGICAL) != 0, mode, low & VECTOR_MASK, (low & LEVEL_TRIGGERED) != 0);
  }

  // QEMU: ignores the polarity bit (its inputs are already "asserted" levels). A level entry
  // latches the line in irr even while masked and sends when unmasked. An edge entry treats
  // every assert call as an edge (the board only calls on changes) and ignores it while masked.
  // How the request is latched depends on the trigger mode at the time of the pin change, so
  // a line raised while its entry was edge-triggered is not seen when the entry becomes level.
  private qemuSetPin(pin: i32, bit: u32, level: bool, low: u32): void {
    if ((low & LEVEL_TRIGGERED) != 0) {
      if (!level) {
        this.irr &= ~bit;
        return;
      }
      this.irr |= bit;
      if ((low & REMOTE_IRR) == 0) this.qemuService();
    } else if (level && (low & MASKED) == 0) {
      this.irr |= bit;
      this.qemuService();
    }
  }

  // QEMU: sends for every unmasked pin with a latched request. Remote IRR of a level entry is
  // set when the message is sent, whether or not a local APIC accepts it; an edge request is
  // consumed by the send. A level request found with remote IRR already set is skipped.
  private qemuService(): void {
    let pending = this.irr;
    while (pending != 0) {
      const pin = <i32>ctz(pending);
      pending &= pending - 1;
      const low = unchecked(this.entryLow[pin]);
      if ((low & MASKED) != 0) continue;
      if ((low & LEVEL_TRIGGERED) == 0) {
        this.irr &= ~(<u32>1 << <u32>pin);
      } else {
        if ((low & REMOTE_IRR) != 0) continue;
        unchecked((this.entryLow[pin] = low | REMOTE_IRR));
      }
      this.send(pin, low);
    }
  }

  inspect(io: FieldIO): void {
    this.ioregsel = io.field("ioregsel", this.ioregsel, 0xff);
    this.id = io.bits("id", this.id, ID_MASK);
    io.begin("entries");
    for (let pin = 0; pin < IOAPIC_PINS; pin++) {
      io.beginIndex(pin);
      unchecked((this.entryLow[pin] = io.bits("low", unchecked(this.entryLow[pin]), this.storedLowBits())));
      unchecked((this.entryHigh[pin] = io.bits("high", unchecked(this.entryHigh[pin]), this.storedHighBits())));
      io.end();
    }
    io.end();
    this.levels = io.bits("levels", this.levels, (1 << IOAPIC_PINS) - 1);
    this.irr = io.bits("irr", this.irr, (1 << IOAPIC_PINS) - 1);
  }
}
