// The local APIC of one CPU (xAPIC page or x2APIC MSRs, APIC ID = CPU number), after the Intel
// SDM vol. 3 ch. 10. Where QEMU 7.2 (hw/intc/apic.c, apic_common.c) differs, `compatQemu`
// selects its behaviour; each such place is marked "QEMU:". docs/hypervisor.md, "Several CPUs".
//
// Model choices where the SDM leaves room, all deliberate:
// - Delivery is instantaneous, so LVT and ICR delivery-status bits always read 0 (idle).
// - SMI, NMI, INIT, start-up and ExtINT messages are counted. An NMI stays pending for the
//   CPU's next acknowledge (takeNmi); INIT and start-up are the board's to carry out (they act
//   on the CPU); the board's only ExtINT path is LINT0 (extIntPending). SMI does nothing else.
// - A software-disabled APIC discards fixed and lowest-priority interrupts (SDM 10.4.7.2: it
//   "responds normally" only to INIT, NMI, SMI and SIPI) and keeps what IRR and ISR hold.
// - Clearing the global enable (IA32_APIC_BASE bit 11) returns the registers to their
//   power-up state (SDM 10.4.3 allows it); setting it again re-enables the APIC, as on FSB
//   processors.
// - The version register has no EOI-broadcast suppression (bit 24 clear), so SVR bit 12 is
//   reserved and every EOI of a vector whose TMR bit is set is broadcast.
// - An ICR command with an illegal vector (< 16) is detected on send (ESR bit 5) and dropped.
//   Of the shorthands "self" and "all including self", only fixed delivery is valid (SDM
//   table 10-3); other combinations, and the reserved delivery modes, send nothing. A valid
//   command becomes an ApicMessage that the board routes (IPIs reach other CPUs through it).
// - x2APIC (IA32_APIC_BASE bit 10 with bit 11): the ID reads as the CPU number, LDR is derived
//   from it, the ICR is one 64-bit MSR with a 32-bit destination. Only the transitions the SDM
//   allows (xAPIC → x2APIC, either → disabled) take effect; the others would fault and are
//   dropped. QEMU 7.2 (TCG) has no x2APIC: the bit is not writable.

import { FieldIO } from "../common/fields";
import { NEVER } from "../common/clock";
import {
  APIC_BASE_ADDRESS, APIC_BASE_BSP, APIC_BASE_ENABLE, APIC_BASE_RESET, APIC_DEFAULT_PAGE,
  APIC_VERSION, ESR_ILLEGAL_REGISTER, ESR_RECEIVE_ILLEGAL_VECTOR,
  ESR_SEND_ILLEGAL_VECTOR, FIRST_LEGAL_VECTOR, ICR_ASSERT, ICR_LEVEL, ICR_LOGICAL,
  ICR_SHORTHAND_SHIFT, LVT_ACTIVE_LOW, LVT_COUNT, LVT_ERROR, LVT_LEVEL, LVT_LINT0, LVT_LINT1,
  LVT_MASKED, LVT_REMOTE_IRR, LVT_TIMER, MODE_SHIFT, MSR_APIC_BASE, MSR_TSC_DEADLINE,
  SVR_ENABLE, Shorthand, VECTOR_MASK, timerModeOf, APIC_BASE_X2APIC, apicBaseAtReset,
  MSR_X2APIC_FIRST, X2APIC_BROADCAST, X2APIC_ICR, X2APIC_SELF_IPI, XAPIC_BROADCAST, x2ApicLogicalId,
} from "../registers/lapic";
import { ApicMessage, DeliveryMode, FROM_BUS } from "./apic-message";
import { ApicTimer } from "./lapic-timer";
import { VectorRegister } from "./apic-vectors";

/** Writable bits of each LVT entry (timer, thermal, perf, LINT0, LINT1, error). */
const LVT_WRITABLE: StaticArray<u32> = [0x0007_00ff, 0x0001_07ff, 0x0001_07ff, 0x0001_a7ff, 0x0001_a7ff, 0x0001_00ff];
const ID_BITS: u32 = 0xff00_0000;
const DFR_MODEL_BITS: u32 = 0xf000_0000;
const DFR_FLAT: u32 = 0xf;
/** SVR: vector, software enable, focus-processor checking. QEMU: no focus bit. */
const SVR_WRITABLE: u32 = 0x3ff;
const SVR_WRITABLE_QEMU: u32 = 0x1ff;
/** ICR low: vector, mode, destination mode, level, trigger mode, shorthand. */
const ICR_LOW_WRITABLE: u32 = 0x000c_cfff;
const ICR_HIGH_WRITABLE: u32 = 0xff00_0000;
const DIVIDE_WRITABLE: u32 = 0xb;
/** QEMU: LINT0 of the BSP comes out of reset as ExtINT, unmasked. */
const QEMU_LINT0_RESET: u32 = 0x700;
const APIC_BASE_WRITABLE: u64 = APIC_BASE_ADDRESS | APIC_BASE_ENABLE | APIC_BASE_BSP | APIC_BASE_X2APIC;
/** Register indexes (offset/16) of the xAPIC ID, LDR and DFR. */
const INDEX_ID: u32 = 0x02;
const INDEX_LDR: u32 = 0x0d;
const INDEX_DFR: u32 = 0x0e;

