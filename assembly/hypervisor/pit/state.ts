// Capture and reconstruction of the 8254 and port 0x61, through the hardware bus and the shadow.
// docs/hypervisor.md (Capture, Reconstruction, What cannot be rebuilt exactly) explains both.

import { NEVER } from "../../common/clock";
import { FieldIO } from "../../common/fields";
import { PIT_CHANNELS, PIT_CONTROL_PORT, LATCH_MSB, LATCH_NONE, PitChannelRegisters, RW_NONE, RW_WORD, counterPort } from "../../registers/pit";
import { HardwareBus } from "../bus";
import { DatasheetPlanner } from "./plan";
import { QemuPlanner } from "./plan-qemu";
import { PitShadow, chipReadMsbNext } from "./shadow";
import { ChannelPlanner, Timeline } from "./timeline";

const PORT_61: u32 = 0x61;
const REFRESH: u32 = 0x10;
/** Port 0x61 bits a write can set back: gate 2, speaker, and (datasheet) the NMI enables. */
const PORT_61_WRITABLE: u32 = 0x0f;
const QEMU_PORT_61_WRITABLE: u32 = 0x03;

export class PitRecord {
  /** T, the capture time; the destination resumes at it. */
  time: i64 = 0;
  /** Port 0x61 as first read at T (QEMU: that read flipped the refresh bit). */
  port61: u32 = 0;
  /** Per channel, read back at T: the status byte and the counting element's bytes. */
  status: StaticArray<u32> = new StaticArray<u32>(PIT_CHANNELS);
  count: StaticArray<u32> = new StaticArray<u32>(PIT_CHANNELS);
  shadow: PitShadow = new PitShadow();

  describe(io: FieldIO): void {
    this.time = io.time("time", this.time);
    this.port61 = io.field("port61", this.port61, 0xff);
    io.begin("channels");
    for (let i = 0; i < PIT_CHANNELS; i++) {
      io.beginIndex(i);
      unchecked((this.status[i] = io.field("status", unchecked(this.status[i]), 0xff)));
      unchecked((this.count[i] = io.field("count", unchecked(this.count[i]), 0xffff)));
      io.end();
    }
    io.end();
    io.begin("shadow");
    this.shadow.describe(io);
    io.end();
  }
}

/**
 * With the clock stopped at T, per channel: whatever the guest left latched is read out and
 * handed to the shadow, which answers the guest's reads of it from then on (on the source and,
 * through the record, on the destination); then a read-back gives OUT, NULL COUNT and the
 * counting element. Every access also runs through a chip-side copy of the shadow, so the read
 * flip-flop is put back where the guest will find it once the held latches are read.
 */
export function capturePit(bus: HardwareBus, shadow: PitShadow, out: PitRecord): void {
  const compat = bus.config().compatQemu;
  out.time = bus.now();
  out.shadow.copyFrom(shadow);
  out.shadow.compatQemu = compat;
  out.port61 = bus.inb(PORT_61);
  // QEMU flips the refresh bit on every read: a second read flips it back.
  if (compat) bus.inb(PORT_61);
  const mirror = chipView(out.shadow);
  for (let i = 0; i < PIT_CHANNELS; i++) {
    takeOverLatches(bus, mirror, i, out.shadow);
    readBack(bus, mirror, i, out);
    restoreReadState(bus, mirror, i, unchecked(out.shadow.channels[i]));
  }
  // The source's hypervisor holds what it read out, as the destination's will.
  shadow.copyHeld(out.shadow);
}

/**
 * On a freshly reset chip whose clock starts RECONSTRUCT_WINDOW_NS before T: a timeline of
 * control words, count writes and gate changes per channel (plan.ts for the datasheet model,
 * plan-qemu.ts for QEMU's), then at T the flip-flops with partial operations, then port 0x61.
 * The destination's shadow sees every access, so it mirrors the rebuilt chip; then it takes
 * over the latches the record holds.
 */
export function reconstructPit(bus: HardwareBus, rec: PitRecord, shadow: PitShadow): void {
  const compat = bus.config().compatQemu;
  shadow.compatQemu = compat;
  shadow.reset();
  const timeline = new Timeline();
  const start = bus.now();
  const gate2 = (rec.port61 & 1) != 0;
  const planner: ChannelPlanner = compat
    ? new QemuPlanner(timeline, start, rec.time, rec.port61, rec.shadow)
    : new DatasheetPlanner(timeline, start, rec.time, rec.port61);
  for (let i = 0; i < PIT_CHANNELS; i++) {
    planner.plan(i, unchecked(rec.shadow.channels[i]), unchecked(rec.status[i]), unchecked(rec.count[i]), i != 2 || gate2);
  }
  timeline.run(bus, shadow, rec.time);
  bus.advanceTo(rec.time);
  for (let i = 0; i < PIT_CHANNELS; i++) restoreReadState(bus, shadow, i, unchecked(rec.shadow.channels[i]));
  const port61 = rec.port61 & (compat ? QEMU_PORT_61_WRITABLE : PORT_61_WRITABLE);
  // Gate 2 rose within this PIT clock on the source: the same rising edge triggers here.
  const trigger = (rec.port61 & 1) != 0 && rec.shadow.gate2TriggerPending(rec.time);
  if (trigger) bus.outb(PORT_61, port61 & ~1);
  bus.outb(PORT_61, port61);
  shadow.gate2RoseAt = trigger ? rec.time : NEVER;
  // A fresh QEMU speaker's refresh bit is clear; the source's stood at the opposite of what
  // its first capture read returned.
  if (compat && (rec.port61 & REFRESH) == 0) bus.inb(PORT_61);
  shadow.copyRestarts(rec.shadow);
  shadow.copyHeld(rec.shadow);
  // The shadow has seen every access of the rebuild, so it now mirrors this chip: the record's
  // registers wherever they could be put back, and what was written where they could not.
}

