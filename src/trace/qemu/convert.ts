// Turns parsed QEMU log lines into blmv-trace events, one line at a time.
//
// Accesses to the modelled devices become port/MMIO events and keep every read's value as its
// expectation, except the bits that depend on a time the log cannot pin down (counted by
// reason). Interrupt-line changes become irq/gsi events — including the PIT's own OUT0 edges on
// GSI 0, because the traces are replayed with `!wire pit-irq0=off` — and each interrupt the CPU
// accepted becomes `inta = vector`. MSIs (the I/O APIC's own deliveries) are counted, not
// replayed: the model's I/O APIC produces them itself. In a log from several vCPUs each event
// goes to the CPU that performed it, with a `cpu K` event where that changes (docs/traces.md).

import { Check, OP_NAMES, Op, makeEvent, valueWidthMask, type TraceEvent } from "../event.js";
import type { GsiLevel, HandlerEntry, InstructionTime, LogLine, RegionAccess } from "./log.js";
import { VirtualClock } from "./clock.js";
import { bump, emptyCounts } from "./summary.js";
import { HPET_BASE, HPET_WINDOW, QemuHpetRoute } from "./hpet.js";
import { InterruptRequests } from "./requests.js";
import { NO_FRAME, QemuLapicTiming, QemuPitTiming, type ReadDependence } from "./timers.js";

/**
 * A log whose CPUs cannot be told apart: a timed log from more than one CPU (the iotime
 * plugin's instruction counter is one for all vCPUs), or an access by a CPU beyond the count
 * the import was set up for.
 */
export class MultiCpuLogError extends Error {
  override readonly name = "MultiCpuLogError";
  constructor(readonly line: number, cpu: number, why: string) {
    super(`line ${line}: access by cpu ${cpu}; ${why}`);
  }
}

const PIC_AND_ELCR = new Set([0x20, 0x21, 0xa0, 0xa1, 0x4d0, 0x4d1]);
const LAPIC_PAGE = 0x1000;
/** QEMU's `apic-msi` region: the local APIC page and, beyond it, the MSI window. */
const APIC_MSI_WINDOW = 0x10_0000;
const IOAPIC_BASE = 0xfec0_0000;
const IOAPIC_WINDOW = 0x1000;
const LAPIC_CURRENT_COUNT = 0x390;
const IA32_APIC_BASE = 0x1b;
const PAGE_FAULT = 14;
/** Page-fault error code bit 4 (I/D): the fault was raised by an instruction fetch. */
const PF_INSTRUCTION_FETCH = 0x10;
const UNKNOWN_SAMPLES = 5;
/** Lines held while waiting for the next `iotime` line (untimed: the next vCPU access); beyond this they are handled without it. */
const MAX_HELD_LINES = 200_000;

/**
 * Lines performed by the CPU that runs next, which they do not name (`-d int` output): in an
 * untimed log they wait for the next access by a vCPU, which names it (docs/traces.md).
 */
const RUNNING_CPU_LINES: ReadonlySet<LogLine["kind"]> = new Set(["interrupt", "handler-entry", "exception", "apic-base"]);
/** IA32_APIC_BASE bit 8: the bootstrap processor, which QEMU hard-wires to CPU 0. */
const APIC_BASE_BSP = 1 << 8;

/** Lines that do not end a delivery chain by themselves (accesses decide for themselves). */
const CHAIN_LINES: ReadonlySet<LogLine["kind"]> = new Set(["access", "detail", "apic-message", "cpu-dump", "blank", "lvt"]);

/** A page fault entering its handler (the `-d int` header carries the error code). */
function isPageFault(entry: LogLine): entry is HandlerEntry {
  return entry.kind === "handler-entry" && entry.vector === PAGE_FAULT && !entry.software;
}

/** A page fault raised while fetching the instruction: the plugin never counted that instruction. */
function isFetchFault(entry: HandlerEntry): boolean {
  return (entry.errorCode & PF_INSTRUCTION_FETCH) !== 0;
}

type Target = "pic" | "pit" | "port61" | "lapic" | "ioapic" | "msi" | "hpet" | "other";

const PORT_WRITE: Record<number, Op> = { 1: Op.Outb, 2: Op.Outw, 4: Op.Outl };
const PORT_READ: Record<number, Op> = { 1: Op.Inb, 2: Op.Inw, 4: Op.Inl };

