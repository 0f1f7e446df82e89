// What a local APIC reconstruction leaves for after the resume. The timer was rebuilt by
// loading the source's *current* count, so until the first expiry the hardware holds that
// count in its initial-count register: a periodic timer would reload it. At the first expiry
// this fixup writes the true initial count (the hardware reloads on the same schedule, so
// the write is exact), and until then, or for a one-shot timer until the guest writes the
// register, it answers guest reads of the initial count from the record. It also answers
// reads of ICR low when that command could not be rewritten without sending it again.

import { NEVER } from "../clock";
import {
  ICR_LOGICAL, LVT_MASKED, REG_CURRENT_COUNT, REG_DIVIDE, REG_ID, REG_ICR_HIGH, REG_ICR_LOW, REG_INITIAL_COUNT, REG_LVT_FIRST,
  Shorthand, ICR_SHORTHAND_SHIFT, TimerMode, VECTOR_MASK, divisorOf, timerModeOf, timerTickTime,
} from "../lapic-registers";
import { HardwareBus } from "./bus";
import { LapicPort, lapicEnabled, lapicPage } from "./apic-access";
import { PendingFixup } from "./fixup";

const INDEX_INITIAL_COUNT: u32 = REG_INITIAL_COUNT >>> 4;
const INDEX_ICR_LOW: u32 = REG_ICR_LOW >>> 4;
const INDEX_DIVIDE: u32 = REG_DIVIDE >>> 4;

export class ApicTimerFixup extends PendingFixup {
  /** The source's initial count, answered for reads while `emulateInitialCount`. */
  initialCount: u32 = 0;
  emulateInitialCount: bool = false;
  /** When the hardware's first expiry comes and the true initial count is due; NEVER if not. */
  rewriteAt: i64 = NEVER;
  /**
   * QEMU periodic timer captured at count 0 (one period before its expiry): a count of 0
   * cannot be loaded, so the expiry's interrupt is raised here (self-IPI) at rewriteAt.
   */
  raiseAtRewrite: bool = false;
  /** ICR as captured; ICR low is answered for reads while `emulateIcrLow`. */
  icrLow: u32 = 0;
  icrHigh: u32 = 0;
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
      lapic.write(REG_INITIAL_COUNT, this.initialCount);
      if ((lvt & LVT_MASKED) == 0) {
        lapic.write(REG_ICR_LOW, (<u32>Shorthand.Self << ICR_SHORTHAND_SHIFT) | (lvt & VECTOR_MASK));
        this.restoreIcr(lapic);
      }
    } else if (lapic.read(REG_CURRENT_COUNT) != 0) {
      // A count of 0 means the guest disarmed it (a detour through TSC-deadline mode).
      lapic.write(REG_INITIAL_COUNT, this.initialCount);
    }
    this.emulateInitialCount = false;
  }

  /** Puts back the captured ICR after the fixup used it (only when rewriting it sends nothing). */
  private restoreIcr(lapic: LapicPort): void {
    if (this.emulateIcrLow) return;
    writeIcrQuietly(lapic, this.icrLow, this.icrHigh);
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

/** A destination matching no APIC: logical 0 matches no LDR; physical: an ID other than ours. */
function nobodyFor(lapic: LapicPort, low: u32): u32 {
  if ((low & ICR_LOGICAL) != 0) return 0;
  const ownId = lapic.read(REG_ID) >>> 24;
  return (ownId == 0 ? 1 : 0) << 24;
}
