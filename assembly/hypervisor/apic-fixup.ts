// What a local APIC reconstruction leaves for after the resume. The timer was rebuilt by
// loading the source's *current* count, so until the first expiry the hardware holds that
// count in its initial-count register: a periodic timer would reload it. At the first expiry,
// if the timer is periodic by then, this fixup writes the true initial count (the hardware
// reloads at that instant, so the write is exact when it falls on a whole nanosecond, i.e.
// when a divided period is a whole number of ns). Until then, or for a one-shot timer until
// the guest writes the register, it answers guest reads of the initial count from the record.
// It also answers reads of ICR low when that command could not be rewritten without sending
// it again.

import { NEVER } from "../clock";
import {
  ICR_SHORTHAND_SHIFT, LVT_MASKED, REG_CURRENT_COUNT, REG_DIVIDE, REG_ICR_HIGH, REG_ICR_LOW, REG_INITIAL_COUNT, REG_LVT_FIRST,
  Shorthand, TimerMode, VECTOR_MASK, divisorOf, timerModeOf, timerTickTime,
} from "../lapic-registers";
import { HardwareBus } from "./bus";
import { LapicPort, lapicEnabled, lapicPage, qemuIpiReachesSelf, writeIcrQuietly } from "./apic-access";
import { PendingFixup } from "./fixup";

const INDEX_INITIAL_COUNT: u32 = REG_INITIAL_COUNT >>> 4;
const INDEX_ICR_LOW: u32 = REG_ICR_LOW >>> 4;
const INDEX_DIVIDE: u32 = REG_DIVIDE >>> 4;

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
  /** ICR low as the guest last wrote it, answered for reads while `emulateIcrLow`. */
  icrLow: u32 = 0;
  emulateIcrLow: bool = false;

  constructor(private bus: HardwareBus) {
    super();
  }

  active(): bool {
    return this.emulateInitialCount || this.emulateIcrLow || this.rewriteAt != NEVER;
  }

  deadline(): i64 {
    return this.rewriteAt;
  }

  fire(bus: HardwareBus): void {
    this.rewriteAt = NEVER;
    if (!lapicEnabled(bus)) {
      this.stop();
      return;
    }
    const lapic = new LapicPort(bus, lapicPage(bus));
    const lvt = lapic.read(REG_LVT_FIRST);
    // A guest that left periodic mode meanwhile keeps the count it has; reads stay emulated.
    if (timerModeOf(lvt, bus.config().compatQemu) != TimerMode.Periodic) return;
    if (this.raiseAtRewrite) {
      if ((lvt & LVT_MASKED) == 0) this.selfIpiKeepingIcr(lapic, lvt & VECTOR_MASK);
    } else if (lapic.read(REG_CURRENT_COUNT) == 0) {
      return; // the guest disarmed the count (a detour through TSC-deadline mode)
    }
    lapic.write(REG_INITIAL_COUNT, this.initialCount);
    this.emulateInitialCount = false;
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
    } else if (index == INDEX_INITIAL_COUNT) {
      const lapic = new LapicPort(this.bus, lapicPage(this.bus));
      // In TSC-deadline mode the hardware ignored the write.
      if (timerModeOf(lapic.read(REG_LVT_FIRST), this.bus.config().compatQemu) == TimerMode.TscDeadline) return;
      this.emulateInitialCount = false;
      this.rewriteAt = NEVER;
    } else if (index == INDEX_DIVIDE && this.rewriteAt != NEVER) {
      this.rescheduleAfterDivide(value);
    }
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

  private stop(): void {
    this.emulateInitialCount = false;
    this.emulateIcrLow = false;
    this.rewriteAt = NEVER;
  }
}