export class QemuLogConverter {
  readonly counts = emptyCounts();
  readonly clock: VirtualClock;
  private readonly pit: QemuPitTiming;
  /** One local APIC timer mirror per CPU. */
  private readonly lapics: QemuLapicTiming[];
  /** Which CPU asked for which vector (to attribute accepted interrupts). */
  private readonly requests: InterruptRequests;
  private readonly hpet = new QemuHpetRoute();
  private apicBase = 0xfee0_0000;
  private out: TraceEvent[] = [];
  /**
   * Timed logs: lines since the last `iotime` line, handled once the next one is known.
   * Untimed logs: lines since one that the running CPU performed, handled at the next access.
   */
  private held: [LogLine, number][] = [];
  /** The CPU that performs the lines being handled (the last or, for held lines, the next access's). */
  private runningCpu = 0;
  /** The CPU of the last `cpu K` event (CPU 0 before the first). */
  private emittedCpu = 0;
  private heldPageFaults = 0;
  /** The line being handled is the MMIO access the current `iotime` line times. */
  private handlingStamped = false;
  /**
   * The lines since the last guest instruction or other event were a line change or an access
   * to an interrupt controller, so an MSI now is the I/O APIC delivering it, not a new source.
   */
  private deliveryChain = false;

  /** `cpus`: the CPUs the log's accesses name (a timed log has one). */
  constructor(timed: boolean, readonly cpus = 1) {
    this.clock = new VirtualClock(timed);
    const resetFrame = timed ? 0 : NO_FRAME;
    this.pit = new QemuPitTiming(resetFrame);
    this.lapics = Array.from({ length: cpus }, () => new QemuLapicTiming(resetFrame));
    this.requests = new InterruptRequests(cpus);
  }

  /** Events completed so far, in order; each is returned once. */
  take(): TraceEvent[] {
    const done = this.out;
    this.out = [];
    return done;
  }

  /** One log line: parsed, its 1-based number and its text. */
  feed(entry: LogLine, line: number, text: string): void {
    if (entry.kind === "unknown") this.noteUnknown(line, text);
    if (!this.clock.timed) {
      this.feedUntimed(entry, line);
      return;
    }
    if (entry.kind === "iotime") {
      this.checkCpu(entry.cpu, line);
      this.handleHeld(entry, line);
      return;
    }
    this.held.push([entry, line]);
    if (isPageFault(entry) && !isFetchFault(entry)) this.heldPageFaults++;
    if (this.held.length >= MAX_HELD_LINES) this.handleHeld(null, line);
  }

  /** End of the log: handles whatever is still held. */
  finish(): void {
    if (this.clock.timed) this.handleHeld(null, 0);
    else this.handleRunningCpuLines(this.runningCpu);
  }

  /**
   * Untimed logs: a line the running CPU performed waits, with every line after it, for the
   * next access by a vCPU, whose CPU it then takes; everything else is handled at once.
   */
  private feedUntimed(entry: LogLine, line: number): void {
    if (entry.kind === "access" && entry.cpu >= 0) this.handleRunningCpuLines(entry.cpu);
    if (this.held.length === 0 && !RUNNING_CPU_LINES.has(entry.kind)) {
      this.handle(entry, line);
      return;
    }
    this.held.push([entry, line]);
    if (this.held.length >= MAX_HELD_LINES) this.handleRunningCpuLines(this.runningCpu);
  }

  /** Handles the held lines of an untimed log as performed by `cpu`. */
  private handleRunningCpuLines(cpu: number): void {
    const held = this.held;
    this.held = [];
    if (held.length === 0) return;
    this.runningCpu = cpu;
    for (const [entry, line] of held) this.handle(entry, line);
  }

  /** Handles the held lines; `stamp` is the `iotime` line (number `line`) that ends them, if any. */
  private handleHeld(stamp: InstructionTime | null, line: number): void {
    if (stamp !== null) this.clock.expectInstruction(stamp.icount, this.heldPageFaults);
    else this.clock.timeUnknown();
    const held = this.held;
    this.held = [];
    this.heldPageFaults = 0;
    const stamped = stamp !== null && stamp.insn.startsWith("mmio") ? this.lastAccessTo(held, stamp.pa) : -1;
    for (let i = 0; i < held.length; i++) {
      const [entry, heldLine] = held[i]!;
      this.handlingStamped = i === stamped;
      if (this.handlingStamped) this.clock.instruction(stamp!.icount, line);
      this.handle(entry, heldLine);
    }
    this.handlingStamped = false;
    if (stamp === null) return;
    if (stamp.insn === "hlt") this.clock.hlt(stamp.icount, line);
    else if (stamped < 0) this.clock.instruction(stamp.icount, line);
    this.counts.pitSignalsMissing += this.pit.skipIrq0Before(this.clock.now, this.clock.frame);
  }

