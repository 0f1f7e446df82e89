// The PC board: the wiring between the interrupt and timer chips, the decode of port, MMIO and
// MSR accesses, the CPUs (each with its own local APIC, its interrupt pin and its activity
// state), the APIC bus between them, and the virtual clock. The devices know nothing of each
// other; every signal between them passes through here (spec: "Board wiring", "Several CPUs";
// docs/hypervisor.md).

import { BoardConfig, MAX_CPUS } from "./config";
import { InterruptAnswer, SipiState } from "../abi/codes";
import { NEVER, edgesAt } from "../common/clock";
import { FieldIO } from "../common/fields";
import { PIT_CONTROL_PORT, pitCommandOnlyLatches } from "../registers/pit";
import { ApicMessage, ApicMessageSink, DeliveryMode, FROM_BUS } from "../devices/apic-message";
import { Shorthand, isX2ApicMsr } from "../registers/lapic";
import { PicPair } from "../devices/pic";
import { Pit8254 } from "../devices/pit";
import { LocalApic } from "../devices/lapic";
import { IoApic } from "../devices/ioapic";

export const IOAPIC_BASE: u32 = 0xfec00000;
const IOAPIC_PAGE: u32 = IOAPIC_BASE >>> 12;
const MSR_TSC: u32 = 0x10;
const MSR_APIC_BASE: u32 = 0x1b;
const MSR_TSC_DEADLINE: u32 = 0x6e0;

/** Messages from the I/O APIC reach the local APICs through the board. */
class ApicBusRouter extends ApicMessageSink {
  private fromBus: ApicMessage = new ApicMessage();
  constructor(private board: Board) {
    super();
  }
  deliver(dest: u32, logical: bool, mode: u32, vector: u32, level: bool): bool {
    const m = this.fromBus;
    m.source = FROM_BUS;
    m.dest = dest & 0xff;
    m.wide = false;
    m.logical = logical;
    m.shorthand = Shorthand.None;
    m.mode = mode;
    m.vector = vector;
    m.level = level;
    return this.board.routeMessage(m);
  }
}

/**
 * What happens to a CPU on an INIT or start-up message. The board carries them out itself;
 * a hypervisor that must see them (VMX exits on both) puts itself in between.
 */
export class CpuSignals {
  constructor(protected board: Board) {}
  init(cpu: i32): void {
    this.board.performInit(cpu);
  }
  startUp(cpu: i32, vector: u32): void {
    this.board.performStartUp(cpu, vector);
  }
}

/** I/O APIC pin fed by ISA line `line`: line 0 is routed to pin 2 (interrupt source override). */
@inline
function ioapicPinOf(line: i32): i32 {
  return line == 0 ? 2 : line;
}

export class Board {
  config: BoardConfig = new BoardConfig();
  pic: PicPair = new PicPair();
  pit: Pit8254 = new Pit8254();
  /**
   * The CPUs' local APICs, made as a board first needs them (the core's collector walks every
   * live object, so a one-CPU board keeps one); the first config.cpus are on the board.
   */
  lapics: Array<LocalApic> = new Array<LocalApic>();
  private router!: ApicBusRouter;
  /** The current CPU's local APIC: the one its accesses and acknowledges reach (CPU 0's to begin with). */
  lapic: LocalApic = new LocalApic();
  /** The CPU whose accesses and acknowledges the board is performing. */
  cpu: i32 = 0;
  /** Whether the current CPU runs (is not waiting for a start-up IPI). */
  cpuRunning: bool = true;
  ioapic: IoApic = new IoApic();
  signals!: CpuSignals;
  now: i64 = 0;
  /** Per CPU: SipiState.Reset, SipiState.Waiting, or the start-up vector it left the wait on. */
  private sipi: StaticArray<i32> = new StaticArray<i32>(MAX_CPUS);