export class LocalApic {
  /** The CPU this APIC belongs to: its number is the APIC ID at reset. */
  private cpu: i32 = 0;
  /** The message this APIC sent during the operation in progress, for the board to route. */
  private message: ApicMessage = new ApicMessage();
  private sent: bool = false;
  /** An NMI waits for the CPU's next acknowledge (CPU state, kept here beside its source). */
  private nmiPending: bool = false;
  private timer: ApicTimer = new ApicTimer();
  private qemu: bool = false;
  /** The latest time the board has shown this APIC. */
  private now: i64 = 0;
  /**
   * The timer's vector is waiting in IRR: further expiries would change nothing, so none is
   * scheduled until that request is taken (this keeps a long-pending periodic timer O(1)).
   * (Were the same vector requested level-triggered meanwhile, its TMR bit stays set where
   * a later expiry would have cleared it.)
   */
  private timerHeld: bool = false;

  private apicBase: u64 = APIC_BASE_RESET;
  private id: u32 = 0;
  private tpr: u32 = 0;
  private ldr: u32 = 0;
  private dfr: u32 = 0xffff_ffff;
  private svr: u32 = 0xff;
  private isr: VectorRegister = new VectorRegister();
  private tmr: VectorRegister = new VectorRegister();
  private irr: VectorRegister = new VectorRegister();
  /** ESR as software reads it, and the errors detected since the last ESR write. */
  private esr: u32 = 0;
  private esrPending: u32 = 0;
  private icrLow: u32 = 0;
  private icrHigh: u32 = 0;
  private lvt: StaticArray<u32> = new StaticArray<u32>(LVT_COUNT);
  /** Input levels of LINT0 (bit 0) and LINT1 (bit 1). */
  private lintLevels: u32 = 0;
  private eoiBroadcast: i32 = -1;
  /** Events the CPU would act on, indexed by delivery mode (SMI 2, NMI 4, INIT 5, SIPI 6, ExtINT 7). */
  private cpuEvents: StaticArray<u32> = new StaticArray<u32>(8);

  /** Follow QEMU 7.2. A strap read at reset: setting it resets the APIC to that mode's power-on state. */
  get compatQemu(): bool {
    return this.qemu;
  }
  set compatQemu(on: bool) {
    this.qemu = on;
    this.timer.compatQemu = on;
    this.reset();
  }
  get busHz(): i64 {
    return this.timer.busHz;
  }
  set busHz(hz: i64) {
    this.timer.busHz = hz;
  }
  get tscHz(): i64 {
    return this.timer.tscHz;
  }
  set tscHz(hz: i64) {
    this.timer.tscHz = hz;
  }

  /** Makes this the APIC of CPU `cpu`. */
  attach(cpu: i32): void {
    this.cpu = cpu;
  }

  reset(): void {
    this.apicBase = apicBaseAtReset(this.cpu);
    this.now = 0;
    this.nmiPending = false;
    this.powerOnRegisters();
    this.lintLevels = 0;
    for (let i = 0; i < 8; i++) unchecked((this.cpuEvents[i] = 0));
  }

  /** SDM 10.4.7.1: the registers after power-up (and here after a global disable). */
  private powerOnRegisters(): void {
    this.id = <u32>this.cpu << 24;
    this.initRegisters();
    // QEMU: the BSP's LINT0 comes out of reset programmed ExtINT (what its BIOS would do).
    if (this.qemu && this.cpu == 0) unchecked((this.lvt[LVT_LINT0] = QEMU_LINT0_RESET));
  }

  /** SDM 10.4.7.3: an INIT signal resets every register but the APIC ID and IA32_APIC_BASE. */
  initReset(): void {
    this.initRegisters();
    if (this.x2apic()) this.ldr = x2ApicLogicalId(<u32>this.cpu);
  }