  /** Index of the last CPU access to physical address `pa` among held lines, or -1. */
  private lastAccessTo(held: [LogLine, number][], pa: number): number {
    for (let i = held.length - 1; i >= 0; i--) {
      const entry = held[i]![0];
      if (entry.kind === "access" && entry.cpu === 0 && entry.addr === pa) return i;
    }
    return -1;
  }

  private handle(entry: LogLine, line: number): void {
    if (!CHAIN_LINES.has(entry.kind)) this.deliveryChain = false;
    switch (entry.kind) {
      case "access":
        this.onAccess(entry, line);
        break;
      case "iotime":
        this.checkCpu(entry.cpu, line);
        bump(this.counts.ignoredLines, "iotime (untimed import)");
        break;
      case "gsi":
        this.onGsi(entry, line);
        break;
      case "interrupt":
        this.onInterrupt(entry.vector, line);
        break;
      case "lvt":
        if (entry.lvt === 0) this.onLapicExpiry();
        else bump(this.counts.ignoredLines, "apic_local_deliver (not the timer)");
        break;
      case "apic-base":
        this.onApicBase(entry.write, entry.lo, entry.hi, line);
        break;
      case "exception":
        bump(this.counts.exceptions, "0x" + entry.vector.toString(16));
        break;
      case "handler-entry":
        if (isPageFault(entry)) this.clock.pageFault(isFetchFault(entry));
        else bump(this.counts.ignoredLines, "-d int handler entry (not a page fault)");
        break;
      case "apic-message":
        this.requests.message(entry);
        bump(this.counts.ignoredLines, "apic_deliver_irq (message into the local APIC)");
        break;
      case "detail":
        bump(this.counts.ignoredLines, entry.event);
        break;
      case "cpu-dump":
        bump(this.counts.ignoredLines, "-d int CPU state");
        break;
      case "blank":
        bump(this.counts.ignoredLines, "blank");
        break;
    }
  }

  private noteUnknown(line: number, text: string): void {
    this.counts.unknownLines++;
    if (this.counts.unknownSamples.length < UNKNOWN_SAMPLES) this.counts.unknownSamples.push({ line, text: text.slice(0, 200) });
  }

  private checkCpu(cpu: number, line: number): void {
    if (cpu < this.cpus) return;
    const why = this.clock.timed
      ? "the iotime plugin counts instructions of all vCPUs together, so a timed multi-CPU log (e.g. -smp 2) cannot be imported; import it untimed"
      : `the import was set up for ${this.cpus} CPU${this.cpus === 1 ? "" : "s"}`;
    throw new MultiCpuLogError(line, cpu, why);
  }

  private target(a: RegionAccess): Target {
    const addr = a.addr;
    if (addr < 0x1_0000) {
      if (PIC_AND_ELCR.has(addr)) return "pic";
      if (addr >= 0x40 && addr <= 0x43) return "pit";
      return addr === 0x61 ? "port61" : "other";
    }
    const apicOffset = addr - this.apicBase;
    if (a.region === "apic-msi" && apicOffset >= 0 && apicOffset < APIC_MSI_WINDOW) {
      // QEMU treats a write to offset 0x000–0x00f or past the page as an MSI message.
      const msi = apicOffset < 0x10 || apicOffset >= LAPIC_PAGE;
      if (msi) return a.write ? "msi" : "other";
      return "lapic";
    }
    if (addr >= IOAPIC_BASE && addr < IOAPIC_BASE + IOAPIC_WINDOW) return "ioapic";
    return a.region === "hpet" && addr >= HPET_BASE && addr < HPET_BASE + HPET_WINDOW ? "hpet" : "other";
  }

  private onAccess(a: RegionAccess, line: number): void {
    this.checkCpu(a.cpu, line);
    const target = this.target(a);
    if (target === "msi") {
      // Device messages logged under the vCPU, not guest instructions: the clock does not step.
      this.counts.msiMessages++;
      if (!this.deliveryChain) this.clock.unexplainedRise();
      this.deliveryChain = true;
      return;
    }
    this.hpet.accessEnds();
    if (a.cpu >= 0) {
      this.runningCpu = a.cpu;
      this.clock.access();
    }
    if (target === "other" || target === "hpet") {
      // The model has no HPET: its accesses are not replayed, only its legacy route is followed.
      this.deliveryChain = false;
      bump(this.counts.otherDevices, a.region);
      if (target === "hpet" && a.write && a.cpu >= 0) this.onHpetWrite(a.addr - HPET_BASE, a.value);
      return;
    }
    this.deliveryChain = a.write && (target === "lapic" || target === "ioapic");
    if (target === "lapic" || target === "ioapic") this.onMmio(a, target, line);
    else this.onPort(a, target, line);
  }

