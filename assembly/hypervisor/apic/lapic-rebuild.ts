// Rebuilding a local APIC on a freshly reset destination, through its registers and the
// I/O APIC only. The unwritable state comes back by making the hardware do what put it there:
//   ISR  a self-IPI of the vector, then an interrupt acknowledge, in ascending priority order
//        (a lower in-service class never blocks a higher one; with TPR 0 each is deliverable);
//   IRR  a self-IPI left pending;
//   TMR  is set only by accepting a level-triggered message, and self-IPIs are edge: those
//        vectors are delivered through an I/O APIC entry programmed level-triggered. Where the
//        source's I/O APIC entry for that vector still waits for its EOI (remote IRR), that very
//        entry delivers it, so its remote IRR comes back with the same message (QEMU mode
//        differs: see rebuildVectorsQemu); likewise a level-triggered LINT entry whose remote
//        IRR is set delivers its vector once more through that LINT (datasheet model);
//   ESR  errors are caused again (send/receive illegal vector, illegal register) and latched;
//   timer  the current count is loaded as the initial count, and restarted at the source's
//        phase when it was measured (see ApicTimerFixup).
// The I/O APIC is unmasked while this APIC is software-disabled (see quiesce), then the
// LVTs, TPR and SVR come last.
// What cannot be rebuilt exactly is listed in apic/state.ts.

import { NEVER, edgeTime, edgesAt } from "../../common/clock";
import { HardwareBus } from "../bus";
import { IoApicPort, LapicPort, qemuIpiReachesSelf, writeIcrQuietly } from "./access";
import { ApicTimerFixup } from "./timer-fixup";
import { IoApicRecord, LocalApicRecord } from "./record";
import { ENTRY_LEVEL, ENTRY_LOGICAL, ENTRY_MASKED, ENTRY_REMOTE_IRR, IOAPIC_PIN_COUNT } from "../../registers/ioapic";
import {
  APIC_BASE_X2APIC, ESR_ILLEGAL_REGISTER, ESR_RECEIVE_ILLEGAL_VECTOR, ESR_SEND_ILLEGAL_VECTOR, FIRST_LEGAL_VECTOR,
  ICR_LEVEL, ICR_SHORTHAND_SHIFT, LVT_ACTIVE_LOW, LVT_COUNT, LVT_LEVEL, LVT_LINT0, LVT_LINT1, LVT_MASKED,
  LVT_REMOTE_IRR, MODE_SHIFT, MSR_TSC_DEADLINE,
  REG_DFR, REG_DIVIDE, REG_EOI, REG_ESR, REG_ICR_HIGH, REG_ICR_LOW, REG_ID, REG_INITIAL_COUNT,
  REG_IRR, REG_LDR, REG_LVT_FIRST, REG_PPR, REG_SVR, REG_TPR, REG_UNIMPLEMENTED, SVR_ENABLE,
  Shorthand, TIMER_MODE_SHIFT, TimerMode, VECTOR_MASK, divisorOf, ticksToExpiry, timerModeOf, timerTickTime,
} from "../../registers/lapic";

const SVR_REBUILD: u32 = SVR_ENABLE | 0xff;
const SVR_DISABLED: u32 = 0xff;
const SELF_IPI: u32 = <u32>Shorthand.Self << ICR_SHORTHAND_SHIFT;
const LVT_TSC_DEADLINE: u32 = <u32>TimerMode.TscDeadline << TIMER_MODE_SHIFT;
/** Temporary entries are borrowed from the pins no ISA line reaches. */
const FIRST_TEMP_PIN: i32 = 16;

export class LapicRebuild {
  private lapic: LapicPort;
  private io: IoApicPort | null;
  private compat: bool;
  /** I/O APIC pins whose captured entry waits for an EOI and that have not delivered yet. */
  private pendingPins: u32 = 0;
  /** A pin whose entry may be borrowed for level-triggered deliveries, or -1. */
  private tempPin: i32 = -1;
  /** LINT entries (a bit per LVT index) whose level-triggered request waits for an EOI. */
  private waitingLints: u32 = 0;

