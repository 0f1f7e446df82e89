// What a local APIC reconstruction leaves for after the resume. The timer was rebuilt by
// loading the source's *current* count, so until the first expiry the hardware holds that
// count in its initial-count register: a periodic timer would reload it. At the first expiry,
// if the timer is periodic by then, this fixup writes the true initial count (the hardware
// reloads at that instant, so the write is exact when it falls on a whole nanosecond, i.e.
// when a divided period is a whole number of ns). Until then, or for a one-shot timer until
// the guest writes the register, it answers guest reads of the initial count from the record.
// It also answers reads of ICR low when that command could not be rewritten without sending
// it again. When the source measured the timer's phase (apic/timer-phase.ts), the count loaded at
// the resume is restarted one lower at the moment the source's count changed, so every later
// decrement and expiry falls where the source's would. A count of 1 cannot go one lower (0
// stops the timer): the hardware instead counts down to the very expiry on the undivided bus
// clock, while this fixup answers the count and divide configuration as the source's read.

import { NEVER } from "../../common/clock";
import {
  DIVIDE_BY_1, ICR_SHORTHAND_SHIFT, LVT_MASKED, REG_CURRENT_COUNT, REG_DIVIDE, REG_ICR_HIGH, REG_ICR_LOW, REG_INITIAL_COUNT, REG_LVT_FIRST,
  Shorthand, TimerMode, VECTOR_MASK, divisorOf, ticksToExpiry, timerModeOf, timerTickTime,
} from "../../registers/lapic";
import { HardwareBus } from "../bus";
import { LapicPort, lapicEnabled, lapicPage, qemuIpiReachesSelf, writeIcrQuietly } from "./access";
import { PendingFixup } from "../fixup";

const INDEX_INITIAL_COUNT: u32 = REG_INITIAL_COUNT >>> 4;
const INDEX_ICR_LOW: u32 = REG_ICR_LOW >>> 4;
const INDEX_ICR_HIGH: u32 = REG_ICR_HIGH >>> 4;
const INDEX_DIVIDE: u32 = REG_DIVIDE >>> 4;
const INDEX_CURRENT_COUNT: u32 = REG_CURRENT_COUNT >>> 4;

export class ApicTimerFixup extends PendingFixup {
  /** The source's initial count, answered for reads while `emulateInitialCount`. */
  initialCount: u32 = 0;
  emulateInitialCount: bool = false;
  /** The hardware's first expiry, when a periodic timer needs the true initial count; NEVER if not. */
  rewriteAt: i64 = NEVER;
  /**
   * QEMU periodic timer captured at count 0 (one period before its expiry): a count of 0
   * cannot be loaded, so the expiry's interrupt is raised here (self-IPI) at rewriteAt.
   */
  raiseAtRewrite: bool = false;
  /** When the source's count changed (its phase), if the count must be restarted then; else NEVER. */
  rephaseAt: i64 = NEVER;
  /** The count loaded at the resume, which the source's count left at rephaseAt. */
  rephaseCount: u32 = 0;
  /** During a countdown to the expiry: the divide configuration to restore at its end; else -1. */
  countdownDivide: i32 = -1;
  /** QEMU: when the source's count of 1 became 0, a period before its expiry; else NEVER. */
  countdownZeroAt: i64 = NEVER;
  /** When the hardware starts counting down `countdownLoad` bus clocks; NEVER once it has. */
  countdownLoadAt: i64 = NEVER;
  countdownLoad: u32 = 0;
  /** ICR low as the guest last wrote it, answered for reads while `emulateIcrLow`. */
  icrLow: u32 = 0;
  emulateIcrLow: bool = false;
  /** An x2APIC's 32-bit ICR destination, answered for reads while `emulateIcrHigh`. */
  icrHigh: u32 = 0;
  emulateIcrHigh: bool = false;

  constructor(private bus: HardwareBus) {
    super();
  }

  active(): bool {
    return this.emulateInitialCount || this.emulateIcrLow || this.emulateIcrHigh || this.rewriteAt != NEVER || this.rephaseAt != NEVER;
  }

  deadline(): i64 {
    return min(min(this.rephaseAt, this.countdownLoadAt), this.rewriteAt);
  }