  /** ISA line levels driven from outside the board (trace `irq`, hypervisor). */
  private isaDriven: u32 = 0;
  /** Effective ISA line levels, as the PIC and I/O APIC see them. */
  private isaLevels: u32 = 0;
  /** Levels driven straight onto I/O APIC pins (trace `gsi`). */
  private gsiDriven: u32 = 0;
  /** Effective I/O APIC pin levels. */
  private pinLevels: u32 = 0;
  private pitRouted: bool = true;
  private intr: bool = false;
  /**
   * A time no later than the earliest timer event, remembered so that advancing the clock
   * between accesses costs a compare: an advance short of it fires nothing; one that reaches it
   * works the timers out again (firing what is due) and remembers the next event exactly.
   * Forgotten by every operation that can move the PIT or every timer at once: PIT writes other
   * than latch commands, line changes, IA32_APIC_BASE writes, reset. An operation on one local
   * APIC (an MMIO or MSR write, an acknowledge, a LINT0 change) lowers it to that APIC's next
   * timer event if that is earlier; an event moved later leaves it early, which costs one look
   * at the timers when the clock gets there. Port reads, PIC and I/O APIC writes, MMIO reads,
   * PIC acknowledges and message deliveries move no timer. The PIT's next event is remembered on
   * its own, so that looking at the timers again does not work it out again.
   */
  private nextEvent: i64 = NEVER;
  private nextEventKnown: bool = false;
  private nextPit: i64 = NEVER;
  private nextPitKnown: bool = false;

  constructor() {
    this.router = new ApicBusRouter(this);
    this.ioapic.sink = this.router;
    this.addLapic(this.lapic);
    this.signals = new CpuSignals(this);
  }

  private addLapics(count: i32): void {
    while (this.lapics.length < count) this.addLapic(new LocalApic());
  }

  private addLapic(apic: LocalApic): void {
    apic.attach(this.lapics.length);
    this.lapics.push(apic);
  }

  /** Number of CPUs on the board. */
  @inline
  get cpuCount(): i32 {
    return this.config.cpus;
  }

  /** Makes CPU `k` (0 ≤ k < cpuCount) the one whose accesses the board performs. */
  selectCpu(k: i32): void {
    this.cpu = k;
    this.lapic = unchecked(this.lapics[k]);
    this.cpuRunning = unchecked(this.sipi[k]) != SipiState.Waiting;
  }

  /** CPU `k`'s start-up: SipiState.Reset, SipiState.Waiting, or the vector it started on. */
  sipiState(k: i32): i32 {
    return unchecked(this.sipi[k]);
  }

  /** Puts CPU `k` in a start-up state (a hypervisor writing a VMCS's activity state). */
  setSipiState(k: i32, state: i32): void {
    unchecked((this.sipi[k] = state));
    if (k == this.cpu) this.selectCpu(k);
  }

  /** Power-on reset of the whole board, with the clock starting at `start`. */
  reset(start: i64): void {
    const c = this.config;
    this.now = start;
    this.timersTouched();
    this.isaDriven = 0;
    this.isaLevels = 0;
    this.gsiDriven = 0;
    this.pinLevels = 0;
    this.intr = false;
    // Without a PIT nothing drives the wire, and line 0 is an ordinary external line.
    this.pitRouted = c.pitIrq0 && c.pit;
    this.pic.reset();
    this.pic.compatQemu = c.compatQemu;
    this.pit.reset();
    this.pit.compatQemu = c.compatQemu;
    this.addLapics(min(c.cpus, MAX_CPUS));
    for (let k = 0; k < c.cpus; k++) {
      const apic = unchecked(this.lapics[k]);
      apic.reset();
      apic.compatQemu = c.compatQemu;
      apic.busHz = c.apicBusHz;
      apic.tscHz = c.tscHz;
      if (c.lapic) apic.syncTo(start);
      // At reset every application processor waits for a start-up IPI.
      unchecked((this.sipi[k] = k == 0 ? SipiState.Reset : SipiState.Waiting));
    }
    this.selectCpu(0);
    this.ioapic.reset();
    this.ioapic.compatQemu = c.compatQemu;
    if (c.pit) this.pit.syncTo(start);
    this.followPitOut0();
  }

  // ---- time ----------------------------------------------------------------------------

  /** Runs the clock to `t`, firing every timer event on the way in time order. */
  @inline
  advanceTo(t: i64): void {
    if (t < this.now) return;
    if (this.nextEventKnown && this.nextEvent > t) this.now = t;
    else this.runTimersTo(t);
  }

