// The 8254 programmable interval timer (Intel 82C54) and the PC's port 0x61 (NMI status and
// control, which holds channel 2's gate and output and the speaker enable). Channel 0's OUT
// drives ISA line 0 through the board; channel 2's gate is port 0x61 bit 0.
//
// Port 0x61 (datasheet model, after the PCH's NMI_SC register):
//   bit 0 gate 2, bit 1 speaker data enable, bits 2–3 SERR#/IOCHK# NMI enables: read/write;
//   bit 4 refresh toggle: flips every 18 PIT clocks (15.08 µs, the PC/AT refresh period);
//   bit 5 OUT2; bits 6–7 (SERR#/IOCHK# NMI status) read 0: nothing here raises them.
// Reads of the control port 0x43 return 0xff: the 8254 has no readable register there and
// its data bus floats.
//
// QEMU 7.2 (hw/audio/pcspk.c, i8254.c) with compatQemu: port 0x61 bits 2–3 are not stored and
// read 0, bit 4 toggles on every read of port 0x61 (not with time), and 0x43 reads 0.

import { pitEdgesAt } from "../common/clock";
import { FieldIO } from "../common/fields";
import { PIT_CHANNELS, PIT_CONTROL_PORT, pitCommand, pitCommandChannel } from "../registers/pit";
import { DatasheetCounter } from "./pit-datasheet";
import { PitCounter } from "./pit-counter";
import { QemuCounter } from "./pit-qemu";

export const PORT_61: u32 = 0x61;
const SPEAKER: u32 = 0x02;
const NMI_ENABLES: u32 = 0x0c;
const REFRESH: u32 = 0x10;
const OUT2: u32 = 0x20;
const REFRESH_HALF_PERIOD_EDGES: i64 = 18;

export class Pit8254 {
  private datasheetChannels: StaticArray<PitCounter> = [new DatasheetCounter(), new DatasheetCounter(), new DatasheetCounter()];
  private qemuChannels: StaticArray<PitCounter> = [new QemuCounter(), new QemuCounter(), new QemuCounter()];
  private channels: StaticArray<PitCounter> = this.datasheetChannels;
  private compat: bool = false;
  private now: i64 = 0;
  private edge: i64 = 0;
  private speaker: bool = false;
  private nmiEnables: u32 = 0;
  /** QEMU: the refresh bit, flipped by each read of port 0x61. */
  private refreshToggle: u32 = 0;

  /** Selects QEMU 7.2's behaviour; the board sets it right after reset(). */
  get compatQemu(): bool {
    return this.compat;
  }
  set compatQemu(on: bool) {
    this.compat = on;
    this.channels = on ? this.qemuChannels : this.datasheetChannels;
  }

  reset(): void {
    this.now = 0;
    this.edge = 0;
    this.speaker = false;
    this.nmiEnables = 0;
    this.refreshToggle = 0;
    for (let i = 0; i < PIT_CHANNELS; i++) {
      unchecked(this.datasheetChannels[i]).resetCounter(i);
      unchecked(this.qemuChannels[i]).resetCounter(i);
    }
  }

  /** Moves the PIT's notion of time forward to `now` (never back). */
  @inline
  private advance(now: i64): void {
    if (now > this.now) {
      this.now = now;
      this.edge = pitEdgesAt(now);
    }
  }

  @inline
  private channel(i: i32): PitCounter {
    const ch = unchecked(this.channels[i]);
    ch.syncTo(this.now, this.edge);
    return ch;
  }

  syncTo(now: i64): void {
    this.advance(now);
    for (let i = 0; i < PIT_CHANNELS; i++) this.channel(i);
  }

  ioWrite(port: u32, value: u32, now: i64): void {
    this.advance(now);
    if (port == PORT_61) {
      this.speaker = (value & SPEAKER) != 0;
      if (!this.compat) this.nmiEnables = value & NMI_ENABLES;
      this.channel(2).setGate((value & 1) != 0);
    } else if (port == PIT_CONTROL_PORT) {
      // A control word or latch touches one channel; only a read-back may touch all three.
      const channel = pitCommandChannel(value);
      if (channel < 0) this.syncTo(now);
      else this.channel(channel);
      pitCommand(this.channels, value);
    } else {
      this.channel(<i32>(port & 3)).writeData(value);
    }
  }

  @inline
  ioRead(port: u32, now: i64): u32 {
    this.advance(now);
    if (port == PORT_61) return this.readPort61();
    if (port == PIT_CONTROL_PORT) return this.compat ? 0 : 0xff;
    return this.channel(<i32>(port & 3)).readData();
  }

  private readPort61(): u32 {
    const ch2 = this.channel(2);
    let refresh: u32;
    if (this.compat) {
      this.refreshToggle ^= REFRESH;
      refresh = this.refreshToggle;
    } else {
      refresh = ((this.edge / REFRESH_HALF_PERIOD_EDGES) & 1) != 0 ? REFRESH : 0;
    }
    return (ch2.gate ? 1 : 0) | (this.speaker ? SPEAKER : 0) | this.nmiEnables | refresh | (ch2.out() ? OUT2 : 0);
  }

  /** Time of the next possible OUT0 change after the last sync or access; clock.NEVER if none. */
  nextOut0Change(): i64 {
    return this.channel(0).nextOutChange();
  }

  out0(): bool {
    return this.channel(0).out();
  }

  inspect(io: FieldIO): void {
    this.syncTo(this.now);
    io.begin("channels");
    for (let i = 0; i < PIT_CHANNELS; i++) {
      io.beginIndex(i);
      unchecked(this.channels[i]).describe(io);
      io.end();
    }
    io.end();
    io.begin("port61");
    io.flag("speaker", this.speaker);
    io.field("nmiEnables", this.nmiEnables);
    io.field("refreshToggle", this.refreshToggle);
    io.end();
    io.flag("out0", this.out0());
    io.wide("nextOut0Change", <u64>this.nextOut0Change());
  }
}