  private initRegisters(): void {
    this.tpr = 0;
    this.ldr = 0;
    this.dfr = 0xffff_ffff;
    this.svr = 0xff;
    this.isr.clear();
    this.tmr.clear();
    this.irr.clear();
    this.esr = 0;
    this.esrPending = 0;
    this.icrLow = 0;
    this.icrHigh = 0;
    for (let i = 0; i < LVT_COUNT; i++) unchecked((this.lvt[i] = LVT_MASKED));
    this.eoiBroadcast = -1;
    this.timerHeld = false;
    this.timer.reset();
  }

  /** Where the board decodes the register page. QEMU 7.2 (TCG) never moves it. */
  @inline
  base(): u32 {
    return this.qemu ? APIC_DEFAULT_PAGE : <u32>(this.apicBase & APIC_BASE_ADDRESS);
  }

  @inline
  enabled(): bool {
    return (this.apicBase & APIC_BASE_ENABLE) != 0;
  }

  /** The APIC ID as the destination logic sees it (8-bit xAPIC register field, or x2APIC ID). */
  apicId(): u32 {
    return this.x2apic() ? <u32>this.cpu : this.id >>> 24;
  }

  /** In x2APIC mode: registers are MSRs, the page does not decode. */
  @inline
  x2apic(): bool {
    return (this.apicBase & APIC_BASE_X2APIC) != 0;
  }

  /** Whether the board decodes the register page for this CPU. */
  @inline
  pageDecoded(): bool {
    return (this.apicBase & (APIC_BASE_ENABLE | APIC_BASE_X2APIC)) == APIC_BASE_ENABLE;
  }

  @inline
  private softwareEnabled(): bool {
    return (this.svr & SVR_ENABLE) != 0;
  }

  // ---- time ----------------------------------------------------------------------------

  nextTimerEvent(): i64 {
    return this.timerHeld ? NEVER : this.timer.nextEvent;
  }

  /** Shows the APIC the time `now`: a timer expiry due by then delivers. */
  @inline
  syncTo(now: i64): void {
    if (now > this.now) this.now = now;
    if (!this.timerHeld && this.timer.nextEvent <= now) this.expireTimer(now);
  }

  private expireTimer(now: i64): void {
    this.timer.expire(now);
    this.localInterrupt(LVT_TIMER);
    const entry = unchecked(this.lvt[LVT_TIMER]);
    this.timerHeld = this.timer.nextEvent != NEVER && ((entry >>> MODE_SHIFT) & 7) == DeliveryMode.Fixed
      && this.irr.test(entry & VECTOR_MASK);
  }

  /**
   * The timer's request left IRR (or the timer is reprogrammed): expiries count again from
   * now. An acknowledge carries no time: the board syncs the APIC to the present first.
   */
  private releaseTimer(): void {
    if (!this.timerHeld) return;
    this.timerHeld = false;
    this.timer.skipPast(this.now);
  }

  // ---- register page -------------------------------------------------------------------

  @inline
  mmioRead(offset: u32, now: i64): u32 {
    this.syncTo(now);
    const index = (offset >>> 4) & 0xff;
    if (index >= 0x10 && index < 0x28) return this.vectorRegister(index);
    if (index >= 0x32 && index < 0x38) return unchecked(this.lvt[<i32>index - 0x32]);
    switch (index) {
      case 0x02: return this.id;
      case 0x03: return APIC_VERSION;
      case 0x08: return this.tpr;
      case 0x09: return this.apr();
      case 0x0a: return this.ppr();
      case 0x0b: return 0; // EOI is write-only
      case 0x0d: return this.ldr;
      case 0x0e: return this.dfr;
      case 0x0f: return this.svr;
      case 0x28: return this.esr;
      case 0x30: return this.icrLow;
      case 0x31: return this.icrHigh;
      case 0x38: return this.timer.initialCount;
      case 0x39: return this.timer.currentCount(now);
      case 0x3e: return this.timer.divideConfig;
    }
    this.signalError(ESR_ILLEGAL_REGISTER);
    return 0;
  }

