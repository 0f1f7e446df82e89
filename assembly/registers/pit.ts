// The 8254's programming interface for one channel: the control fields, the count register with
// its write flip-flop and held LSB, the read flip-flop, and the count and status latches. The
// device and the hypervisor's shadow both run this one state machine (the device through
// subclasses that supply the counting element); the shadow sees only trapped accesses, so the
// values it cannot know (what a latch captured) stay at their defaults there.
//
// QEMU 7.2 (hw/timer/i8254.c) differs where marked "QEMU:"; `compatQemu` selects it.

import { FieldIO } from "../common/fields";

export const PIT_CHANNELS: i32 = 3;
export const PIT_CONTROL_PORT: u32 = 0x43;
const FIRST_COUNTER_PORT: u32 = 0x40;

/** Channel `i`'s counter port. */
@inline
export function counterPort(i: i32): u32 {
  return FIRST_COUNTER_PORT + <u32>i;
}

/** Access (RW) modes of a control word. 0 is the latch command; a reset channel also holds 0. */
export const RW_NONE: u32 = 0;
export const RW_LSB: u32 = 1;
export const RW_MSB: u32 = 2;
export const RW_WORD: u32 = 3;

/** Which latched count bytes remain to be read: none, LSB only, MSB only, LSB then MSB. */
export const LATCH_NONE: u32 = 0;
export const LATCH_LSB: u32 = 1;
export const LATCH_MSB: u32 = 2;
export const LATCH_WORD: u32 = 3;

export const STATUS_OUT: u32 = 0x80;
export const STATUS_NULL_COUNT: u32 = 0x40;

/** Power-on control fields: the datasheet leaves them undefined; both models start like QEMU. */
const RESET_MODE: u32 = 3;

export class PitChannelRegisters {
  compatQemu: bool = false;
  /** Mode bits M2–M0 as written (6 and 7 are aliases of 2 and 3). */
  mode: u32 = RESET_MODE;
  rwMode: u32 = RW_NONE;
  bcd: bool = false;
  /** The count register (CR): the last complete count written, as its 16 raw bits. */
  countRegister: u32 = 0;
  /** Complete counts written since the last control word, saturating at 2. */
  countsWritten: u32 = 0;
  writeMsbNext: bool = false;
  heldLsb: u32 = 0;
  readMsbNext: bool = false;
  countLatched: u32 = LATCH_NONE;
  latchedCount: u32 = 0;
  statusLatched: bool = false;
  latchedStatus: u32 = 0;

  resetRegisters(): void {
    this.mode = RESET_MODE;
    this.rwMode = RW_NONE;
    this.bcd = false;
    this.countRegister = 0;
    this.countsWritten = 0;
    this.writeMsbNext = false;
    this.heldLsb = 0;
    this.readMsbNext = false;
    this.countLatched = LATCH_NONE;
    this.latchedCount = 0;
    this.statusLatched = false;
    this.latchedStatus = 0;
  }

  // ---- what a subclass with a counting element supplies ---------------------------------

  /** The counting element's raw 16 bits now. */
  liveCount(): u32 {
    return 0;
  }
  /** The OUT and NULL COUNT bits (7 and 6) of a status byte taken now. */
  outAndNullBits(): u32 {
    return 0;
  }
  /** Called before the new control fields are stored: the counting element reacts to them. */
  controlWritten(mode: u32, bcd: bool): void {}
  /** A count byte was written: `complete` when it finished a count (now in countRegister). */
  countByteWritten(complete: bool): void {}

  // ---- the register interface ------------------------------------------------------------

  /** A control word (not a latch or read-back command) for this channel. */
  control(value: u32): void {
    const mode = (value >>> 1) & 7;
    const bcd = (value & 1) != 0;
    this.controlWritten(mode, bcd);
    this.mode = mode;
    this.bcd = bcd;
    this.rwMode = (value >>> 4) & 3;
    this.countsWritten = 0;
    this.writeMsbNext = false;
    this.readMsbNext = false;
    // Datasheet: reprogramming releases a latched count. QEMU: the latch survives.
    if (!this.compatQemu) this.countLatched = LATCH_NONE;
  }

  /** Counter latch command (or the count half of a read-back): the first latch wins. */
  latchCount(): void {
    if (this.countLatched != LATCH_NONE) return;
    // A never-programmed channel (RW 0) latches nothing, as in QEMU; the datasheet leaves it open.
    const rw = this.rwMode;
    if (rw == RW_NONE) return;
    this.latchedCount = this.liveCount();
    // Datasheet: one read flip-flop serves latched and live reads, so a latch taken half way
    // through a two-byte read yields its MSB next. QEMU: a latched word always reads LSB first.
    if (rw == RW_WORD) this.countLatched = !this.compatQemu && this.readMsbNext ? LATCH_MSB : LATCH_WORD;
    else this.countLatched = rw;
  }

  latchStatus(): void {
    if (this.statusLatched) return;
    this.latchedStatus = this.outAndNullBits() | (this.rwMode << 4) | (this.mode << 1) | (this.bcd ? 1 : 0);
    this.statusLatched = true;
  }

  writeData(value: u32): void {
    const rw = this.rwMode;
    if (rw == RW_WORD && !this.writeMsbNext) {
      this.heldLsb = value;
      this.writeMsbNext = true;
      this.countByteWritten(false);
      return;
    }
    if (rw == RW_WORD) {
      this.countRegister = this.heldLsb | (value << 8);
      this.writeMsbNext = false;
    } else {
      // LSB-only and a reset channel's RW 0 (QEMU's default case) write the low byte.
      this.countRegister = rw == RW_MSB ? value << 8 : value;
    }
    if (this.countsWritten < 2) this.countsWritten++;
    this.countByteWritten(true);
  }

