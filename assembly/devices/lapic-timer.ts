// The local APIC timer: a 32-bit down-counter on the divided bus clock (one-shot or periodic)
// or a comparator on the TSC (TSC-deadline mode). Nothing here runs per period: the counter
// is a formula of time, and only the next expiry is kept as an event (spec "Clocks").
//
// Datasheet counter: loading count I at t0 reads I; each full divided period from t0 takes
// one off; reaching 0 is the expiry (periodic reloads I at that instant, so the period is I).
// QEMU 7.2 (compat): it reads I - d for d periods since the load and expires one period after
// reading 0, so its period is I + 1 and its count touches 0.

import { FieldIO } from "../common/fields";
import { NEVER, edgeTime } from "../common/clock";
import {
  TimerMode, divisorOf, ticksToExpiry, timerTickTime, timerTicksBetween,
} from "../registers/lapic";

/** Deadlines beyond this many TSC periods per hertz lie centuries ahead: "never". */
const FAR_DEADLINE_SECONDS: u64 = 9_000_000_000;

export class ApicTimer {
  compatQemu: bool = false;
  busHz: i64 = 1_000_000_000;
  tscHz: i64 = 1_000_000_000;

  mode: TimerMode = TimerMode.OneShot;
  masked: bool = true;
  divideConfig: u32 = 0;
  initialCount: u32 = 0;
  /** IA32_TSC_DEADLINE while armed, else 0. */
  deadline: u64 = 0;
  /** Time of the next expiry that must deliver an interrupt; NEVER if none. */
  nextEvent: i64 = NEVER;

  private divisor: i64 = 2;
  /** Time the divided periods are counted from: the last load (or rebase). */
  private epoch: i64 = 0;
  /** Divided period, counted from epoch, of the next expiry. */
  private expiryTick: i64 = 0;
  /** A count is running towards an expiry. */
  private armed: bool = false;

  reset(): void {
    this.mode = TimerMode.OneShot;
    this.masked = true;
    this.divideConfig = 0;
    this.divisor = divisorOf(0);
    this.initialCount = 0;
    this.deadline = 0;
    this.epoch = 0;
    this.expiryTick = 0;
    this.armed = false;
    this.nextEvent = NEVER;
  }

  currentCount(now: i64): u32 {
    const k = this.ticksAt(now);
    const initial = <i64>this.initialCount;
    if (this.compatQemu) {
      // QEMU derives the count from the load time alone, armed or not.
      if (this.mode == TimerMode.Periodic) return <u32>(initial - k % (initial + 1));
      return k >= initial ? 0 : <u32>(initial - k);
    }
    if (this.mode == TimerMode.TscDeadline || !this.armed) return 0;
    let expiry = this.expiryTick;
    if (k >= expiry) {
      if (this.mode != TimerMode.Periodic) return 0;
      expiry += ((k - expiry) / initial + 1) * initial;
    }
    return <u32>(expiry - k);
  }

  /** IA32_TSC_DEADLINE as software reads it: 0 once it fired (even masked) or when not armed. */
  readDeadline(now: i64): u64 {
    if (this.compatQemu || this.mode != TimerMode.TscDeadline || this.deadline == 0) return 0;
    return this.deadlineTime() <= now ? 0 : this.deadline;
  }

  /** Writes IA32_TSC_DEADLINE; true if the deadline has already passed and fires now. */
  writeDeadline(value: u64, now: i64): bool {
    // QEMU 7.2 has no TSC-deadline timer; outside that mode the SDM ignores the write.
    if (this.compatQemu || this.mode != TimerMode.TscDeadline) return false;
    this.deadline = value;
    if (value != 0 && this.deadlineTime() <= now) {
      this.deadline = 0;
      this.schedule();
      return true;
    }
    this.schedule();
    return false;
  }

  writeInitialCount(value: u32, now: i64): void {
    // SDM 10.5.4.1: in TSC-deadline mode the initial-count register ignores writes.
    if (this.mode == TimerMode.TscDeadline && !this.compatQemu) return;
    this.initialCount = value;
    this.epoch = now;
    this.expiryTick = ticksToExpiry(<i64>value, this.compatQemu);
    this.armed = value != 0;
    this.schedule();
  }