// ---- per channel ----------------------------------------------------------------------------

function read(bus: HardwareBus, mirror: PitShadow, port: u32): u32 {
  const v = bus.inb(port);
  mirror.observeRead(port, v);
  return v;
}

function write(bus: HardwareBus, mirror: PitShadow, port: u32, value: u32): void {
  bus.outb(port, value);
  mirror.now = bus.now();
  mirror.observeWrite(port, value);
}

/** The chip as `shadow` says it stands: without the latches the shadow holds itself. */
function chipView(shadow: PitShadow): PitShadow {
  const mirror = new PitShadow();
  mirror.copyFrom(shadow);
  for (let i = 0; i < PIT_CHANNELS; i++) {
    const ch = unchecked(mirror.channels[i]);
    if (unchecked(shadow.heldCount[i])) {
      ch.readMsbNext = chipReadMsbNext(ch);
      ch.countLatched = LATCH_NONE;
    }
    if (unchecked(shadow.heldStatus[i])) ch.statusLatched = false;
    unchecked((mirror.heldCount[i] = false));
    unchecked((mirror.heldStatus[i] = false));
  }
  return mirror;
}

/** Reads out the latches channel `i` holds in the chip and hands them to `shadow` to hold. */
function takeOverLatches(bus: HardwareBus, mirror: PitShadow, i: i32, shadow: PitShadow): void {
  const port = counterPort(i);
  const ch = unchecked(mirror.channels[i]);
  let status: u32 = 0;
  let count: u32 = 0;
  if (ch.statusLatched) status = read(bus, mirror, port);
  while (ch.countLatched != LATCH_NONE) {
    const msb = ch.countLatched == LATCH_MSB;
    const b = read(bus, mirror, port);
    count = msb ? (count & 0xff) | (b << 8) : (count & 0xff00) | b;
  }
  shadow.holdLatches(i, count, status);
}

/** Reads channel `i`'s status and counting element at T into `out` (no latch is pending). */
function readBack(bus: HardwareBus, mirror: PitShadow, i: i32, out: PitRecord): void {
  const port = counterPort(i);
  const ch = unchecked(mirror.channels[i]);
  write(bus, mirror, PIT_CONTROL_PORT, 0xc0 | (2 << <u32>i));
  unchecked((out.status[i] = read(bus, mirror, port)));
  let count: u32 = 0;
  if (ch.rwMode == RW_NONE) {
    // A never-programmed channel latches nothing; its live reads return the low byte.
    count = read(bus, mirror, port);
  } else {
    // With the read flip-flop half way (datasheet), a latch reads its MSB only: latch again.
    let seen: u32 = 0;
    const wanted: u32 = ch.rwMode == RW_WORD ? 3 : ch.rwMode;
    while (true) {
      while (ch.countLatched != LATCH_NONE) {
        const msb = ch.countLatched == LATCH_MSB;
        const b = read(bus, mirror, port);
        count = msb ? (count & 0xff) | (b << 8) : (count & 0xff00) | b;
        seen |= msb ? 2 : 1;
      }
      if ((seen & wanted) == wanted) break;
      write(bus, mirror, PIT_CONTROL_PORT, <u32>i << 6);
    }
  }
  unchecked((out.count[i] = count));
}

/**
 * Brings channel `i`'s read and write flip-flops (tracked in `mirror`, which holds no latch)
 * to those of `target`, whose latches the shadow holds, at the current time: a live read
 * toggles the read flip-flop to where the guest will find it once those latches are read,
 * the held LSB is written back.
 */
function restoreReadState(bus: HardwareBus, mirror: PitShadow, i: i32, target: PitChannelRegisters): void {
  const port = counterPort(i);
  const ch = unchecked(mirror.channels[i]);
  if (ch.rwMode == RW_WORD && ch.readMsbNext != chipReadMsbNext(target)) read(bus, mirror, port);
  if (target.writeMsbNext && !ch.writeMsbNext) write(bus, mirror, port, target.heldLsb);
}