  @inline
  mmioWrite(offset: u32, value: u32, now: i64): void {
    this.syncTo(now);
    const index = (offset >>> 4) & 0xff;
    switch (index) {
      case 0x00:
        // QEMU: the page doubles as the MSI window; a write here is an interrupt message
        // (destination 0, logical if address bit 2 is set). The SDM page has no register here.
        if (!this.qemu) break;
        this.sendMsi((offset & 4) != 0, value);
        return;
      case 0x02: this.id = value & ID_BITS; return;
      case 0x08: this.tpr = value & 0xff; return;
      case 0x0b: this.eoi(); return;
      case 0x0d: this.ldr = value & ID_BITS; return;
      case 0x0e: this.dfr = (value & DFR_MODEL_BITS) | ~DFR_MODEL_BITS; return;
      case 0x0f: this.writeSvr(value, now); return;
      case 0x28: this.writeEsr(); return;
      case 0x30:
        // QEMU: keeps every bit of the ICR as written, the delivery-status bit included.
        this.icrLow = this.qemu ? value : value & ICR_LOW_WRITABLE;
        this.sendIpi();
        return;
      case 0x31: this.icrHigh = this.qemu ? value : value & ICR_HIGH_WRITABLE; return;
      case 0x38:
        this.releaseTimer();
        this.timer.writeInitialCount(value, now);
        return;
      case 0x3e:
        this.releaseTimer();
        this.timer.writeDivideConfig(value & DIVIDE_WRITABLE, now);
        return;
    }
    if (index >= 0x32 && index < 0x38) {
      this.writeLvt(<i32>index - 0x32, value, now);
      return;
    }
    // Read-only registers ignore writes without an error.
    if ((index >= 0x10 && index < 0x28) || index == 0x03 || index == 0x09 || index == 0x0a || index == 0x39) return;
    this.signalError(ESR_ILLEGAL_REGISTER);
  }

  /** QEMU: an MSI written into the page (destination 0, the address's logical bit). */
  private sendMsi(logical: bool, data: u32): void {
    const m = this.message;
    m.source = FROM_BUS;
    m.dest = 0;
    m.wide = false;
    m.logical = logical;
    m.shorthand = Shorthand.None;
    m.mode = (data >>> MODE_SHIFT) & 7;
    m.vector = data & VECTOR_MASK;
    m.level = (data & ICR_LEVEL) != 0;
    this.sent = true;
  }

  private vectorRegister(index: u32): u32 {
    const i = <i32>(index & 7);
    if (index < 0x18) return this.isr.word(i);
    if (index < 0x20) return this.tmr.word(i);
    return this.irr.word(i);
  }

  // ---- MSRs ----------------------------------------------------------------------------

  rdmsr(msr: u32, now: i64): u64 {
    this.syncTo(now);
    if (msr == MSR_APIC_BASE) return this.apicBase;
    if (msr == MSR_TSC_DEADLINE && this.enabled()) return this.timer.readDeadline(now);
    if (this.x2apic() && msr >= MSR_X2APIC_FIRST) return this.x2apicRead(msr - MSR_X2APIC_FIRST, now);
    return 0;
  }

  wrmsr(msr: u32, value: u64, now: i64): void {
    this.syncTo(now);
    if (msr == MSR_APIC_BASE) this.writeApicBase(value);
    else if (msr == MSR_TSC_DEADLINE && this.enabled()) {
      this.releaseTimer();
      if (this.timer.writeDeadline(value, now)) this.localInterrupt(LVT_TIMER);
    } else if (this.x2apic() && msr >= MSR_X2APIC_FIRST) {
      this.x2apicWrite(msr - MSR_X2APIC_FIRST, value, now);
    }
  }

  /** SDM 10.12.1.2: register `index` (offset/16) read as an x2APIC MSR. */
  private x2apicRead(index: u32, now: i64): u64 {
    if (index == INDEX_ID) return <u64>this.cpu;
    if (index == X2APIC_ICR) return (<u64>this.icrHigh << 32) | <u64>this.icrLow;
    return <u64>this.mmioRead(index << 4, now);
  }

  private x2apicWrite(index: u32, value: u64, now: i64): void {
    // ID and LDR are read-only and there is no DFR (those writes would fault).
    if (index == INDEX_ID || index == INDEX_LDR || index == INDEX_DFR) return;
    if (index == X2APIC_ICR) {
      this.icrLow = <u32>value & ICR_LOW_WRITABLE;
      this.icrHigh = <u32>(value >>> 32);
      this.sendIpi();
    } else if (index == X2APIC_SELF_IPI) {
      this.send(Shorthand.Self, DeliveryMode.Fixed, <u32>value & VECTOR_MASK, 0, false);
    } else {
      this.mmioWrite(index << 4, <u32>value, now);
    }
  }