  /** advanceTo() when a timer event may fall on the way: fires them all, then finds the next. */
  private runTimersTo(t: i64): void {
    while (true) {
      if (!this.nextPitKnown) {
        this.nextPit = this.nextPitEvent();
        this.nextPitKnown = true;
      }
      const tp = this.nextPit;
      const tl = this.nextLapicEvent();
      const tn = tp < tl ? tp : tl;
      if (tn > t) {
        this.nextEvent = tn;
        break;
      }
      // A local APIC timer's expiry leaves the PIT's schedule as it was; anything it sets off
      // that could move the PIT forgets it (timersTouched).
      if (tp == tn) {
        this.nextPitKnown = false;
        this.pit.syncTo(tn);
        this.followPitOut0();
      }
      if (tl == tn) this.syncLapicsTo(tn);
    }
    this.nextEventKnown = true;
    this.now = t;
  }

  /** A timer may have moved: the next advance looks again. */
  @inline
  private timersTouched(): void {
    this.nextEventKnown = false;
    this.nextPitKnown = false;
  }

  /** After an operation on `apic` that may have moved its timer: keeps nextEvent no later than it. */
  @inline
  private followLapicTimer(apic: LocalApic): void {
    const t = apic.nextTimerEvent();
    if (t < this.nextEvent) this.nextEvent = t;
  }

  /** The earliest pending device timer event (PIT OUT0 change or local APIC timer). */
  nextTimerEvent(): i64 {
    const tp = this.nextPitEvent();
    const tl = this.nextLapicEvent();
    return tp < tl ? tp : tl;
  }

  /** OUT0 changes matter to the board only while they drive ISA line 0. */
  @inline
  private nextPitEvent(): i64 {
    return this.pitRouted ? this.pit.nextOut0Change() : NEVER;
  }

  @inline
  private nextLapicEvent(): i64 {
    if (!this.config.lapic) return NEVER;
    const n = this.config.cpus;
    if (n == 1) return this.lapic.nextTimerEvent();
    let next = NEVER;
    for (let k = 0; k < n; k++) {
      const t = unchecked(this.lapics[k]).nextTimerEvent();
      if (t < next) next = t;
    }
    return next;
  }

  private syncLapicsTo(t: i64): void {
    for (let k = 0, n = this.config.cpus; k < n; k++) unchecked(this.lapics[k]).syncTo(t);
  }

  // ---- port I/O -------------------------------------------------------------------------

  /** One byte from an I/O port; unassigned ports float high. */
  @inline
  inByte(port: u32): u32 {
    const c = this.config;
    if (c.pic && isPicPort(port)) return this.pic.ioRead(port);
    if (c.pit && isPitPort(port)) return this.pit.ioRead(port, this.now);
    return 0xff;
  }

  outByte(port: u32, value: u32): void {
    const c = this.config;
    if (c.pic && isPicPort(port)) {
      this.pic.ioWrite(port, value & 0xff);
      this.followPicInt();
    } else if (c.pit && isPitPort(port)) {
      // A latch or read-back command moves no counting element, so OUT0 and the timers stay.
      const onlyLatches = port == PIT_CONTROL_PORT && pitCommandOnlyLatches(value & 0xff);
      this.pit.ioWrite(port, value & 0xff, this.now);
      if (onlyLatches) return;
      this.timersTouched();
      this.followPitOut0();
    }
  }

  /** A port read of `size` bytes: the 8-bit devices see one byte cycle per port, low first. */
  portRead(port: u32, size: i32): u32 {
    let v: u32 = 0;
    for (let i = 0; i < size; i++) v |= this.inByte((port + <u32>i) & 0xffff) << (<u32>i * 8);
    return v;
  }

  portWrite(port: u32, value: u32, size: i32): void {
    for (let i = 0; i < size; i++) this.outByte((port + <u32>i) & 0xffff, (value >>> (<u32>i * 8)) & 0xff);
  }

  // ---- MMIO -----------------------------------------------------------------------------

  /** Whether `addr` decodes to the local APIC page (it follows IA32_APIC_BASE). */
  @inline
  isLapicAddr(addr: u32): bool {
    return this.config.lapic && this.lapic.pageDecoded() && (addr & 0xfffff000) == this.lapic.base();
  }

  @inline
  isIoapicAddr(addr: u32): bool {
    return this.config.ioapic && addr >>> 12 == IOAPIC_PAGE;
  }