  fire(bus: HardwareBus): void {
    const now = bus.now();
    if (this.rephaseAt <= now) {
      this.rephase(bus);
      return;
    }
    if (this.countdownLoadAt <= now) {
      this.startCountdown(bus);
      return;
    }
    this.rewriteAt = NEVER;
    const lapic = this.lapicOrStop(bus);
    if (!lapic) return;
    const lvt = lapic.read(REG_LVT_FIRST);
    const mode = timerModeOf(lvt, bus.config().compatQemu);
    if (this.countdownDivide >= 0) {
      this.endCountdown(lapic, mode);
      return;
    }
    // A guest that left periodic mode meanwhile keeps the count it has; reads stay emulated.
    if (mode != TimerMode.Periodic) return;
    if (this.raiseAtRewrite) {
      if ((lvt & LVT_MASKED) == 0) this.selfIpiKeepingIcr(lapic, lvt & VECTOR_MASK);
    } else if (lapic.read(REG_CURRENT_COUNT) == 0) {
      return; // the guest disarmed the count (a detour through TSC-deadline mode)
    }
    lapic.write(REG_INITIAL_COUNT, this.initialCount);
    this.emulateInitialCount = false;
  }

  /**
   * The source's count changes now: the count goes one lower and a fresh divided period starts
   * here, as on the source. The true initial count then waits for the (earlier) first expiry.
   */
  private rephase(bus: HardwareBus): void {
    this.rephaseAt = NEVER;
    const lapic = this.lapicOrStop(bus);
    if (!lapic) return;
    // A timer the guest disarmed (a detour through TSC-deadline mode) has nothing to restart.
    if (lapic.read(REG_CURRENT_COUNT) != this.rephaseCount) return;
    const count = this.rephaseCount - 1;
    lapic.write(REG_INITIAL_COUNT, count);
    this.emulateInitialCount = true;
    const c = bus.config();
    const divisor = divisorOf(lapic.read(REG_DIVIDE));
    this.rewriteAt = timerTickTime(bus.now(), ticksToExpiry(<i64>count, c.compatQemu), divisor, c.apicBusHz);
  }

  private startCountdown(bus: HardwareBus): void {
    this.countdownLoadAt = NEVER;
    const lapic = this.lapicOrStop(bus);
    if (!lapic) return;
    lapic.write(REG_DIVIDE, DIVIDE_BY_1);
    lapic.write(REG_INITIAL_COUNT, this.countdownLoad);
  }

  /**
   * The countdown expired as the source's count did: the divider goes back, and a periodic
   * timer reloads the true initial count from this instant; a one-shot one stays at 0.
   */
  private endCountdown(lapic: LapicPort, mode: TimerMode): void {
    lapic.write(REG_DIVIDE, <u32>this.countdownDivide);
    this.countdownDivide = -1;
    this.countdownZeroAt = NEVER;
    if (mode == TimerMode.Periodic) {
      lapic.write(REG_INITIAL_COUNT, this.initialCount);
      this.emulateInitialCount = false;
    } else if (mode == TimerMode.OneShot) {
      lapic.write(REG_INITIAL_COUNT, 0);
    }
  }

  /**
   * A self-IPI (QEMU mode only), after which the ICR reads as before: rewritten if that sends
   * nothing here, else answered by this fixup until the guest writes it.
   */
  private selfIpiKeepingIcr(lapic: LapicPort, vector: u32): void {
    const low = lapic.read(REG_ICR_LOW);
    const high = lapic.read(REG_ICR_HIGH);
    lapic.write(REG_ICR_LOW, (<u32>Shorthand.Self << ICR_SHORTHAND_SHIFT) | vector);
    if (this.emulateIcrLow) return;
    if (qemuIpiReachesSelf(low)) {
      this.icrLow = low;
      this.emulateIcrLow = true;
    } else {
      writeIcrQuietly(lapic, low, high);
    }
  }