  private writeApicBase(value: u64): void {
    if (this.qemu) {
      // QEMU: the BSP flag is not writable, and a cleared enable cannot be set again before
      // a reset; disabling only clears the software enable, the registers keep their values.
      const kept = this.apicBase & (APIC_BASE_BSP | APIC_BASE_ENABLE);
      this.apicBase = (value & APIC_BASE_ADDRESS) | kept;
      if ((value & APIC_BASE_ENABLE) == 0) {
        this.apicBase &= ~APIC_BASE_ENABLE;
        this.svr &= ~SVR_ENABLE;
      }
      return;
    }
    // Reserved bits (beyond the 32-bit page address) and the transitions SDM 10.12.5 forbids
    // (x2APIC without the enable, x2APIC back to xAPIC, disabled straight to x2APIC) fault.
    if ((value & ~APIC_BASE_WRITABLE) != 0) return;
    const toX2 = (value & APIC_BASE_X2APIC) != 0;
    const toEnabled = (value & APIC_BASE_ENABLE) != 0;
    if (toX2 && !toEnabled) return;
    if (this.x2apic() && toEnabled && !toX2) return;
    if (!this.enabled() && toX2) return;
    const wasEnabled = this.enabled();
    const wasX2 = this.x2apic();
    this.apicBase = value;
    if (wasEnabled && !this.enabled()) this.powerOnRegisters();
    else if (!wasX2 && toX2) this.ldr = x2ApicLogicalId(<u32>this.cpu);
  }

  // ---- priorities ----------------------------------------------------------------------

  /** SDM 10.8.3.1: PPR is the TPR or the class of the highest in-service vector, whichever is higher. */
  ppr(): u32 {
    const isrv = this.isr.highest();
    const isrClass: u32 = isrv < 0 ? 0 : <u32>isrv & 0xf0;
    return (this.tpr & 0xf0) >= isrClass ? this.tpr : isrClass;
  }

  /**
   * SDM 10.6.2.4 arbitration priority: the TPR, unless an in-service or requested vector has
   * a higher class. (The SDM's "TPR[7:4] AND ISRV[7:4]" reads as the maximum of the three.)
   * QEMU: always 0.
   */
  private apr(): u32 {
    if (this.qemu) return 0;
    const isrv = this.isr.highest();
    const irrv = this.irr.highest();
    const tprClass = this.tpr & 0xf0;
    const isrClass: u32 = isrv < 0 ? 0 : <u32>isrv & 0xf0;
    const irrClass: u32 = irrv < 0 ? 0 : <u32>irrv & 0xf0;
    if (tprClass >= irrClass && tprClass > isrClass) return this.tpr;
    return max(tprClass, max(isrClass, irrClass));
  }

  // ---- interrupt acceptance -------------------------------------------------------------

  /** Whether a message's destination field (no shorthand) names this APIC. */
  @inline
  isDestination(m: ApicMessage): bool {
    if (this.x2apic()) return this.isX2Destination(m.wide ? m.dest : m.dest & 0xff, m.logical, m.wide);
    return this.isXDestination(m.dest & 0xff, m.logical);
  }

  /** SDM 10.12.9/10: 32-bit physical IDs, cluster logical IDs (16-bit cluster, 16 members). */
  private isX2Destination(dest: u32, logical: bool, wide: bool): bool {
    if (dest == (wide ? X2APIC_BROADCAST : XAPIC_BROADCAST)) return true;
    if (!logical) return dest == <u32>this.cpu;
    return dest >>> 16 == this.ldr >>> 16 && (dest & this.ldr & 0xffff) != 0;
  }

  @inline
  private isXDestination(dest: u32, logical: bool): bool {
    if (!logical) return dest == XAPIC_BROADCAST || dest == this.id >>> 24;
    const ldr = this.ldr >>> 24;
    const model = this.dfr >>> 28;
    if (this.qemu) {
      // QEMU: no logical broadcast; a DFR model other than flat or cluster matches nothing.
      if (model == DFR_FLAT) return (dest & ldr) != 0;
      return model == 0 && (dest & 0xf0) == (ldr & 0xf0) && (dest & ldr & 0xf) != 0;
    }
    if (dest == XAPIC_BROADCAST) return true;
    if (model == DFR_FLAT) return (dest & ldr) != 0;
    return dest >>> 4 == ldr >>> 4 && (dest & ldr & 0xf) != 0;
  }