  @inline
  mmioRead(addr: u32): u32 {
    if (this.isLapicAddr(addr)) return this.lapic.mmioRead(addr & 0xfff, this.now);
    if (this.isIoapicAddr(addr)) return this.ioapic.mmioRead(addr & 0xfff);
    return 0xffffffff;
  }

  @inline
  mmioWrite(addr: u32, value: u32): void {
    if (this.isLapicAddr(addr)) {
      this.lapic.mmioWrite(addr & 0xfff, value, this.now);
      this.routeSentMessage();
      this.followLapicTimer(this.lapic);
      this.forwardEoiBroadcast();
    } else if (this.isIoapicAddr(addr)) {
      this.ioapic.mmioWrite(addr & 0xfff, value);
    }
  }

  // ---- MSRs -----------------------------------------------------------------------------

  rdmsr(msr: u32): u64 {
    if (msr == MSR_TSC) return <u64>edgesAt(this.now, this.config.tscHz);
    if (this.config.lapic && (msr == MSR_APIC_BASE || msr == MSR_TSC_DEADLINE || isX2ApicMsr(msr))) {
      return this.lapic.rdmsr(msr, this.now);
    }
    return 0;
  }

  wrmsr(msr: u32, value: u64): void {
    if (this.config.lapic && (msr == MSR_APIC_BASE || msr == MSR_TSC_DEADLINE || isX2ApicMsr(msr))) {
      this.lapic.wrmsr(msr, value, this.now);
      this.routeSentMessage();
      this.followLapicTimer(this.lapic);
      if (msr == MSR_APIC_BASE) {
        // A globally disabled APIC hands the PIC's INT straight to the CPU, and back; LINT0
        // changing on every CPU may release a held timer anywhere.
        this.followPicInt();
        this.timersTouched();
      } else {
        this.forwardEoiBroadcast();
      }
    }
  }

  // ---- interrupt lines -----------------------------------------------------------------

  isaLine(line: i32): bool {
    return ((this.isaLevels >>> (<u32>line & 15)) & 1) != 0;
  }

  gsiLine(pin: i32): bool {
    return ((this.gsiDriven >>> <u32>pin) & 1) != 0;
  }

  /** An external source drives ISA line 0–15. Line 0 follows PIT OUT0 while it is routed. */
  setIsaLine(line: i32, level: bool): void {
    this.timersTouched();
    const bit: u32 = 1 << (<u32>line & 15);
    this.isaDriven = level ? this.isaDriven | bit : this.isaDriven & ~bit;
    if (line != 0 || !this.pitRouted) this.applyIsaLine(line & 15, level);
  }

  /** An external source drives I/O APIC pin 0–23 directly. */
  setGsiLine(pin: i32, level: bool): void {
    this.timersTouched();
    const bit: u32 = 1 << <u32>pin;
    this.gsiDriven = level ? this.gsiDriven | bit : this.gsiDriven & ~bit;
    this.updatePin(pin);
  }

  pitIrq0Routed(): bool {
    return this.pitRouted;
  }

  /** Connects PIT OUT0 to ISA line 0, or hands the line back to its external driver. */
  setPitIrq0Route(connected: bool): void {
    this.timersTouched();
    this.pitRouted = connected && this.config.pit;
    if (connected) this.followPitOut0();
    else this.applyIsaLine(0, (this.isaDriven & 1) != 0);
  }

  private followPitOut0(): void {
    if (this.pitRouted) this.applyIsaLine(0, this.pit.out0());
  }

  private applyIsaLine(line: i32, level: bool): void {
    const bit: u32 = 1 << <u32>line;
    if (((this.isaLevels & bit) != 0) == level) return;
    this.isaLevels = level ? this.isaLevels | bit : this.isaLevels & ~bit;
    if (this.config.pic) {
      this.pic.setIrq(line, level);
      this.followPicInt();
    }
    this.updatePin(ioapicPinOf(line));
  }

  /** An I/O APIC pin sees its direct driver OR every ISA line routed to it. */
  private updatePin(pin: i32): void {
    let level = ((this.gsiDriven >>> <u32>pin) & 1) != 0;
    if (pin < 16) {
      if (pin == 2) level = level || (this.isaLevels & 0b101) != 0;
      else if (pin != 0) level = level || ((this.isaLevels >>> <u32>pin) & 1) != 0;
    }
    const bit: u32 = 1 << <u32>pin;
    if (((this.pinLevels & bit) != 0) == level) return;
    this.pinLevels = level ? this.pinLevels | bit : this.pinLevels & ~bit;
    if (this.config.ioapic) this.ioapic.setPin(pin, level);
  }