  private onPort(a: RegionAccess, target: Target, line: number): void {
    const op = (a.write ? PORT_WRITE : PORT_READ)[a.size];
    if (op === undefined) {
      bump(this.counts.skippedAccesses, `port access of ${a.size} bytes`);
      return;
    }
    const time = this.clock.now;
    const frame = this.clock.frame;
    if (a.write) {
      if (target === "pit") this.pit.write(a.addr, a.value, time, frame);
      else if (target === "port61") this.pit.setGate2((a.value & 1) !== 0, time, frame);
      this.emitByCpu({ op, a: a.addr, b: a.value, line });
      return;
    }
    const dependence = target === "pit" ? this.pit.read(a.addr, frame) : target === "port61" ? this.pit.readPort61(frame) : null;
    this.emitRead(op, a.addr, a.value, dependence, line);
  }

  private onMmio(a: RegionAccess, target: Target, line: number): void {
    if (a.size !== 4) {
      bump(this.counts.skippedAccesses, `MMIO access of ${a.size} bytes`);
      return;
    }
    if (this.clock.timed && a.cpu >= 0 && !this.handlingStamped) this.counts.mmioUnstamped++;
    const time = this.clock.now;
    const offset = a.addr - this.apicBase;
    const lapic = this.lapics[this.runningCpu]!;
    if (a.write) {
      if (target === "lapic") {
        lapic.write(offset, a.value, time, this.clock.frame);
        this.requests.write(this.runningCpu, offset, a.value);
      }
      this.emitByCpu({ op: Op.Writel, a: a.addr, b: a.value, line });
      return;
    }
    const dependence = target === "lapic" && offset === LAPIC_CURRENT_COUNT ? lapic.readCurrentCount(this.clock.frame) : null;
    this.emitRead(Op.Readl, a.addr, a.value, dependence, line);
  }

  /** A write to the HPET: switching its legacy route disconnects or reconnects the PIT's OUT0. */
  private onHpetWrite(offset: number, value: number): void {
    const change = this.hpet.write(offset, value);
    if (change === null) return;
    this.counts.hpetRouteSwitches++;
    this.pit.setIrqConnected(change === "off", this.clock.now, this.clock.frame);
  }

  /**
   * Who changed a GSI: the HPET's route switch or another HPET write (at the write's time), an
   * HPET timer on the legacy route, the PIT at its computed time, or a source of unknown time.
   */
  private onGsi(g: GsiLevel, line: number): void {
    if (this.hpet.takeSwitchLine(g.gsi, g.level)) {
      this.counts.hpetWriteLines++;
    } else if (this.hpet.drives(g.gsi)) {
      this.counts.hpetTimerLines++;
      if (g.level === 1) this.clock.unexplainedRise();
    } else {
      const pit = g.gsi === 0 && this.clock.timed ? this.pitSignal(g.level) : "not the PIT's";
      if (pit === "placed") {
        // At the PIT's time.
      } else if (this.hpet.writing) {
        this.counts.hpetWriteLines++;
        if (g.level === 1) this.clock.unexplainedRise();
      } else {
        if (g.gsi === 0 && this.clock.timed) this.counts.irq0Unpredicted++;
        if (pit === "level but not time") this.counts.irq0NotAtPitTime++;
        if (g.level === 1) this.clock.unexplainedRise();
      }
    }
    this.deliveryChain = true;
    const op = g.gsi < 16 ? Op.Irq : Op.Gsi;
    this.emit({ op, a: g.gsi, b: g.level, line });
  }

  /**
   * A GSI 0 change in a timed log: when it is the change QEMU's PIT makes next and that time
   * fits, it is placed there.
   */
  private pitSignal(level: 0 | 1): "placed" | "level but not time" | "not the PIT's" {
    const next = this.pit.peekIrq0();
    if (next === null || next.level !== level) return "not the PIT's";
    if (!this.clock.fits(next.time, next.frame)) return "level but not time";
    this.pit.takeIrq0();
    this.clock.lineSignal(next.time, next.frame, level === 1);
    this.counts.pitSignalsTimed++;
    return "placed";
  }

  /** The CPU took `vector` (-1: QEMU found none, which the model must agree with). */
  private onInterrupt(vector: number, line: number): void {
    this.clock.interruptTaken();
    if (vector < 0) {
      this.emitByCpu({ op: Op.Inta, check: Check.NoInterrupt, line });
      return;
    }
    const cpu = this.acceptingCpu(vector);
    this.requests.accepted(cpu, vector);
    this.emitOn(cpu, { op: Op.Inta, check: Check.Value, value: vector, mask: 0xff, line });
  }