  /**
   * An interrupt of delivery `mode` reaches this APIC. Fixed ones go to IRR, an NMI waits for
   * the CPU; INIT and start-up are only counted here (the board acts on the CPU).
   */
  @inline
  receive(mode: u32, vector: u32, level: bool): bool {
    if (mode == DeliveryMode.Fixed || mode == DeliveryMode.LowestPriority) return this.requestVector(vector & VECTOR_MASK, level);
    if (mode == DeliveryMode.ExtINT && this.qemu) return this.requestVector(vector & VECTOR_MASK, level); // QEMU: ExtINT sets IRR
    if (mode == DeliveryMode.SMI || mode >= <u32>DeliveryMode.NMI) {
      unchecked((this.cpuEvents[<i32>mode] += 1));
      if (mode == DeliveryMode.NMI) this.nmiPending = true;
      return true;
    }
    return false;
  }

  /** Whether a fixed or lowest-priority request would be accepted (for arbitration). */
  acceptsFixed(): bool {
    return this.qemu || this.softwareEnabled();
  }

  @inline
  nmiWaiting(): bool {
    return this.nmiPending;
  }

  /** The CPU takes the pending NMI. */
  takeNmi(): void {
    this.nmiPending = false;
  }

  setNmiPending(pending: bool): void {
    this.nmiPending = pending;
  }

  /** A fixed interrupt: into IRR (TMR records its trigger mode), unless it must be refused. */
  private requestVector(vector: u32, level: bool): bool {
    if (!this.qemu) {
      if (vector < FIRST_LEGAL_VECTOR) {
        this.signalError(ESR_RECEIVE_ILLEGAL_VECTOR);
        return false;
      }
      // QEMU: a software-disabled APIC still collects requests in IRR.
      if (!this.softwareEnabled()) return false;
    }
    this.irr.set(vector);
    if (level) this.tmr.set(vector);
    else this.tmr.unset(vector);
    return true;
  }

  @inline
  interruptPending(): bool {
    return this.deliverableVector() >= 0;
  }

  /** The highest requested vector if its class beats the PPR, else -1. */
  private deliverableVector(): i32 {
    if (!this.softwareEnabled()) return -1;
    const v = this.irr.highest();
    if (v < 0) return -1;
    const ppr = this.ppr();
    // QEMU: a PPR of 0 lets any vector through, even one of class 0.
    if (this.qemu && ppr == 0) return v;
    return (<u32>v & 0xf0) > (ppr & 0xf0) ? v : -1;
  }

  /** The CPU's interrupt acknowledge: the deliverable vector moves from IRR to ISR; -1 if none is. */
  acknowledge(): i32 {
    const v = this.deliverableVector();
    if (v < 0) return -1;
    this.irr.unset(<u32>v);
    this.isr.set(<u32>v);
    if (<u32>v == (unchecked(this.lvt[LVT_TIMER]) & VECTOR_MASK)) this.releaseTimer();
    return v;
  }

  @inline
  takeEoiBroadcast(): i32 {
    const v = this.eoiBroadcast;
    this.eoiBroadcast = -1;
    return v;
  }

  @inline
  private eoi(): void {
    const v = this.isr.highest();
    if (v < 0) return;
    this.isr.unset(<u32>v);
    if (this.tmr.test(<u32>v)) this.eoiBroadcast = v;
    if (this.qemu) return;
    // A level-triggered LINT waits for the EOI of its vector, then may deliver again.
    for (let i = LVT_LINT0; i <= LVT_LINT1; i++) {
      const entry = unchecked(this.lvt[i]);
      if ((entry & LVT_REMOTE_IRR) != 0 && (entry & VECTOR_MASK) == <u32>v) {
        unchecked((this.lvt[i] = entry & ~LVT_REMOTE_IRR));
        this.serviceLevelLint(i);
      }
    }
  }

  // ---- ICR -------------------------------------------------------------------------------

  @inline
  private sendIpi(): void {
    const low = this.icrLow;
    const mode = (low >>> MODE_SHIFT) & 7;
    const vector = low & VECTOR_MASK;
    const shorthand = (low >>> ICR_SHORTHAND_SHIFT) & 3;
    const deassert = mode == DeliveryMode.INIT && (low & ICR_ASSERT) == 0 && (low & ICR_LEVEL) != 0;
    const dest = this.x2apic() ? this.icrHigh : this.icrHigh >>> 24;
    if (this.qemu) {
      // QEMU: any mode to any shorthand; the trigger-mode bit reaches TMR; no vector check;
      // INIT level de-assert changes nothing.
      if (!deassert) this.send(shorthand, mode, vector, dest, (low & ICR_LEVEL) != 0);
      return;
    }
    // INIT level de-assert changes no CPU (SDM 10.6.1); 3 and 7 are reserved modes.
    if (deassert || mode == 3 || mode == DeliveryMode.ExtINT) return;
    const fixed = mode == DeliveryMode.Fixed || mode == DeliveryMode.LowestPriority;
    if (fixed && vector < FIRST_LEGAL_VECTOR) {
      this.signalError(ESR_SEND_ILLEGAL_VECTOR);
      return;
    }
    const toSelf = shorthand == Shorthand.Self || shorthand == Shorthand.AllIncludingSelf;
    if (toSelf && mode != DeliveryMode.Fixed) return;
    this.send(shorthand, mode, vector, dest, false); // IPIs are edge-triggered
  }