  /** The master PIC's INT output feeds LINT0 of every CPU's local APIC. */
  private followPicInt(): void {
    const level = this.config.pic && this.pic.intOutput();
    if (level == this.intr) return;
    this.intr = level;
    if (!this.config.lapic) return;
    // QEMU: LINT0 falling may take a held timer's vector out of IRR and so release the timer.
    for (let k = 0, n = this.config.cpus; k < n; k++) {
      const apic = unchecked(this.lapics[k]);
      apic.setLint0(level);
      this.followLapicTimer(apic);
    }
  }

  /** An IPI (or, QEMU, an MSI) the current CPU's APIC sent in the register write just done. */
  @inline
  private routeSentMessage(): void {
    const m = this.lapic.takeSentMessage();
    if (m) this.routeMessage(m);
  }

  @inline
  private forwardEoiBroadcast(): void {
    const vector = this.lapic.takeEoiBroadcast();
    if (vector >= 0 && this.config.ioapic) this.ioapic.eoi(<u32>vector);
  }

  // ---- the APIC bus: IPIs and I/O APIC messages -----------------------------------------

  /**
   * Delivers one message to every CPU it reaches (spec "Several CPUs"): the shorthand or the
   * destination picks the CPUs; lowest priority then picks one of them. Returns whether some
   * local APIC accepted it.
   */
  routeMessage(m: ApicMessage): bool {
    if (!this.config.lapic) return false;
    const n = this.config.cpus;
    // QEMU: start-up is not an I/O APIC or MSI delivery mode; the datasheet reserves it there too.
    if (m.source == FROM_BUS && m.mode == DeliveryMode.StartUp) return false;
    if (m.mode == DeliveryMode.LowestPriority) {
      const k = this.lowestPriorityTarget(m);
      return k >= 0 && this.deliverTo(k, m);
    }
    let accepted = false;
    for (let k = 0; k < n; k++) if (this.reaches(k, m) && this.deliverTo(k, m)) accepted = true;
    return accepted;
  }

  /** Whether message `m` reaches CPU `k`'s (globally enabled) local APIC. */
  @inline
  private reaches(k: i32, m: ApicMessage): bool {
    const apic = unchecked(this.lapics[k]);
    if (!apic.enabled()) return false;
    switch (m.shorthand) {
      case Shorthand.Self:
        return k == m.source;
      case Shorthand.AllIncludingSelf:
        return true;
      case Shorthand.AllExcludingSelf:
        return k != m.source;
    }
    return apic.isDestination(m);
  }

  /**
   * SDM 10.6.2.4: the destination CPU with the lowest processor priority, a tie going to the
   * lowest APIC ID; -1 if none would accept. QEMU: the first CPU of the destination set.
   */
  private lowestPriorityTarget(m: ApicMessage): i32 {
    let best = -1;
    let bestPpr: u32 = 0;
    let bestId: u32 = 0;
    for (let k = 0, n = this.config.cpus; k < n; k++) {
      if (!this.reaches(k, m)) continue;
      const apic = unchecked(this.lapics[k]);
      if (this.config.compatQemu) return k;
      if (!apic.acceptsFixed()) continue;
      const ppr = apic.ppr();
      const id = apic.apicId();
      if (best < 0 || ppr < bestPpr || (ppr == bestPpr && id < bestId)) {
        best = k;
        bestPpr = ppr;
        bestId = id;
      }
    }
    return best;
  }

  /**
   * Message `m` reaches CPU `k`: its APIC takes it (into IRR, ESR or the CPU's pending events,
   * never moving its timer); INIT and start-up act on the CPU.
   */
  @inline
  private deliverTo(k: i32, m: ApicMessage): bool {
    const accepted = unchecked(this.lapics[k]).receive(m.mode, m.vector, m.level);
    if (m.mode == DeliveryMode.INIT) this.signals.init(k);
    else if (m.mode == DeliveryMode.StartUp && unchecked(this.sipi[k]) == SipiState.Waiting) this.signals.startUp(k, m.vector & 0xff);
    return accepted;
  }

