// The recorder: a machine that writes down what a script does to it. Every operation becomes a
// trace event at the machine's current virtual time, and every read carries the value it
// returned as its expectation, so a scripted run becomes a regression trace. Each operation's
// operands are checked as the trace format reads them before it runs: a script that asks for
// what no trace can hold (port 0x10000) fails at that call, with the format's reason.

import { INTA_NMI, Machine, type MachineOptions } from "../core/machine.js";
import { Check, Op, OP_NAMES, defaultHeader, makeEvent, splitU64, valueWidthMask, type TraceEvent, type TraceHeader } from "./event.js";
import { TraceError, TraceParser } from "./parse.js";
import { formatEvent, formatHeader } from "./writer.js";

/** An operation a trace cannot hold; the message names the operation and what is wrong. */
export class RecordError extends Error {
  override name = "RecordError";
}

export class RecordingMachine {
  readonly machine: Machine;
  readonly header: TraceHeader;
  readonly events: TraceEvent[] = [];
  /** Reads each operation back as the trace will, to reject what it cannot hold. */
  private readonly checker = new TraceParser("recording");

  constructor(options: Omit<MachineOptions, "policy" | "startTime"> = {}, source?: string) {
    this.machine = Machine.create(options);
    const c = this.machine.config;
    this.header = {
      ...defaultHeader(),
      machine: { pic: c.pic, pit: c.pit, lapic: c.lapic, ioapic: c.ioapic },
      apicBusHz: c.apicBusHz,
      tscHz: c.tscHz,
      pitIrq0: c.pitIrq0,
      compatQemu: c.compatQemu,
      cpus: c.cpus,
      source,
    };
    formatHeader(this.header)
      .split("\n")
      .forEach((line, i) => this.checker.parseLine(line, i + 1));
  }

  now(): number {
    return this.machine.now();
  }
  advanceTo(ns: number): void {
    this.machine.advanceTo(ns);
  }

  outb(port: number, value: number): void {
    this.write(Op.Outb, port, value, () => this.machine.outb(port, value));
  }
  outw(port: number, value: number): void {
    this.write(Op.Outw, port, value, () => this.machine.outw(port, value));
  }
  outl(port: number, value: number): void {
    this.write(Op.Outl, port, value, () => this.machine.outl(port, value));
  }
  writel(addr: number, value: number): void {
    this.write(Op.Writel, addr, value, () => this.machine.writel(addr, value));
  }
  setIrq(line: number, level: number): void {
    this.write(Op.Irq, line, level, () => this.machine.setIrq(line, level));
  }
  setGsi(pin: number, level: number): void {
    this.write(Op.Gsi, pin, level, () => this.machine.setGsi(pin, level));
  }
  wrmsr(msr: number, value: bigint): void {
    if (typeof value !== "bigint" || value < 0n || value >= 1n << 64n) throw new RecordError(`wrmsr: value ${String(value)} is not a 64-bit bigint`);
    const [b, bHi] = splitU64(value);
    const event = this.checked(makeEvent({ time: this.now(), op: Op.Wrmsr, a: msr, b, bHi }));
    this.machine.wrmsr(msr, value);
    this.events.push(event);
  }

  inb(port: number): number {
    return this.read(Op.Inb, port, () => this.machine.inb(port));
  }
  inw(port: number): number {
    return this.read(Op.Inw, port, () => this.machine.inw(port));
  }
  inl(port: number): number {
    return this.read(Op.Inl, port, () => this.machine.inl(port) >>> 0);
  }
  readl(addr: number): number {
    return this.read(Op.Readl, addr, () => this.machine.readl(addr) >>> 0);
  }
  rdmsr(msr: number): bigint {
    this.checked(makeEvent({ time: this.now(), op: Op.Rdmsr, a: msr }));
    const v = this.machine.rdmsr(msr);
    const [value, valueHi] = splitU64(v);
    this.events.push(makeEvent({ time: this.now(), op: Op.Rdmsr, a: msr, check: Check.Value, value, valueHi, mask: 0xffffffff, maskHi: 0xffffffff }));
    return v;
  }
  inta(): number {
    const vector = this.machine.inta();
    const check = vector < 0 ? Check.NoInterrupt : vector === INTA_NMI ? Check.Nmi : Check.Value;
    const value = check === Check.Value ? vector : 0;
    this.events.push(makeEvent({ time: this.now(), op: Op.Inta, check, value, mask: check === Check.Value ? 0xff : 0 }));
    return vector;
  }
  /** The CPU-relative operations that follow are CPU `k`'s. */
  selectCpu(k: number): void {
    const event = this.checked(makeEvent({ time: this.now(), op: Op.Cpu, a: k }));
    this.machine.selectCpu(k);
    this.events.push(event);
  }
  /** Records the current CPU's start-up as an expectation (`sipi = V` or `sipi = none`). */
  sipi(): number | "reset" | "waiting" {
    const state = this.machine.sipiState();
    if (state === "reset") this.events.push(makeEvent({ time: this.now(), op: Op.Sipi }));
    else if (state === "waiting") this.events.push(makeEvent({ time: this.now(), op: Op.Sipi, check: Check.NoInterrupt }));
    else this.events.push(makeEvent({ time: this.now(), op: Op.Sipi, check: Check.Value, value: state, mask: 0xff }));
    return state;
  }
  mark(label: string): void {
    this.events.push(this.checked(makeEvent({ time: this.now(), op: Op.Mark, label })));
  }
  migrate(): void {
    this.events.push(makeEvent({ time: this.now(), op: Op.Migrate }));
  }

  private write(op: Op, a: number, b: number, run: () => void): void {
    const event = this.checked(makeEvent({ time: this.now(), op, a, b }));
    run();
    this.events.push(event);
  }

  private read(op: Op, a: number, run: () => number): number {
    this.checked(makeEvent({ time: this.now(), op, a }));
    const value = run();
    this.events.push(makeEvent({ time: this.now(), op, a, check: Check.Value, value, mask: valueWidthMask(op) }));
    return value;
  }

  /** The event, unless the trace format would not read it back: then a RecordError with the reason. */
  private checked(event: TraceEvent): TraceEvent {
    try {
      this.checker.parseLine(formatEvent(event), this.events.length + 1);
    } catch (e) {
      if (e instanceof TraceError) throw new RecordError(`${OP_NAMES[event.op]}: ${e.reason}`);
      throw e;
    }
    return event;
  }
}