  /** Sends one IPI: the board routes it to every CPU it reaches once the register write ends. */
  @inline
  private send(shorthand: u32, mode: u32, vector: u32, dest: u32, level: bool): void {
    const m = this.message;
    m.source = this.cpu;
    m.dest = dest;
    m.wide = this.x2apic();
    m.logical = (this.icrLow & ICR_LOGICAL) != 0;
    m.shorthand = shorthand;
    m.mode = mode;
    m.vector = vector;
    m.level = level;
    this.sent = true;
  }

  /** The message the register write just made sent (once), or null. */
  @inline
  takeSentMessage(): ApicMessage | null {
    if (!this.sent) return null;
    this.sent = false;
    return this.message;
  }

  // ---- local vector table ----------------------------------------------------------------

  private writeLvt(i: i32, value: u32, now: i64): void {
    const old = unchecked(this.lvt[i]);
    let entry: u32;
    if (this.qemu) {
      // QEMU: stores all 32 bits and does not force the mask while software-disabled.
      entry = value;
    } else {
      entry = (value & unchecked(LVT_WRITABLE[i])) | (old & LVT_REMOTE_IRR);
      // SDM 10.4.7.2: while software-disabled, the mask bits stay set.
      if (!this.softwareEnabled()) entry |= LVT_MASKED;
    }
    unchecked((this.lvt[i] = entry));
    if (i == LVT_TIMER) {
      this.releaseTimer();
      this.timer.writeLvt(timerModeOf(entry, this.qemu), (entry & LVT_MASKED) != 0, now);
    } else if (i == LVT_LINT0 || i == LVT_LINT1) {
      // QEMU: rewriting LINT0 while its input is high delivers again.
      if (this.qemu) {
        if (i == LVT_LINT0 && (this.lintLevels & 1) != 0) this.localInterrupt(i);
      } else {
        this.serviceLevelLint(i);
      }
    }
  }

  private writeSvr(value: u32, now: i64): void {
    this.svr = value & (this.qemu ? SVR_WRITABLE_QEMU : SVR_WRITABLE);
    if (this.qemu || this.softwareEnabled()) return;
    for (let i = 0; i < LVT_COUNT; i++) unchecked((this.lvt[i] |= LVT_MASKED));
    this.releaseTimer();
    this.timer.writeLvt(this.timer.mode, true, now);
  }

  setLint0(level: bool): void {
    this.setLint(LVT_LINT0, level);
  }

  setLint1(level: bool): void {
    this.setLint(LVT_LINT1, level);
  }

  private setLint(i: i32, level: bool): void {
    const bit: u32 = 1 << <u32>(i - LVT_LINT0);
    const wasAsserted = this.lintAsserted(i);
    this.lintLevels = level ? this.lintLevels | bit : this.lintLevels & ~bit;
    const entry = unchecked(this.lvt[i]);
    const mode = (entry >>> MODE_SHIFT) & 7;
    if (this.qemu) {
      // QEMU: every rise delivers; a fall withdraws a level-triggered fixed request.
      if (level) this.localInterrupt(i);
      else if (mode == DeliveryMode.Fixed && (entry & LVT_LEVEL) != 0) {
        this.irr.unset(entry & VECTOR_MASK);
        if ((entry & VECTOR_MASK) == (unchecked(this.lvt[LVT_TIMER]) & VECTOR_MASK)) this.releaseTimer();
      }
      return;
    }
    if (mode == DeliveryMode.Fixed && (entry & LVT_LEVEL) != 0) this.serviceLevelLint(i);
    else if (!wasAsserted && this.lintAsserted(i)) this.localInterrupt(i);
  }

  /** A LINT pin is asserted when its level differs from the polarity (QEMU: ignores polarity). */
  private lintAsserted(i: i32): bool {
    const high = ((this.lintLevels >>> <u32>(i - LVT_LINT0)) & 1) != 0;
    if (this.qemu) return high;
    return high != ((unchecked(this.lvt[i]) & LVT_ACTIVE_LOW) != 0);
  }

