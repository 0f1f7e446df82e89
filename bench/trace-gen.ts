// A synthetic compiled trace for the replay benchmark: a guest that keeps all four chips busy
// the way an OS does — PIT tick through the PIC (ExtINT) with its EOI, PIT counter latches and
// reads, a one-shot local APIC timer re-armed on each of its interrupts with the APIC EOI, an
// I/O APIC level line with its redirection entry read back — recorded from a real machine, so
// every read and acknowledge carries the value the model gave as its expectation.

import { Machine } from "../src/core/machine.js";
import {
  DELIVERY_EXTINT, IOAPIC_SELECT, IOAPIC_WINDOW, LAPIC_CURRENT_COUNT, LAPIC_DIVIDE, LAPIC_EOI, LAPIC_INITIAL_COUNT,
  LAPIC_ICR_HIGH, LAPIC_ICR_LOW, LAPIC_LVT_LINT0, LAPIC_LVT_TIMER, LAPIC_SVR, SVR_ENABLE,
} from "../src/guest/drivers.js";
import { CompiledTraceWriter } from "../src/trace/compiled.js";
import { Check, Op, valueWidthMask, type TraceEvent, type TraceHeader } from "../src/trace/event.js";

const BATCH = 65536;
const STEP_NS = 5_000;
const DEVICE_PIN = 9;
const PIT_VECTOR = 0x20;
const APIC_TIMER_VECTOR = 0xec;
const DEVICE_VECTOR = 0x49;
const APIC_TIMER_COUNT = 100_000;
const IPI_VECTOR = 0x50;
const ICR_INIT_ASSERT = 0xc500;
const ICR_STARTUP = 0x0610;

export const BENCH_TRACE_HEADER: TraceHeader = {
  machine: { pic: true, pit: true, lapic: true, ioapic: true },
  apicBusHz: 1_000_000_000,
  tscHz: 1_000_000_000,
  pitIrq0: true,
  compatQemu: false,
  cpus: 1,
};

/** Records the guest for at least `minRecords` events into a .btrace at `path`; returns the record count. */
export async function writeBenchTrace(path: string, minRecords: number, cpus = 1): Promise<number> {
  const recorder = new Recorder(await CompiledTraceWriter.create(path, { ...BENCH_TRACE_HEADER, cpus }), cpus);
  try {
    recorder.setUp();
    for (let step = 0; recorder.count < minRecords; step++) await recorder.step(step);
    await recorder.flush();
    return (await recorder.writer.finish()).records;
  } finally {
    await recorder.writer.close();
  }
}

class Recorder {
  readonly m: Machine;
  /** Event objects reused batch after batch: the generator allocates nothing per event. */
  private readonly batch: TraceEvent[] = Array.from({ length: BATCH }, () => blankEvent());
  private used = 0;
  count = 0;
  private time = 0;

  constructor(
    readonly writer: CompiledTraceWriter,
    private readonly cpus: number,
  ) {
    this.m = Machine.create({ ...BENCH_TRACE_HEADER.machine, pitIrq0: true, policy: "blmvisor", cpus });
  }

  setUp(): void {
    // Several CPUs: CPU 0 starts the others (INIT, start-up); each enables its APIC and timer.
    for (let k = 1; k < this.cpus; k++) {
      this.write(Op.Writel, LAPIC_ICR_HIGH, k << 24);
      this.write(Op.Writel, LAPIC_ICR_LOW, ICR_INIT_ASSERT);
      this.write(Op.Writel, LAPIC_ICR_LOW, ICR_STARTUP);
    }
    for (let k = this.cpus - 1; k > 0; k--) {
      this.selectCpu(k);
      this.write(Op.Writel, LAPIC_SVR, SVR_ENABLE | 0xff);
      this.write(Op.Writel, LAPIC_DIVIDE, 0xb);
      this.write(Op.Writel, LAPIC_LVT_TIMER, APIC_TIMER_VECTOR);
      this.write(Op.Writel, LAPIC_INITIAL_COUNT, APIC_TIMER_COUNT);
    }
    if (this.cpus > 1) this.selectCpu(0);
    for (const [port, value] of [[0x20, 0x11], [0x21, PIT_VECTOR], [0x21, 0x04], [0x21, 0x01], [0xa0, 0x11], [0xa1, 0x28], [0xa1, 0x02], [0xa1, 0x01], [0x21, 0xfe], [0xa1, 0xff]]) {
      this.write(Op.Outb, port, value);
    }
    this.write(Op.Outb, 0x43, 0x34);
    this.write(Op.Outb, 0x40, 1193 & 0xff);
    this.write(Op.Outb, 0x40, 1193 >> 8);
    this.write(Op.Writel, LAPIC_SVR, SVR_ENABLE | 0xff);
    this.write(Op.Writel, LAPIC_LVT_LINT0, DELIVERY_EXTINT);
    this.write(Op.Writel, LAPIC_DIVIDE, 0xb);
    this.write(Op.Writel, LAPIC_LVT_TIMER, APIC_TIMER_VECTOR);
    this.write(Op.Writel, LAPIC_INITIAL_COUNT, APIC_TIMER_COUNT);
    this.write(Op.Writel, IOAPIC_SELECT, 0x11 + 2 * DEVICE_PIN);
    this.write(Op.Writel, IOAPIC_WINDOW, 0);
    this.write(Op.Writel, IOAPIC_SELECT, 0x10 + 2 * DEVICE_PIN);
    this.write(Op.Writel, IOAPIC_WINDOW, 0x8000 | DEVICE_VECTOR);
  }