  constructor(private bus: HardwareBus, page: u32, private rec: LocalApicRecord, private ioRec: IoApicRecord) {
    this.lapic = new LapicPort(bus, page);
    const c = bus.config();
    this.compat = c.compatQemu;
    this.io = c.ioapic ? new IoApicPort(bus) : null;
    if (c.ioapic) this.findPins();
    // QEMU keeps an LVT's remote IRR as a plain stored bit, which finish() writes back.
    if (!this.compat) {
      for (let i = LVT_LINT0; i <= LVT_LINT1; i++) {
        if ((unchecked(rec.lvt[i]) & LVT_REMOTE_IRR) != 0) this.waitingLints |= 1 << <u32>i;
      }
    }
  }

  private findPins(): void {
    for (let pin = 0; pin < IOAPIC_PIN_COUNT; pin++) {
      if ((unchecked(this.ioRec.low[pin]) & ENTRY_REMOTE_IRR) != 0) this.pendingPins |= 1 << <u32>pin;
    }
    for (let pin = IOAPIC_PIN_COUNT - 1; pin >= FIRST_TEMP_PIN && this.tempPin < 0; pin--) {
      if ((this.pendingPins & (1 << <u32>pin)) == 0) this.tempPin = pin;
    }
  }

  /** The pins waiting for an EOI that this rebuild has yet to deliver. */
  get pins(): u32 {
    return this.pendingPins;
  }

  /** With several CPUs each rebuild delivers only the pins given to it. */
  set pins(mask: u32) {
    this.pendingPins = mask;
  }

  /** Whether the record holds `vector` in service or pending (it may take a pin of that vector). */
  holds(vector: u32): bool {
    return isSet(this.rec.isr, vector) || isSet(this.rec.irr, vector);
  }

  /** The vector entry `pin` delivers. */
  pinVector(pin: i32): u32 {
    return unchecked(this.ioRec.low[pin]) & VECTOR_MASK;
  }

  /** Enables the APIC for the rebuild: its ID (destinations use it), software enable, TPR 0. */
  prepare(): void {
    this.lapic.write(REG_ID, this.rec.id);
    // QEMU's LINT0 comes out of reset as ExtINT, unmasked: with the rebuilt PIC's INT up, the
    // acknowledges that rebuild ISR would take the PIC's vector instead. finish() restores it.
    this.lapic.write(REG_LVT_FIRST + (<u32>LVT_LINT0 << 4), LVT_MASKED);
    this.lapic.write(REG_SVR, SVR_REBUILD);
  }

  /** ISR, IRR and TMR (and, datasheet model, the remote IRR of entries that delivered them). */
  rebuildVectors(): void {
    if (this.compat) this.rebuildVectorsQemu();
    else this.rebuildVectorsDatasheet();
  }

  /**
   * QEMU takes the ICR's trigger-mode bit into TMR, so self-IPIs rebuild all three registers;
   * its I/O APIC sets remote IRR whether or not anyone accepts, so the entries waiting for an
   * EOI are rebuilt apart (deliverPendingPins, to nobody).
   */
  private rebuildVectorsQemu(): void {
    const rec = this.rec;
    for (let v: u32 = 0; v < 256; v++) {
      if (isSet(rec.tmr, v) && !isSet(rec.isr, v) && !isSet(rec.irr, v)) {
        this.selfIpi(v, true);
        this.retire(v);
      }
    }
    for (let v: u32 = 0; v < 256; v++) {
      if (!isSet(rec.isr, v)) continue;
      this.selfIpi(v, isSet(rec.tmr, v) && !isSet(rec.irr, v));
      this.acknowledge(v);
    }
    for (let v: u32 = 0; v < 256; v++) if (isSet(rec.irr, v)) this.selfIpi(v, isSet(rec.tmr, v));
  }