  /** A level-triggered fixed LINT delivers while asserted, once per EOI (remote IRR). */
  private serviceLevelLint(i: i32): void {
    const entry = unchecked(this.lvt[i]);
    if ((entry & (LVT_MASKED | LVT_REMOTE_IRR | LVT_LEVEL)) != LVT_LEVEL) return;
    if (((entry >>> MODE_SHIFT) & 7) != DeliveryMode.Fixed || !this.lintAsserted(i)) return;
    if (this.requestVector(entry & VECTOR_MASK, true)) unchecked((this.lvt[i] = entry | LVT_REMOTE_IRR));
  }

  /** One interrupt from LVT source `i` (timer expiry, LINT edge, error). */
  private localInterrupt(i: i32): void {
    const entry = unchecked(this.lvt[i]);
    if ((entry & LVT_MASKED) != 0) return;
    const mode = (entry >>> MODE_SHIFT) & 7;
    // ExtINT reaches the CPU through extIntPending(), not IRR.
    if (mode == DeliveryMode.Fixed) {
      const level = (i == LVT_LINT0 || i == LVT_LINT1) && (entry & LVT_LEVEL) != 0;
      this.requestVector(entry & VECTOR_MASK, level);
    } else if (mode == DeliveryMode.SMI || mode == DeliveryMode.NMI || (mode == DeliveryMode.INIT && !this.qemu)) {
      this.receive(mode, 0, false);
    }
  }

  /** LINT0 programmed ExtINT, unmasked and asserted: the CPU should acknowledge the PIC. */
  @inline
  extIntPending(): bool {
    const entry = unchecked(this.lvt[LVT_LINT0]);
    return (entry & LVT_MASKED) == 0 && ((entry >>> MODE_SHIFT) & 7) == DeliveryMode.ExtINT && this.lintAsserted(LVT_LINT0);
  }

  // ---- errors ----------------------------------------------------------------------------

  /** SDM 10.5.3: an error sets its ESR bit (visible after the next ESR write) and raises the error LVT. */
  private signalError(bit: u32): void {
    if (this.qemu) {
      // QEMU: only illegal register addresses are detected, straight into the readable ESR.
      if (bit == ESR_ILLEGAL_REGISTER) this.esr |= bit;
      return;
    }
    this.esrPending |= bit;
    const entry = unchecked(this.lvt[LVT_ERROR]);
    if ((entry & LVT_MASKED) != 0) return;
    // An error vector that is itself illegal is one more error, not another interrupt.
    if ((entry & VECTOR_MASK) < FIRST_LEGAL_VECTOR) this.esrPending |= ESR_RECEIVE_ILLEGAL_VECTOR;
    else this.requestVector(entry & VECTOR_MASK, false);
  }

  /** Write-then-read: the write latches the errors detected so far. QEMU: writes are ignored. */
  private writeEsr(): void {
    if (this.qemu) return;
    this.esr = this.esrPending;
    this.esrPending = 0;
  }

  // ---- test-only view --------------------------------------------------------------------

  inspect(io: FieldIO): void {
    io.wide("apicBase", this.apicBase);
    io.field("id", this.id);
    io.field("tpr", this.tpr);
    io.field("ppr", this.ppr());
    io.field("ldr", this.ldr);
    io.field("dfr", this.dfr);
    io.field("svr", this.svr);
    this.isr.describe(io, "isr");
    this.tmr.describe(io, "tmr");
    this.irr.describe(io, "irr");
    io.field("esr", this.esr);
    io.field("esrPending", this.esrPending);
    io.field("icrLow", this.icrLow);
    io.field("icrHigh", this.icrHigh);
    describeWords(io, "lvt", this.lvt);
    io.field("lintLevels", this.lintLevels);
    io.flag("nmiPending", this.nmiPending);
    io.begin("timer");
    this.timer.inspect(io);
    io.end();
    io.begin("cpuEvents");
    io.field("smi", unchecked(this.cpuEvents[DeliveryMode.SMI]));
    io.field("nmi", unchecked(this.cpuEvents[DeliveryMode.NMI]));
    io.field("init", unchecked(this.cpuEvents[DeliveryMode.INIT]));
    io.field("startup", unchecked(this.cpuEvents[DeliveryMode.StartUp]));
    io.field("extint", unchecked(this.cpuEvents[DeliveryMode.ExtINT]));
    io.end();
  }
}

function describeWords(io: FieldIO, name: string, words: StaticArray<u32>): void {
  io.begin(name);
  for (let i = 0; i < words.length; i++) io.field(i.toString(), unchecked(words[i]));
  io.end();
}