  async step(n: number): Promise<void> {
    this.time += STEP_NS;
    if (this.cpus > 1) {
      // Each step on the next CPU, which first sends a fixed IPI to the one after it.
      const cpu = n % this.cpus;
      this.selectCpu(cpu);
      this.write(Op.Writel, LAPIC_ICR_HIGH, ((cpu + 1) % this.cpus) << 24);
      this.write(Op.Writel, LAPIC_ICR_LOW, IPI_VECTOR);
    }
    switch (n & 3) {
      case 0:
        this.write(Op.Outb, 0x43, 0x00);
        this.read(Op.Inb, 0x40);
        this.read(Op.Inb, 0x40);
        break;
      case 1:
        this.write(Op.Writel, IOAPIC_SELECT, 0x10 + 2 * DEVICE_PIN);
        this.read(Op.Readl, IOAPIC_WINDOW);
        break;
      case 2:
        this.read(Op.Readl, LAPIC_CURRENT_COUNT);
        break;
      default:
        if (n % 64 === 3) this.write(Op.Gsi, DEVICE_PIN, 1);
    }
    this.m.advanceTo(this.time);
    const vector = this.m.inta();
    this.emit(Op.Inta, 0, 0, vector < 0 ? Check.NoInterrupt : Check.Value, vector < 0 ? 0 : vector);
    if (vector === PIT_VECTOR) {
      this.write(Op.Outb, 0x20, 0x20);
    } else if (vector === APIC_TIMER_VECTOR) {
      this.write(Op.Writel, LAPIC_EOI, 0);
      this.write(Op.Writel, LAPIC_INITIAL_COUNT, APIC_TIMER_COUNT);
    } else if (vector === DEVICE_VECTOR) {
      this.write(Op.Gsi, DEVICE_PIN, 0);
      this.write(Op.Writel, LAPIC_EOI, 0);
    } else if (vector === IPI_VECTOR) {
      this.write(Op.Writel, LAPIC_EOI, 0);
    }
    if (this.used >= BATCH - 16) await this.flush();
  }

  async flush(): Promise<void> {
    await this.writer.append(this.batch.slice(0, this.used));
    this.used = 0;
  }

  private selectCpu(k: number): void {
    this.m.selectCpu(k);
    this.emit(Op.Cpu, k, 0, Check.None, 0);
  }

  private write(op: Op, a: number, b: number): void {
    const m = this.m;
    m.advanceTo(this.time);
    if (op === Op.Outb) m.outb(a, b);
    else if (op === Op.Writel) m.writel(a, b);
    else m.setGsi(a, b);
    this.emit(op, a, b, Check.None, 0);
  }

  private read(op: Op, a: number): void {
    this.m.advanceTo(this.time);
    const value = op === Op.Inb ? this.m.inb(a) : this.m.readl(a) >>> 0;
    this.emit(op, a, 0, Check.Value, value);
  }

  private emit(op: Op, a: number, b: number, check: Check, value: number): void {
    const e = this.batch[this.used++];
    e.time = this.time;
    e.op = op;
    e.a = a;
    e.b = b;
    e.check = check;
    e.value = value;
    e.mask = check === Check.Value ? valueWidthMask(op) : 0;
    this.count++;
  }
}

function blankEvent(): TraceEvent {
  return { time: 0, op: Op.Outb, a: 0, b: 0, bHi: 0, check: Check.None, value: 0, mask: 0, valueHi: 0, maskHi: 0, label: "", line: 0 };
}
