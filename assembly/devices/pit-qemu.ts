// The counting element as QEMU 7.2 models it (hw/timer/i8254.c, i8254_common.c), for
// compatQemu. Its departures from the datasheet, all reproduced here:
// - A count loads at once when written (no next-edge delay) and there is no NULL COUNT (reads 0).
// - The count is computed from the ticks since the write, d = floor((now - t_write) * f / 1e9),
//   not from absolute clock edges; BCD is ignored (counts in binary).
// - Counts: modes 0/1/4/5 count - d (mod 2^16); mode 3 count - (2d mod count), also for odd
//   counts; modes 2, 6 and 7 count - (d mod count).
// - OUT: mode 0 (and 6, 7) d >= count; mode 1 d < count; mode 2 high only when d is a nonzero
//   multiple of count; mode 3 high while d mod count < (count + 1) / 2; modes 4/5 high only
//   when d == count.
// - A control word changes only the mode fields: counting goes on from the last write, OUT is
//   not reset and the IRQ0 output is not updated.
// - The gate matters only on a rising edge in modes 1, 2, 3, 5 (restart from that moment); a
//   low gate never pauses counting or forces OUT.
// - Channel 0 drives IRQ0 from a timer: its level is sampled only at a count write and at each
//   computed transition time (floor of the tick time in ns, or 1 ns later when that is not
//   after the sample), so it can lag or skip OUT as computed here.
// - Power-on: every channel in mode 3 with count 0x10000 loaded at time 0, gate 2 low.

import { NEVER, NS_PER_S, PIT_HZ, ticksIn } from "../common/clock";
import { FieldIO } from "../common/fields";
import { STATUS_OUT } from "../registers/pit";
import { PitCounter } from "./pit-counter";

export class QemuCounter extends PitCounter {
  /** QEMU's `count`: the count last loaded, 1 .. 0x10000. */
  private count: i64 = 0x10000;
  private loadTime: i64 = 0;
  private now: i64 = 0;
  /** Channel 0 only: the IRQ0 level and when QEMU's timer samples it next. */
  private drivesIrq: bool = false;
  private irqLevel: bool = false;
  private irqNext: i64 = NEVER;

  resetCounter(index: i32): void {
    this.resetRegisters();
    this.compatQemu = true;
    this.gate = index != 2;
    this.count = 0x10000;
    this.loadTime = 0;
    this.now = 0;
    this.drivesIrq = index == 0;
    this.irqLevel = false;
    this.irqNext = this.drivesIrq ? this.transitionAfter(0) : NEVER;
  }

  syncTo(now: i64, edge: i64): void {
    this.now = now;
    while (this.irqNext <= now) this.sampleIrq(this.irqNext);
  }

  @inline
  private ticks(t: i64): i64 {
    return ticksIn(t - this.loadTime, PIT_HZ);
  }

  private countAt(t: i64): i64 {
    const d = this.ticks(t);
    const n = this.count;
    const mode = this.mode;
    if (mode == 0 || mode == 1 || mode == 4 || mode == 5) return (n - d) & 0xffff;
    if (mode == 3) return n - ((2 * d) % n);
    return n - (d % n);
  }

  private outAt(t: i64): bool {
    const d = this.ticks(t);
    const n = this.count;
    switch (this.mode) {
      case 1:
        return d < n;
      case 2:
        return d % n == 0 && d != 0;
      case 3:
        return d % n < (n + 1) >> 1;
      case 4:
      case 5:
        return d == n;
      default:
        return d >= n;
    }
  }

  /** QEMU's next transition time after `t`, or NEVER. */
  private transitionAfter(t: i64): i64 {
    const d = this.ticks(t);
    const n = this.count;
    let next: i64;
    switch (this.mode) {
      case 2: {
        const base = d - (d % n);
        next = d == base && d != 0 ? base + n : base + n + 1;
        break;
      }
      case 3: {
        const base = d - (d % n);
        const half = (n + 1) >> 1;
        next = d - base < half ? base + half : base + n;
        break;
      }
      case 4:
      case 5:
        if (d < n) next = n;
        else if (d == n) next = n + 1;
        else return NEVER;
        break;
      default:
        if (d < n) next = n;
        else return NEVER;
    }
    // Tick `next` in ns, rounded down as QEMU's muldiv64 does.
    const time = this.loadTime + (next / PIT_HZ) * NS_PER_S + ((next % PIT_HZ) * NS_PER_S) / PIT_HZ;
    return time <= t ? t + 1 : time;
  }

  private sampleIrq(t: i64): void {
    this.irqNext = this.transitionAfter(t);
    this.irqLevel = this.outAt(t);
  }

  private restart(): void {
    this.loadTime = this.now;
    if (this.drivesIrq) this.sampleIrq(this.now);
  }

  countByteWritten(complete: bool): void {
    if (!complete) return;
    const cr = this.countRegister;
    this.count = cr == 0 ? 0x10000 : <i64>cr;
    this.restart();
  }

  setGate(level: bool): void {
    const mode = this.mode;
    const restarts = mode == 1 || mode == 2 || mode == 3 || mode == 5;
    if (restarts && level && !this.gate) this.restart();
    this.gate = level;
  }

  liveCount(): u32 {
    return <u32>(this.countAt(this.now) & 0xffff);
  }

  outAndNullBits(): u32 {
    return this.outAt(this.now) ? STATUS_OUT : 0;
  }

  /** Channel 0: the IRQ0 level QEMU drives; other channels: OUT as computed. */
  out(): bool {
    return this.drivesIrq ? this.irqLevel : this.outAt(this.now);
  }

  nextOutChange(): i64 {
    return this.drivesIrq ? this.irqNext : this.transitionAfter(this.now);
  }

  describeCounter(io: FieldIO): void {
    io.field("count", <u32>(this.countAt(this.now) & 0xffff));
    io.flag("out", this.outAt(this.now));
    io.flag("nullCount", false);
    io.flag("counting", true);
    io.flag("armed", false);
    io.flag("loadPending", false);
    io.flag("halfOdd", false);
    io.wide("nextOutChange", <u64>this.transitionAfter(this.now));
  }
}