  /** INIT: the local APIC to its INIT state, an application processor to wait-for-SIPI. */
  performInit(k: i32): void {
    unchecked(this.lapics[k]).initReset();
    if (k != 0) unchecked((this.sipi[k] = SipiState.Waiting));
    if (k == this.cpu) this.selectCpu(k);
  }

  /** The first start-up IPI to a waiting CPU starts it; any later one is ignored. */
  performStartUp(k: i32, vector: u32): void {
    if (unchecked(this.sipi[k]) != SipiState.Waiting) return;
    unchecked((this.sipi[k] = <i32>vector));
    if (k == this.cpu) this.selectCpu(k);
  }

  // ---- the current CPU's interrupt pin ----------------------------------------------------

  /** Whether the local APIC is in the path between the PIC and the CPU. */
  @inline
  private apicActive(): bool {
    return this.config.lapic && this.lapic.enabled();
  }

  /** Whether the current CPU's interrupt pin is asserted: inta() would return something. */
  interruptRequested(): bool {
    if (!this.cpuRunning) return false;
    if (!this.config.lapic) return this.intr;
    if (this.lapic.nmiWaiting()) return true;
    if (!this.apicActive()) return this.intr;
    return this.lapic.interruptPending() || (this.config.pic && this.lapic.extIntPending());
  }

  /**
   * The current CPU, with interrupts enabled, takes the next interrupt: InterruptAnswer.Nmi,
   * its vector, or InterruptAnswer.None. A pending NMI goes first, then an ExtINT through
   * LINT0 — it ignores the APIC's priorities — then a fixed interrupt from the local APIC
   * (QEMU orders them the same way); without a (globally enabled) local APIC the PIC's INT
   * reaches the CPU directly. A CPU waiting for a start-up IPI takes nothing.
   */
  inta(): i32 {
    if (!this.cpuRunning) return InterruptAnswer.None;
    const c = this.config;
    const lapic = this.lapic;
    if (c.lapic && lapic.nmiWaiting()) {
      lapic.takeNmi();
      return InterruptAnswer.Nmi;
    }
    if (this.apicActive()) {
      // The acknowledge carries no time: bring the APIC timer up to now first.
      lapic.syncTo(this.now);
      if (!(c.pic && lapic.extIntPending())) {
        const vector = lapic.acknowledge();
        if (vector < 0) return InterruptAnswer.None;
        // Taking the timer's own request lets a held timer count again.
        this.followLapicTimer(lapic);
        return vector;
      }
    } else if (!this.intr || !c.pic) {
      return InterruptAnswer.None;
    }
    const vector = this.pic.acknowledge();
    this.followPicInt();
    return vector;
  }

  // ---- test-only view ------------------------------------------------------------------

  /** Every device's complete internal state (tests only: capture never calls this). */
  inspect(io: FieldIO): void {
    this.timersTouched();
    io.begin("pic");
    this.pic.inspect(io);
    io.end();
    io.begin("pit");
    this.pit.inspect(io);
    io.end();
    io.begin("lapic");
    unchecked(this.lapics[0]).inspect(io);
    io.end();
    if (this.config.cpus > 1) {
      io.begin("cpus");
      for (let k = 1; k < this.config.cpus; k++) {
        io.beginIndex(k);
        unchecked(this.lapics[k]).inspect(io);
        io.end();
      }
      io.end();
    }
    io.begin("ioapic");
    this.ioapic.inspect(io);
    io.end();
    io.begin("board");
    io.field("isaLevels", this.isaLevels);
    io.field("gsiDriven", this.gsiDriven);
    io.flag("pitRouted", this.pitRouted);
    io.end();
    io.begin("sipi");
    for (let k = 0; k < this.config.cpus; k++) io.field(k.toString(), <u32>unchecked(this.sipi[k]));
    io.end();
  }
}

/** 0x20–0x21 (master), 0xa0–0xa1 (slave), 0x4d0–0x4d1 (ELCR). */
@inline
export function isPicPort(port: u32): bool {
  return (port & ~0x81) == 0x20 || (port & ~1) == 0x4d0;
}

/** 0x40–0x43 (the channels and the control port), 0x61 (gate 2, speaker, OUT2). */
@inline
export function isPitPort(port: u32): bool {
  return (port & ~3) == 0x40 || port == 0x61;
}