  /** One byte read from the channel's data port: latched status, latched count, or live count. */
  @inline
  readData(): u32 {
    if (this.statusLatched) {
      this.statusLatched = false;
      return this.latchedStatus;
    }
    const rw = this.rwMode;
    let value: u32;
    let msb: bool;
    if (this.countLatched != LATCH_NONE) {
      value = this.latchedCount;
      msb = this.countLatched == LATCH_MSB;
      this.countLatched = this.countLatched == LATCH_WORD ? LATCH_MSB : LATCH_NONE;
      // QEMU: latched reads leave the read flip-flop alone.
      if (rw == RW_WORD && !this.compatQemu) this.readMsbNext = !msb;
    } else {
      value = this.liveCount();
      if (rw == RW_WORD) {
        msb = this.readMsbNext;
        this.readMsbNext = !msb;
      } else {
        msb = rw == RW_MSB;
      }
    }
    return msb ? (value >>> 8) & 0xff : value & 0xff;
  }

  /** Whether a read of the data port now changes state beyond the counting element. */
  readChangesState(): bool {
    return this.statusLatched || this.countLatched != LATCH_NONE || this.rwMode == RW_WORD;
  }

  /** The register fields, without values that mean nothing in the current state. */
  describeRegisters(io: FieldIO): void {
    this.mode = io.field("mode", this.mode, 7);
    this.rwMode = io.field("rwMode", this.rwMode, 3);
    this.bcd = io.flag("bcd", this.bcd);
    this.countRegister = io.field("countRegister", this.countRegister, 0xffff);
    this.countsWritten = io.field("countsWritten", this.countsWritten, 2);
    this.writeMsbNext = io.flag("writeMsbNext", this.writeMsbNext);
    // A held LSB means nothing once its count is complete: the next first byte replaces it.
    this.heldLsb = io.field("heldLsb", this.writeMsbNext ? this.heldLsb : 0, 0xff);
    this.readMsbNext = io.flag("readMsbNext", this.readMsbNext);
    this.countLatched = io.field("countLatched", this.countLatched, LATCH_WORD);
    this.statusLatched = io.flag("statusLatched", this.statusLatched);
  }

  describeLatchedValues(io: FieldIO): void {
    io.field("latchedCount", this.countLatched != LATCH_NONE ? this.latchedCount : 0);
    io.field("latchedStatus", this.statusLatched ? this.latchedStatus : 0);
  }

  copyRegisters(from: PitChannelRegisters): void {
    this.compatQemu = from.compatQemu;
    this.mode = from.mode;
    this.rwMode = from.rwMode;
    this.bcd = from.bcd;
    this.countRegister = from.countRegister;
    this.countsWritten = from.countsWritten;
    this.writeMsbNext = from.writeMsbNext;
    this.heldLsb = from.heldLsb;
    this.readMsbNext = from.readMsbNext;
    this.countLatched = from.countLatched;
    this.latchedCount = from.latchedCount;
    this.statusLatched = from.statusLatched;
    this.latchedStatus = from.latchedStatus;
  }
}

/** Whether a control-port write only latches (counter latch or read-back): no counting changes. */
@inline
export function pitCommandOnlyLatches(value: u32): bool {
  return value >>> 6 == 3 || (value & 0x30) == 0;
}

/**
 * The one channel a control-port write addresses (bits 7:6: a control word or counter latch), or
 * -1 for a read-back command (select 3), which may address any of them.
 */
@inline
export function pitCommandChannel(value: u32): i32 {
  const select = <i32>(value >>> 6);
  return select == 3 ? -1 : select;
}

/** A write to the control port: control word, counter latch, or read-back command. */
export function pitCommand<T extends PitChannelRegisters>(channels: StaticArray<T>, value: u32): void {
  const select = pitCommandChannel(value);
  if (select >= 0) {
    const ch = unchecked(channels[select]);
    if ((value & 0x30) == 0) ch.latchCount();
    else ch.control(value);
    return;
  }
  // Read-back: bit 5 clear latches counts, bit 4 clear latches status, bits 1–3 pick channels.
  for (let i = 0; i < PIT_CHANNELS; i++) {
    if ((value & (2 << <u32>i)) == 0) continue;
    const ch = unchecked(channels[i]);
    if ((value & 0x20) == 0) ch.latchCount();
    if ((value & 0x10) == 0) ch.latchStatus();
  }
}

// ---- BCD ------------------------------------------------------------------------------------

/** The decimal value of four BCD digits; a non-decimal digit counts at its nibble value. */
export function fromBcd(raw: u32): u32 {
  return ((raw >>> 12) & 15) * 1000 + ((raw >>> 8) & 15) * 100 + ((raw >>> 4) & 15) * 10 + (raw & 15);
}

export function toBcd(value: u32): u32 {
  return ((value / 1000) % 10 << 12) | ((value / 100) % 10 << 8) | ((value / 10) % 10 << 4) | (value % 10);
}

/** How many values the counting element takes: 2^16, or 10^4 in BCD. */
@inline
export function countModulus(bcd: bool): i64 {
  return bcd ? 10000 : 0x10000;
}

/** The value 16 raw count bits stand for in the counting base (binary or BCD). */
export function countValue(raw: u32, bcd: bool): i64 {
  return bcd ? <i64>fromBcd(raw) % countModulus(true) : <i64>raw;
}

/** Counting steps from a count register value to terminal count: 0 means the full modulus. */
export function countSteps(raw: u32, bcd: bool): i64 {
  const v = countValue(raw, bcd);
  return v == 0 ? countModulus(bcd) : v;
}

/** Modes 6 and 7 behave as 2 and 3. */
@inline
export function effectiveMode(mode: u32): u32 {
  return mode >= 6 ? mode - 4 : mode;
}