  private rebuildVectorsDatasheet(): void {
    const rec = this.rec;
    // First what must pass through ISR and leave again by EOI, while nothing else is in service.
    for (let v: u32 = 0; v < 256; v++) {
      if (isSet(rec.isr, v) || isSet(rec.irr, v)) continue;
      if (this.pinsFor(v) != 0) {
        // A pin awaits an EOI the guest can no longer give: deliver, then let it pass
        // edge-triggered so the EOI is not broadcast. TMR ends clear (inconsistent source).
        this.deliverThroughPins(v);
        this.selfIpi(v);
        this.retire(v);
      } else if (isSet(rec.tmr, v) && this.throughTempPin(v)) {
        this.retire(v); // the broadcast EOI frees the borrowed entry
      }
    }
    // After the last EOI of this rebuild that a LINT's vector could match.
    this.holdLintsWithoutVector();
    for (let v: u32 = 0; v < 256; v++) {
      if (!isSet(rec.isr, v)) continue;
      let borrowed = false;
      if (isSet(rec.irr, v)) {
        this.selfIpi(v); // TMR follows the later, pending request
      } else if (isSet(rec.tmr, v)) {
        if (!this.deliverThroughWaiting(v)) {
          borrowed = this.throughTempPin(v);
          if (!borrowed) this.selfIpi(v);
        }
      } else {
        this.deliverThroughWaiting(v);
        this.selfIpi(v);
      }
      this.acknowledge(v);
      if (borrowed) this.io!.eoi(v);
    }
    for (let v: u32 = 0; v < 256; v++) {
      if (!isSet(rec.irr, v)) continue;
      if (isSet(rec.tmr, v)) {
        if (!this.deliverThroughWaiting(v)) {
          if (this.throughTempPin(v)) this.io!.eoi(v);
          else this.selfIpi(v);
        }
      } else {
        this.deliverThroughWaiting(v);
        this.selfIpi(v);
      }
    }
  }

  /** Every pin still waiting for an EOI delivers once, so its remote IRR is set again. */
  deliverPendingPins(): void {
    while (this.pendingPins != 0) {
      const pin = <i32>ctz(this.pendingPins);
      this.pendingPins &= this.pendingPins - 1;
      this.levelMessage(pin, unchecked(this.ioRec.low[pin]) & VECTOR_MASK);
    }
  }

  /**
   * ESR and ICR together, since causing a send error needs the ICR and rewriting the ICR sends
   * its command (which may itself be a send error). The ICR goes back with the destination
   * parked on nobody; a command to self is discarded because the APIC is software-disabled
   * meanwhile (QEMU: no such discard, so its reads are answered by the fixup instead).
   */
  rebuildErrorsAndIcr(fixup: ApicTimerFixup, otherCpus: bool): void {
    const esr = this.rec.esr;
    const low = this.rec.icrLow;
    const high = this.rec.icrHigh;
    if (this.compat) {
      // QEMU: the ESR accumulates illegal-address errors only and ignores writes.
      if ((esr & ESR_ILLEGAL_REGISTER) != 0) this.lapic.read(REG_UNIMPLEMENTED);
      if (otherCpus || qemuIpiReachesSelf(low)) {
        this.lapic.write(REG_ICR_HIGH, high);
        fixup.icrLow = low;
        fixup.emulateIcrLow = true;
      } else {
        writeIcrQuietly(this.lapic, low, high);
      }
      return;
    }
    const lowSendsError = sendsIllegalVector(low);
    if (otherCpus) {
      // The command could reach another CPU: the fixup answers for it (see apic/state.ts).
      if ((esr & ESR_SEND_ILLEGAL_VECTOR) != 0) writeIcrQuietly(this.lapic, 0, 0);
      this.lapic.write(REG_ICR_HIGH, high);
      fixup.icrLow = low;
      fixup.emulateIcrLow = true;
      if ((this.rec.apicBase & APIC_BASE_X2APIC) != 0) {
        fixup.icrHigh = high;
        fixup.emulateIcrHigh = true;
      }
    } else {
      if ((esr & ESR_SEND_ILLEGAL_VECTOR) != 0 && !lowSendsError) writeIcrQuietly(this.lapic, 0, 0);
      this.lapic.write(REG_SVR, SVR_DISABLED);
      writeIcrQuietly(this.lapic, low, high);
      this.lapic.write(REG_SVR, SVR_REBUILD);
      if (lowSendsError && (esr & ESR_SEND_ILLEGAL_VECTOR) == 0) this.lapic.write(REG_ESR, 0);
    }
    if ((esr & ESR_RECEIVE_ILLEGAL_VECTOR) != 0) this.receiveIllegalVector();
    if ((esr & ESR_ILLEGAL_REGISTER) != 0) this.lapic.read(REG_UNIMPLEMENTED);
    this.lapic.write(REG_ESR, 0);
  }