  emulateRead(offset: u32): i64 {
    const index = (offset >>> 4) & 0xff;
    if (index == INDEX_INITIAL_COUNT && this.emulateInitialCount) return this.whileEnabled(this.initialCount);
    if (index == INDEX_ICR_LOW && this.emulateIcrLow) return this.whileEnabled(this.icrLow);
    if (index == INDEX_ICR_HIGH && this.emulateIcrHigh) return this.whileEnabled(this.icrHigh);
    if (this.countdownDivide >= 0) {
      if (index == INDEX_DIVIDE) return this.whileEnabled(<u32>this.countdownDivide);
      if (index == INDEX_CURRENT_COUNT) return this.whileEnabled(this.bus.now() < this.countdownZeroAt ? 1 : 0);
    }
    return -1;
  }

  /** A globally disabled APIC has no page to read: the fixup is over. */
  private whileEnabled(value: u32): i64 {
    if (lapicEnabled(this.bus)) return <i64>value;
    this.stop();
    return -1;
  }

  guestWrote(offset: u32, value: u32): void {
    const index = (offset >>> 4) & 0xff;
    if (index == INDEX_ICR_LOW) {
      this.emulateIcrLow = false;
      this.emulateIcrHigh = false;
    } else if (index == INDEX_ICR_HIGH) {
      this.emulateIcrHigh = false;
    } else if (index == INDEX_INITIAL_COUNT) {
      const lapic = new LapicPort(this.bus, lapicPage(this.bus));
      // In TSC-deadline mode the hardware ignored the write.
      if (timerModeOf(lapic.read(REG_LVT_FIRST), this.bus.config().compatQemu) == TimerMode.TscDeadline) return;
      // The guest's count was loaded on the undivided clock: the divider goes back at once
      // (the count is kept and its first period starts now, as the guest's load does).
      if (this.countdownDivide >= 0) lapic.write(REG_DIVIDE, <u32>this.countdownDivide);
      this.countdownDivide = -1;
      this.countdownLoadAt = NEVER;
      this.emulateInitialCount = false;
      this.rewriteAt = NEVER;
      this.rephaseAt = NEVER;
    } else if (index == INDEX_DIVIDE) {
      // A new divisor starts a fresh period (datasheet) or re-derives the count (QEMU): on
      // both sides alike, so the source's old phase no longer matters.
      this.rephaseAt = NEVER;
      if (this.countdownDivide >= 0) this.leaveCountdown();
      if (this.rewriteAt != NEVER) this.rescheduleAfterDivide(value);
    }
  }

  /**
   * The guest changed the divider during a countdown. The source kept its count of 1 and
   * started a fresh period (datasheet): so does the hardware, loaded with 1 now. QEMU's count
   * re-derives from its load time instead (an exception of QEMU mode, apic/state.ts).
   */
  private leaveCountdown(): void {
    this.countdownDivide = -1;
    this.countdownZeroAt = NEVER;
    this.countdownLoadAt = NEVER;
    if (this.bus.config().compatQemu) return;
    new LapicPort(this.bus, lapicPage(this.bus)).write(REG_INITIAL_COUNT, 1);
  }

  /**
   * A new divisor moves the first expiry. The datasheet counter keeps its count and starts a
   * fresh period at the write, so the expiry is predictable. QEMU's count jumps instead and
   * its period phase is not visible: the rewrite is abandoned (reads stay emulated).
   */
  private rescheduleAfterDivide(divideConfig: u32): void {
    const c = this.bus.config();
    if (c.compatQemu) {
      this.rewriteAt = NEVER;
      this.raiseAtRewrite = false;
      return;
    }
    const lapic = new LapicPort(this.bus, lapicPage(this.bus));
    const count = lapic.read(REG_CURRENT_COUNT);
    this.rewriteAt = count == 0 ? NEVER : timerTickTime(this.bus.now(), <i64>count, divisorOf(divideConfig), c.apicBusHz);
  }

  /** The local APIC's registers, or null (and the fixup is over) if it is globally disabled. */
  private lapicOrStop(bus: HardwareBus): LapicPort | null {
    if (lapicEnabled(bus)) return new LapicPort(bus, lapicPage(bus));
    this.stop();
    return null;
  }

  private stop(): void {
    this.emulateInitialCount = false;
    this.emulateIcrLow = false;
    this.rewriteAt = NEVER;
    this.rephaseAt = NEVER;
    this.countdownDivide = -1;
    this.countdownLoadAt = NEVER;
  }
}
