// The recorder: a machine that writes down what a script does to it. Every operation becomes a
// trace event at the machine's current virtual time, and every read carries the value it
// returned as its expectation, so a scripted run becomes a regression trace.

import { INTA_NMI, Machine, type MachineOptions } from "../core/machine.js";
import { Check, Op, defaultHeader, makeEvent, splitU64, valueWidthMask, type TraceEvent, type TraceHeader } from "./event.js";

export class RecordingMachine {
  readonly machine: Machine;
  readonly header: TraceHeader;
  readonly events: TraceEvent[] = [];

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
    const [b, bHi] = splitU64(value);
    this.machine.wrmsr(msr, value);
    this.events.push(makeEvent({ time: this.now(), op: Op.Wrmsr, a: msr, b, bHi }));
  }

  inb(port: number): number {
    return this.read(Op.Inb, port, this.machine.inb(port));
  }
  inw(port: number): number {
    return this.read(Op.Inw, port, this.machine.inw(port));
  }
  inl(port: number): number {
    return this.read(Op.Inl, port, this.machine.inl(port) >>> 0);
  }
  readl(addr: number): number {
    return this.read(Op.Readl, addr, this.machine.readl(addr) >>> 0);
  }
  rdmsr(msr: number): bigint {
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
    this.machine.selectCpu(k);
    this.events.push(makeEvent({ time: this.now(), op: Op.Cpu, a: k }));
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
    this.events.push(makeEvent({ time: this.now(), op: Op.Mark, label }));
  }
  migrate(): void {
    this.events.push(makeEvent({ time: this.now(), op: Op.Migrate }));
  }

  private write(op: Op, a: number, b: number, run: () => void): void {
    run();
    this.events.push(makeEvent({ time: this.now(), op, a, b }));
  }

  private read(op: Op, a: number, value: number): number {
    this.events.push(makeEvent({ time: this.now(), op, a, check: Check.Value, value, mask: valueWidthMask(op) }));
    return value;
  }
}