  /**
   * A timer interrupt with vector 0: a TSC deadline already in the past fires at once. It
   * needs the TSC to have counted at least 1 at the resume time (t ≥ one TSC period).
   */
  private receiveIllegalVector(): void {
    this.lapic.write(REG_LVT_FIRST, LVT_TSC_DEADLINE);
    this.bus.wrmsr(MSR_TSC_DEADLINE, 1);
    this.lapic.write(REG_LVT_FIRST, LVT_MASKED); // leaving TSC-deadline mode disarms
  }

  /**
   * The timer, continuing from the source's current count (see ApicTimerFixup); `phase`: when
   * the source's count next changed, in ns from now, if measured (else 0).
   */
  rebuildTimer(fixup: ApicTimerFixup, phase: i64): void {
    const rec = this.rec;
    const lvt = unchecked(rec.lvt[0]);
    const mode = timerModeOf(lvt, this.compat);
    this.lapic.write(REG_DIVIDE, rec.divideConfig);
    fixup.initialCount = rec.initialCount;
    if (mode == TimerMode.TscDeadline) {
      // The initial count loads while counting is possible; entering TSC-deadline mode then
      // disarms the count but keeps the register.
      this.lapic.write(REG_LVT_FIRST, LVT_MASKED);
      this.lapic.write(REG_INITIAL_COUNT, rec.initialCount);
      this.lapic.write(REG_LVT_FIRST, lvt);
      if (rec.tscDeadline != 0) this.bus.wrmsr(MSR_TSC_DEADLINE, rec.tscDeadline);
      return;
    }
    this.lapic.write(REG_LVT_FIRST, lvt);
    const count = rec.currentCount;
    const now = this.bus.now();
    const divisor = divisorOf(rec.divideConfig);
    const busHz = this.bus.config().apicBusHz;
    const phaseKnown = phase > 0 && phase < edgeTime(divisor, busHz);
    if (this.compat && mode == TimerMode.Periodic && count == 0 && rec.initialCount != 0) {
      // QEMU reads 0 in the period before each expiry, but loading 0 stops the timer.
      this.lapic.write(REG_INITIAL_COUNT, 0);
      fixup.emulateInitialCount = true;
      fixup.raiseAtRewrite = true;
      fixup.rewriteAt = phaseKnown ? now + phase : timerTickTime(now, 1, divisor, busHz);
      return;
    }
    if (count == 1 && phaseKnown && this.countDownToExpiry(fixup, phase, divisor, busHz)) return;
    this.lapic.write(REG_INITIAL_COUNT, count);
    if (count >= 2 && phaseKnown) {
      fixup.rephaseAt = now + phase;
      fixup.rephaseCount = count;
    }
    if (count == rec.initialCount) return;
    fixup.emulateInitialCount = true;
    // Due for a one-shot count too: the guest may make it periodic before it expires.
    if (count != 0) fixup.rewriteAt = timerTickTime(now, ticksToExpiry(<i64>count, this.compat), divisor, busHz);
  }

  /**
   * A count of 1 that changes `phase` ns from now: the expiry is then (datasheet) or a period
   * later (QEMU spends a period at 0). The count stays loaded as 1; the fixup then lets the
   * hardware count down to that expiry on the undivided bus clock, starting after the `lead`
   * that makes it end on a bus clock edge, and restores the divider there. False if the
   * expiry is too close for a countdown (the timer then lags, as an unmeasured one does).
   */
  private countDownToExpiry(fixup: ApicTimerFixup, phase: i64, divisor: i64, busHz: i64): bool {
    const toExpiry = this.compat ? phase + edgeTime(divisor, busHz) : phase;
    let lead: i64 = 0;
    while (lead < toExpiry && edgeTime(edgesAt(toExpiry - lead, busHz), busHz) != toExpiry - lead) lead++;
    const cycles = edgesAt(toExpiry - lead, busHz);
    // QEMU's count expires a cycle after reaching 0, so it loads one cycle fewer.
    const load = this.compat ? cycles - 1 : cycles;
    if (load < 1) return false;
    const now = this.bus.now();
    this.lapic.write(REG_INITIAL_COUNT, 1);
    fixup.countdownDivide = <i32>this.rec.divideConfig;
    fixup.countdownZeroAt = this.compat ? now + phase : NEVER;
    fixup.countdownLoad = <u32>load;
    fixup.countdownLoadAt = now + lead;
    fixup.emulateInitialCount = true;
    fixup.rewriteAt = now + toExpiry;
    return true;
  }