  /**
   * Which CPU accepted `vector`: the one CPU that asked for it, else (none or several asked:
   * ExtINT, or a vector pending on more than one) the CPU that runs next.
   */
  private acceptingCpu(vector: number): number {
    if (this.cpus === 1) return 0;
    const asked = this.requests.askedBy(vector);
    if (asked.length === 1) {
      bump(this.counts.interruptsByRule, asked[0] === this.runningCpu ? "the one CPU that asked for the vector, the next to access a device" : "the one CPU that asked for the vector, not the next to access a device");
      return asked[0]!;
    }
    bump(this.counts.interruptsByRule, asked.length === 0 ? "no CPU asked for the vector: the next CPU to access a device" : "several CPUs asked for the vector: the next CPU to access a device");
    return this.runningCpu;
  }

  /**
   * A local APIC timer expiry, which the log does not attribute to a CPU: it is the timer
   * whose expiry comes first among those armed (the lowest CPU on a tie), as in the model.
   */
  private onLapicExpiry(): void {
    this.counts.lapicExpiries++;
    let first: QemuLapicTiming | null = null;
    let firstTime = Infinity;
    for (const lapic of this.lapics) {
      const next = lapic.peekExpiry();
      if (next !== null && next.time < firstTime) {
        first = lapic;
        firstTime = next.time;
      }
    }
    const expiry = first?.takeExpiry() ?? null;
    if (first === null || expiry === null) {
      this.counts.lapicExpiriesUnpredicted++;
      this.clock.unexplainedRise();
      return;
    }
    this.requests.local(this.lapics.indexOf(first), first.vector);
    this.clock.selfTimedExpiry(expiry.time, expiry.frame, first.dividedPeriod);
  }

  private onApicBase(write: boolean, lo: number, hi: number, line: number): void {
    if (write) {
      this.apicBase = (lo & 0xffff_f000) >>> 0;
      this.emitByCpu({ op: Op.Wrmsr, a: IA32_APIC_BASE, b: lo, bHi: hi, line });
      return;
    }
    if ((lo & APIC_BASE_BSP) === 0 && this.cpus > 1) {
      // QEMU reads an AP's IA32_APIC_BASE at each of its resets and INITs as well as for its
      // RDMSR, through the same trace point: neither the CPU nor the reader is known.
      this.counts.apicBaseApReads++;
      return;
    }
    this.counts.reads++;
    this.counts.readsChecked++;
    this.emitOn(0, { op: Op.Rdmsr, a: IA32_APIC_BASE, check: Check.Value, value: lo, valueHi: hi, mask: 0xffff_ffff, maskHi: 0xffff_ffff, line });
  }

  /** A read keeps its logged value as expectation, except bits that depend on an unknown time. */
  private emitRead(op: Op, addr: number, value: number, dependence: ReadDependence | null, line: number): void {
    this.counts.reads++;
    const full = valueWidthMask(op);
    if (dependence === null || dependence.exact) {
      this.counts.readsChecked++;
      this.emitByCpu({ op, a: addr, check: Check.Value, value, mask: full, line });
      return;
    }
    const why = this.clock.timed ? "its time base was set before an unexplained HLT wake-up" : "a raw log has no time";
    const reason = `${dependence.what}: ${why}`;
    const mask = dependence.timeFreeMask & full;
    if (mask === 0) {
      this.counts.readsUnchecked++;
      bump(this.counts.uncheckedByReason, reason);
      this.emitByCpu({ op, a: addr, line });
      return;
    }
    this.counts.readsMasked++;
    bump(this.counts.maskedByReason, reason);
    this.emitByCpu({ op, a: addr, check: Check.Value, value: value & mask, mask, line });
  }

  /** An event the running CPU performs. */
  private emitByCpu(fields: Partial<TraceEvent> & { op: Op }): void {
    this.emitOn(this.runningCpu, fields);
  }

  /** An event CPU `cpu` performs, after a `cpu` event when the CPU changes. */
  private emitOn(cpu: number, fields: Partial<TraceEvent> & { op: Op }): void {
    if (cpu !== this.emittedCpu) {
      this.emittedCpu = cpu;
      this.emit({ op: Op.Cpu, a: cpu, line: fields.line ?? 0 });
    }
    this.emit(fields);
  }

  /** Every event happens at the clock's current time. */
  private emit(fields: Partial<TraceEvent> & { op: Op }): void {
    bump(this.counts.eventsByOp, OP_NAMES[fields.op]!);
    this.out.push(makeEvent({ ...fields, time: this.clock.now }));
  }
}