  writeDivideConfig(value: u32, now: i64): void {
    this.divideConfig = value & 0xb;
    if (this.compatQemu) {
      // QEMU: the count is re-derived from the load time with the new divisor (it jumps).
      this.divisor = divisorOf(this.divideConfig);
      this.followQemu(now);
    } else {
      // The SDM leaves this open; here the count keeps its value and a fresh period starts.
      const count = this.currentCount(now);
      this.divisor = divisorOf(this.divideConfig);
      this.epoch = now;
      this.expiryTick = <i64>count;
      this.armed = this.armed && count != 0 && this.mode != TimerMode.TscDeadline;
    }
    this.schedule();
  }

  /** A write of the LVT timer entry, after its value is final. */
  writeLvt(mode: TimerMode, masked: bool, now: i64): void {
    if (this.compatQemu) {
      this.mode = mode;
      this.masked = masked;
      this.followQemu(now);
    } else {
      this.settle(now);
      // SDM 10.5.4.1: moving into or out of TSC-deadline mode disarms the timer.
      if ((mode == TimerMode.TscDeadline) != (this.mode == TimerMode.TscDeadline)) {
        this.armed = false;
        this.deadline = 0;
      }
      this.mode = mode;
      this.masked = masked;
    }
    this.schedule();
  }

  /** The expiry at nextEvent (<= now) happened: move to the first expiry after now. */
  expire(now: i64): void {
    if (this.compatQemu) this.followQemu(now);
    else if (this.mode == TimerMode.TscDeadline) this.deadline = 0;
    else this.settle(now);
    this.schedule();
  }

  /** Expiries up to `now` were absorbed by a request still pending: continue after them. */
  skipPast(now: i64): void {
    if (this.compatQemu) this.followQemu(now);
    else this.settle(now);
    this.schedule();
  }

  private ticksAt(now: i64): i64 {
    return timerTicksBetween(this.epoch, now, this.divisor, this.busHz);
  }

  /** Catches the datasheet counter up with `now` without delivering anything. */
  private settle(now: i64): void {
    if (this.mode == TimerMode.TscDeadline) {
      if (this.deadline != 0 && this.deadlineTime() <= now) this.deadline = 0;
      return;
    }
    if (!this.armed) return;
    const k = this.ticksAt(now);
    if (k < this.expiryTick) return;
    if (this.mode == TimerMode.Periodic) {
      const period = <i64>this.initialCount;
      this.expiryTick += ((k - this.expiryTick) / period + 1) * period;
    } else {
      this.armed = false;
    }
  }

  /**
   * QEMU's apic_next_timer: the next expiry is recomputed from the load time at every timer
   * write and expiry. A one-shot count already at 0 is not armed any more, so a write in its
   * last period before expiry cancels the interrupt, as in QEMU.
   */
  private followQemu(now: i64): void {
    const initial = <i64>this.initialCount;
    const k = this.ticksAt(now);
    if (initial == 0) {
      this.armed = false;
    } else if (this.mode == TimerMode.Periodic) {
      this.armed = true;
      this.expiryTick = (k / (initial + 1) + 1) * (initial + 1);
    } else {
      this.armed = k < initial;
      this.expiryTick = initial + 1;
    }
  }

  private schedule(): void {
    let next = NEVER;
    if (!this.masked) {
      if (this.mode == TimerMode.TscDeadline && !this.compatQemu) {
        if (this.deadline != 0) next = this.deadlineTime();
      } else if (this.armed) {
        next = timerTickTime(this.epoch, this.expiryTick, this.divisor, this.busHz);
      }
    }
    this.nextEvent = next;
  }

  /** The time at which floor(t·tscHz/1e9) reaches the deadline. */
  private deadlineTime(): i64 {
    const d = this.deadline;
    if (d > <u64>i64.MAX_VALUE || d / <u64>this.tscHz >= FAR_DEADLINE_SECONDS) return NEVER;
    return edgeTime(<i64>d, this.tscHz);
  }

  inspect(io: FieldIO): void {
    io.field("initialCount", this.initialCount);
    io.field("divideConfig", this.divideConfig, 0xb);
    io.wide("deadline", this.deadline);
    io.flag("armed", this.armed);
    io.time("epoch", this.epoch);
    io.wide("expiryTick", <u64>this.expiryTick);
    io.wide("nextEvent", <u64>this.nextEvent);
  }
}