  /**
   * The destinations as captured, then software disable while the I/O APIC is unmasked: a
   * level entry that is asserted, unmasked and not waiting for an EOI was refused by the
   * source's APIC (or it would wait), so the destination must refuse it too. Disabling forces
   * the LVT masks; finish() writes the LVTs again.
   */
  quiesce(): void {
    this.lapic.write(REG_LDR, this.rec.ldr);
    this.lapic.write(REG_DFR, this.rec.dfr);
    this.lapic.write(REG_SVR, SVR_DISABLED);
  }

  /** Enabled again: the LVTs (the timer's again, as quiesce() masked it), TPR, and the SVR last. */
  finish(): void {
    const rec = this.rec;
    this.lapic.write(REG_SVR, SVR_REBUILD);
    for (let i = 0; i < LVT_COUNT; i++) this.lapic.write(REG_LVT_FIRST + (<u32>i << 4), unchecked(rec.lvt[i]));
    this.lapic.write(REG_TPR, rec.tpr);
    this.lapic.write(REG_SVR, rec.svr);
  }

  // ---- deliveries -----------------------------------------------------------------------

  /** A self-IPI; the xAPIC sends it edge-triggered whatever `level` says (QEMU does not). */
  private selfIpi(vector: u32, level: bool = false): void {
    this.lapic.write(REG_ICR_LOW, SELF_IPI | vector | (level ? ICR_LEVEL : 0));
  }

  private pinsFor(vector: u32): u32 {
    let pins: u32 = 0;
    let pending = this.pendingPins;
    while (pending != 0) {
      const pin = <i32>ctz(pending);
      pending &= pending - 1;
      if ((unchecked(this.ioRec.low[pin]) & VECTOR_MASK) == vector) pins |= 1 << <u32>pin;
    }
    return pins;
  }

  /** The pins waiting for an EOI of `vector` deliver it; true if it reached IRR. */
  private deliverThroughPins(vector: u32): bool {
    let pins = this.pinsFor(vector);
    if (pins == 0) return false;
    this.pendingPins &= ~pins;
    while (pins != 0) {
      const pin = <i32>ctz(pins);
      pins &= pins - 1;
      this.levelMessage(pin, vector);
    }
    return this.lapic.testVector(REG_IRR, vector);
  }

  /** The pins and LINT entries waiting for an EOI of `vector` deliver it; true if it reached IRR. */
  private deliverThroughWaiting(vector: u32): bool {
    const pins = this.deliverThroughPins(vector);
    return this.deliverThroughLints(vector) || pins;
  }

  private lintsFor(vector: u32): u32 {
    let lints: u32 = 0;
    for (let i = LVT_LINT0; i <= LVT_LINT1; i++) {
      const waiting = (this.waitingLints & (1 << <u32>i)) != 0;
      if (waiting && (unchecked(this.rec.lvt[i]) & VECTOR_MASK) == vector) lints |= 1 << <u32>i;
    }
    return lints;
  }

  /** The LINT entries waiting for an EOI of `vector` deliver it; true if it reached IRR. */
  private deliverThroughLints(vector: u32): bool {
    let lints = this.lintsFor(vector);
    if (lints == 0) return false;
    this.waitingLints &= ~lints;
    while (lints != 0) {
      const i = <i32>ctz(lints);
      lints &= lints - 1;
      this.lintMessage(i, vector, vector);
    }
    return this.lapic.testVector(REG_IRR, vector);
  }

  /**
   * A LINT entry waits for an EOI of a vector neither in service nor pending (the guest
   * changed the entry's vector after it delivered): it delivers a spare vector, is given its
   * own vector back (masked until finish), and the spare passes edge-triggered, so that EOI
   * neither matches the entry nor is broadcast.
   */
  private holdLintsWithoutVector(): void {
    for (let i = LVT_LINT0; i <= LVT_LINT1; i++) {
      const vector = unchecked(this.rec.lvt[i]) & VECTOR_MASK;
      if ((this.waitingLints & (1 << <u32>i)) == 0 || this.holds(vector)) continue;
      const spare = this.spareVector();
      if (spare < 0) continue; // every legal vector is taken: the remote IRR stays clear
      this.waitingLints &= ~(1 << <u32>i);
      this.lintMessage(i, <u32>spare, vector);
      this.selfIpi(<u32>spare);
      this.retire(<u32>spare);
    }
  }

  /** A legal vector the record does not use (ISR, IRR, TMR, a waiting pin or LINT), or -1. */
  private spareVector(): i32 {
    const rec = this.rec;
    for (let v: u32 = 255; v >= FIRST_LEGAL_VECTOR; v--) {
      if (this.holds(v) || isSet(rec.tmr, v) || this.pinsFor(v) != 0) continue;
      if ((unchecked(rec.lvt[LVT_LINT0]) & VECTOR_MASK) == v || (unchecked(rec.lvt[LVT_LINT1]) & VECTOR_MASK) == v) continue;
      return <i32>v;
    }
    return -1;
  }

  /**
   * LINT entry `i` requests `vector` once, level-triggered, so its remote IRR is set: it is
   * programmed fixed and unmasked with the polarity that makes its input's present level
   * asserted (active high first, active low if that delivered nothing), then masked with
   * `keep` as its vector, which leaves remote IRR set until finish() writes the entry.
   */
  private lintMessage(i: i32, vector: u32, keep: u32): void {
    const reg = REG_LVT_FIRST + (<u32>i << 4);
    this.lapic.write(reg, LVT_LEVEL | vector);
    if ((this.lapic.read(reg) & LVT_REMOTE_IRR) == 0) this.lapic.write(reg, LVT_LEVEL | LVT_ACTIVE_LOW | vector);
    this.lapic.write(reg, LVT_MASKED | LVT_LEVEL | keep);
  }

  /** A level-triggered delivery through the borrowed pin; its remote IRR is then set. */
  private throughTempPin(vector: u32): bool {
    if (this.tempPin < 0) return false;
    this.levelMessage(this.tempPin, vector);
    return this.lapic.testVector(REG_IRR, vector);
  }

  /**
   * Entry `pin` sends one level-triggered fixed message with `vector` to this APIC: the entry
   * is programmed masked, its line rises (QEMU latches a level request only on a rise while
   * the entry is level-triggered), the entry is unmasked and masked again, and the line falls.
   * A pin an ISA line holds high is already asserted (QEMU then cannot latch it).
   */
  private levelMessage(pin: i32, vector: u32): void {
    const io = this.io!;
    // QEMU mode: to logical destination 0, which no APIC accepts (remote IRR is set anyway).
    const low = ENTRY_LEVEL | vector | (this.compat ? ENTRY_LOGICAL : 0);
    io.writeHigh(pin, this.compat ? 0 : this.rec.id);
    io.writeLow(pin, ENTRY_MASKED | low);
    this.bus.setGsiLine(pin, true);
    io.writeLow(pin, low);
    io.writeLow(pin, ENTRY_MASKED | low);
    this.bus.setGsiLine(pin, false);
  }

  /** Takes the pending `vector` into service and ends it with an EOI. */
  private retire(vector: u32): void {
    this.acknowledge(vector);
    this.lapic.write(REG_EOI, 0);
  }

  /** The CPU acknowledges `vector`, if it is the one the APIC would deliver now. */
  private acknowledge(vector: u32): void {
    if (!this.lapic.testVector(REG_IRR, vector)) return;
    const ppr = this.lapic.read(REG_PPR);
    const deliverable = (vector & 0xf0) > (ppr & 0xf0) || (this.compat && ppr == 0);
    if (deliverable) this.bus.inta();
  }
}

@inline
function isSet(words: StaticArray<u32>, bit: u32): bool {
  return ((unchecked(words[<i32>(bit >>> 5)]) >>> (bit & 31)) & 1) != 0;
}

/** Whether sending this ICR command raises "send illegal vector" (fixed or lowest priority, vector < 16). */
function sendsIllegalVector(low: u32): bool {
  const mode = (low >>> MODE_SHIFT) & 7;
  return mode <= 1 && (low & VECTOR_MASK) < FIRST_LEGAL_VECTOR;
}
