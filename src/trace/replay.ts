// Replaying a trace: drive a fresh machine with every event, check every expectation, and
// migrate the machine wherever asked — capture through the hypervisor, msgpack round trip,
// reconstruction on a fresh machine that then continues the trace.

import { performance } from "node:perf_hooks";
import { Packr } from "msgpackr";
import { INTA_NMI, Machine, type DeviceRecord, type Policy } from "../core/machine.js";
import { EXIT_REASONS, type ExitReport } from "../core/exits.js";
import { Check, OP_NAMES, Op, isCpuAccess, msrExpectation, msrValue, valueWidthMask, type TraceEvent, type TraceHeader } from "./event.js";
import { RECORD_SIZE, RecordChecker, decodeRecord, readCompiledChunks } from "./compiled.js";
import { ReplayCounter, ReplayStop, SipiState } from "../../assembly/abi/codes.js";

export interface MigrationPoints {
  /** Migrate after this many events (1-based event counts). */
  afterEvents?: readonly number[];
  /** Migrate at each `mark` with one of these labels. */
  atLabels?: readonly string[];
  /** Migrate after every N events. */
  every?: number;
}

/** A migration asked for that cannot be carried out: no shadows to capture, or a point the trace never reaches. */
export class MigrationRequestError extends Error {
  override readonly name = "MigrationRequestError";
}

export interface ReplayOptions extends MigrationPoints {
  policy?: Policy;
  /** Keep at most this many mismatches in the report (all are counted). */
  keepMismatches?: number;
  /** Keep at most this many migrations' details in the report (all are summarised). */
  keepMigrations?: number;
  /** Called with each record captured at a migration point (after `events` events, at `event`), before it is rebuilt. */
  onCapture?: (record: DeviceRecord, at: { events: number; event: TraceEvent }) => void;
}

export interface Mismatch {
  line: number;
  event: number;
  op: string;
  operand: string;
  expected: string;
  actual: string;
}

export interface MigrationStat {
  event: number;
  line: number;
  timeNs: number;
  recordBytes: number;
  captureUs: number;
  reconstructUs: number;
}

/** What the migrations of a replay cost, in a size that does not grow with their number. */
export interface MigrationSummary {
  count: number;
  /** The first migrations, at most `keepMigrations` of them. */
  first: MigrationStat[];
  /** Smallest and largest device-state record, bytes (0 when none). */
  recordBytes: { min: number; max: number };
  /** Capture plus reconstruction, µs: median (to the µs below 16 ms) and maximum. */
  timeUs: { median: number; max: number };
}

export interface ReplayReport {
  policy: Policy;
  events: number;
  reads: number;
  checked: number;
  mismatchCount: number;
  mismatches: Mismatch[];
  interrupts: number;
  exits: ExitReport;
  virtualTimeNs: number;
  wallMs: number;
  eventsPerSecond: number;
  migrations: MigrationSummary;
  /** `migrate` events reached under a policy that keeps no shadows. */
  migrationsRefused: number;
  /** Migration points asked for that the trace never reached, each with the reason. */
  migrationPointsMissed: string[];
}

const packr = new Packr({ useRecords: false });

/** Machine options a trace header asks for. */
export function machineOptions(header: TraceHeader, policy: Policy) {
  return {
    ...header.machine,
    cpus: header.cpus,
    pitIrq0: header.pitIrq0,
    compatQemu: header.compatQemu,
    apicBusHz: header.apicBusHz,
    tscHz: header.tscHz,
    policy,
  };
}

export class Replayer {
  readonly report: ReplayReport;
  private machine: Machine;
  private readonly keep: number;
  private readonly labels: ReadonlySet<string>;
  private readonly afterEvents: ReadonlySet<number>;
  private readonly every: number;
  private readonly labelsMet = new Set<string>();
  private readonly finishedExits: ExitReport[] = [];
  private readonly started = performance.now();
  private readonly migrationTimes = new MedianCounter();
  /** Where the records being replayed sit in the running machine's scratch buffer. */
  private loaded = { at: 0, bytes: 0 };

  constructor(header: TraceHeader, private readonly options: ReplayOptions = {}) {
    const policy = options.policy ?? "blmvisor";
    const asked = (options.afterEvents?.length ?? 0) + (options.atLabels?.length ?? 0) + (options.every ?? 0);
    if (policy === "none" && asked > 0) {
      throw new MigrationRequestError('policy "none" keeps no shadow of the write-only PIC and PIT state, so no migration can be carried out: use blmvisor or full, or drop the migration points');
    }
    this.machine = Machine.create(machineOptions(header, policy));
    this.keep = options.keepMismatches ?? 100;
    this.labels = new Set(options.atLabels ?? []);
    this.afterEvents = new Set(options.afterEvents ?? []);
    this.every = options.every ?? 0;
    this.report = {
      policy,
      events: 0,
      reads: 0,
      checked: 0,
      mismatchCount: 0,
      mismatches: [],
      interrupts: 0,
      exits: this.machine.exits(),
      virtualTimeNs: 0,
      wallMs: 0,
      eventsPerSecond: 0,
      migrations: { count: 0, first: [], recordBytes: { min: 0, max: 0 }, timeUs: { median: 0, max: 0 } },
      migrationsRefused: 0,
      migrationPointsMissed: [],
    };
  }

  /** The machine now running the trace (it changes at every migration). */
  get current(): Machine {
    return this.machine;
  }

  /**
   * Room for `bytes` bytes of compiled records in the running machine's scratch buffer, for
   * the reader to fill; runLoaded then checks and runs them there.
   */
  scratch(bytes: number): Uint8Array {
    const core = this.machine.core;
    this.loaded = { at: core.replayScratch(bytes), bytes };
    return new Uint8Array(core.memory.buffer, this.loaded.at, bytes);
  }

  /**
   * Checks the records placed in the scratch buffer and runs them inside the core, one call
   * per stretch between the points where the host must act: a mismatch to report, a mark or a
   * migration point. Throws TraceError on a bad record, before running any of them.
   */
  runLoaded(checker: RecordChecker, labels: readonly string[]): void {
    const count = this.loaded.bytes / RECORD_SIZE;
    checker.check(this.machine.core, this.loaded.at, count);
    const record = (index: number): TraceEvent => decodeRecord(new DataView(this.machine.core.memory.buffer, this.loaded.at), index * RECORD_SIZE, labels);
    let i = 0;
    while (i < count) {
      const core = this.machine.core;
      const to = Math.min(count, i + this.eventsToNextMigration());
      const stoppedAt = core.replayRecords(i, to);
      const r = this.report;
      r.events += Math.min(stoppedAt + 1, to) - i;
      i = Math.min(stoppedAt + 1, to);
      let migrate = this.migrationDue();
      if (stoppedAt < to) {
        const reason: ReplayStop = core.replayStatus(ReplayCounter.StopReason);
        const e = record(stoppedAt);
        if (reason === ReplayStop.Mismatch) this.compiledMismatch(e, core.replayStatus(ReplayCounter.ActualLow), core.replayStatus(ReplayCounter.ActualHigh));
        else if (reason === ReplayStop.CpuWaiting) this.waitingCpuMismatch(e);
        else if (reason === ReplayStop.Migrate) migrate = true;
        else if (reason === ReplayStop.Mark) migrate ||= this.atLabel(e.label);
        if (migrate) this.migrate(e);
      } else if (migrate && to > 0) {
        this.migrate(record(to - 1));
      }
    }
  }

  /** Events that may run before the next --migrate-at / --migrate-every point. */
  private eventsToNextMigration(): number {
    const done = this.report.events;
    let next = this.every > 0 ? this.every - (done % this.every) : Infinity;
    for (const n of this.afterEvents) if (n > done && n - done < next) next = n - done;
    return next;
  }

  private migrationDue(): boolean {
    const n = this.report.events;
    return this.afterEvents.has(n) || (this.every > 0 && n % this.every === 0);
  }

  private compiledMismatch(e: TraceEvent, low: number, high: number): void {
    if (e.op === Op.Inta) {
      const vector = low > 0x7fffffff ? -1 : low;
      this.mismatch(e, vectorText(expectedVector(e)), vectorText(vector));
    } else if (e.op === Op.Sipi) {
      this.mismatch(e, sipiText(e.check === Check.NoInterrupt ? SipiState.Waiting : e.value), sipiText(low | 0));
    } else if (e.op === Op.Cpu) {
      this.mismatch(e, `a CPU below ${this.machine.config.cpus}`, `cpu ${e.a}`);
    } else if (e.op === Op.Rdmsr) {
      this.mismatch(e, `0x${msrExpectation(e).value.toString(16)}`, `0x${((BigInt(high) << 32n) | BigInt(low)).toString(16)}`);
    } else {
      this.mismatch(e, hex(e.value, e.mask, e.op), hex(low));
    }
  }

  /** Folds the core's own replay counters of a machine that stops running the trace. */
  private absorbCoreCounters(m: Machine): void {
    const r = this.report;
    r.reads += m.core.replayStatus(ReplayCounter.Reads);
    r.checked += m.core.replayStatus(ReplayCounter.Checked);
    r.interrupts += m.core.replayStatus(ReplayCounter.Interrupts);
  }

  /** A port, MMIO or MSR event by a CPU that still waits for a start-up IPI. */
  private waitingCpuMismatch(e: TraceEvent): void {
    this.mismatch(e, `cpu ${this.machine.cpu} running`, `cpu ${this.machine.cpu} waiting for a start-up IPI`);
  }

  /** Runs one event. */
  step(e: TraceEvent): void {
    const m = this.machine;
    const r = this.report;
    m.advanceTo(e.time);
    r.events++;
    let migrate = false;
    if (isCpuAccess(e.op) && m.sipiState() === "waiting") {
      this.waitingCpuMismatch(e);
      if (this.migrationDue()) this.migrate(e);
      return;
    }
    switch (e.op) {
      case Op.Outb:
        m.outb(e.a, e.b);
        break;
      case Op.Outw:
        m.outw(e.a, e.b);
        break;
      case Op.Outl:
        m.outl(e.a, e.b);
        break;
      case Op.Writel:
        m.writel(e.a, e.b);
        break;
      case Op.Wrmsr:
        m.wrmsr(e.a, msrValue(e));
        break;
      case Op.Inb:
        this.checkRead(e, m.inb(e.a));
        break;
      case Op.Inw:
        this.checkRead(e, m.inw(e.a));
        break;
      case Op.Inl:
        this.checkRead(e, m.inl(e.a) >>> 0);
        break;
      case Op.Readl:
        this.checkRead(e, m.readl(e.a) >>> 0);
        break;
      case Op.Rdmsr:
        this.checkMsr(e, m.rdmsr(e.a));
        break;
      case Op.Irq:
        m.setIrq(e.a, e.b);
        break;
      case Op.Gsi:
        m.setGsi(e.a, e.b);
        break;
      case Op.Inta:
        this.checkInta(e, m.inta());
        break;
      case Op.Cpu:
        m.selectCpu(e.a);
        break;
      case Op.Sipi:
        this.checkSipi(e, m.core.sipiState());
        break;
      case Op.Mark:
        migrate = this.atLabel(e.label);
        break;
      case Op.Migrate:
        migrate = true;
        break;
    }
    if (migrate || this.migrationDue()) this.migrate(e);
  }

  /** Whether a mark with `label` is a migration point (and notes that it was reached). */
  private atLabel(label: string): boolean {
    if (!this.labels.has(label)) return false;
    this.labelsMet.add(label);
    return true;
  }

  /** The migration points asked for that the trace never reached. */
  private missedPoints(): string[] {
    const events = this.report.events;
    const missed: string[] = [];
    for (const label of this.labels) if (!this.labelsMet.has(label)) missed.push(`--migrate-at ${label}: the trace has no 'mark ${label}'`);
    for (const n of this.afterEvents) if (n > events) missed.push(`--migrate-at ${n}: past the end of the trace (${events} events)`);
    if (this.every > events) missed.push(`--migrate-every ${this.every}: the trace has only ${events} events, so no migration happened`);
    return missed;
  }

  /** Closes the report: totals, exits of every machine that ran the guest, rates. */
  finish(): ReplayReport {
    const r = this.report;
    r.migrationPointsMissed = this.missedPoints();
    this.absorbCoreCounters(this.machine);
    r.virtualTimeNs = this.machine.now();
    r.exits = sumExits([...this.finishedExits, this.machine.exits()]);
    r.wallMs = performance.now() - this.started;
    r.eventsPerSecond = r.wallMs > 0 ? Math.round((r.events * 1000) / r.wallMs) : 0;
    r.migrations.timeUs.median = this.migrationTimes.median();
    return r;
  }

  private migrate(e: TraceEvent): void {
    const r = this.report;
    if (this.machine.policy === "none") {
      r.migrationsRefused++;
      return;
    }
    const t0 = performance.now();
    const record = this.machine.capture();
    this.options.onCapture?.(record, { events: r.events, event: e });
    const bytes = packr.pack(record);
    const t1 = performance.now();
    // The source is left for good: its timers' phases go along, as a migration's commit carries them.
    const next = Machine.resume(packr.unpack(bytes), this.machine.probeTimerPhases(), { policy: this.machine.policy });
    const t2 = performance.now();
    this.finishedExits.push(this.machine.exits());
    this.absorbCoreCounters(this.machine);
    // The rest of the records go along: the new core replays them from its own scratch buffer.
    const source = this.machine;
    const records = new Uint8Array(source.core.memory.buffer, this.loaded.at, this.loaded.bytes);
    this.machine = next;
    this.scratch(records.length).set(records);
    source.release();
    const stat = {
      event: r.events,
      line: e.line,
      timeNs: e.time,
      recordBytes: bytes.length,
      captureUs: Math.round((t1 - t0) * 1000),
      reconstructUs: Math.round((t2 - t1) * 1000),
    };
    const m = r.migrations;
    if (m.first.length < (this.options.keepMigrations ?? 100)) m.first.push(stat);
    m.recordBytes.min = m.count === 0 ? stat.recordBytes : Math.min(m.recordBytes.min, stat.recordBytes);
    m.recordBytes.max = Math.max(m.recordBytes.max, stat.recordBytes);
    const us = stat.captureUs + stat.reconstructUs;
    m.timeUs.max = Math.max(m.timeUs.max, us);
    this.migrationTimes.add(us);
    m.count++;
  }

  private checkRead(e: TraceEvent, actual: number): void {
    this.report.reads++;
    if (e.check !== Check.Value) return;
    this.report.checked++;
    if (((actual ^ e.value) & e.mask) >>> 0 !== 0) this.mismatch(e, hex(e.value, e.mask, e.op), hex(actual));
  }

  private checkMsr(e: TraceEvent, actual: bigint): void {
    this.report.reads++;
    if (e.check !== Check.Value) return;
    this.report.checked++;
    const { value, mask } = msrExpectation(e);
    if (((actual ^ value) & mask) !== 0n) this.mismatch(e, `0x${value.toString(16)}`, `0x${actual.toString(16)}`);
  }

  private checkInta(e: TraceEvent, vector: number): void {
    if (vector >= 0) this.report.interrupts++;
    if (e.check === Check.None) return;
    this.report.checked++;
    const expected = expectedVector(e);
    if (vector !== expected) this.mismatch(e, vectorText(expected), vectorText(vector));
  }

  /** `sipi`: the core's state is a vector or a SipiState. */
  private checkSipi(e: TraceEvent, state: number): void {
    if (e.check === Check.None) return;
    this.report.checked++;
    const expected = e.check === Check.NoInterrupt ? SipiState.Waiting : e.value;
    if (state !== expected) this.mismatch(e, sipiText(expected), sipiText(state));
  }

  private mismatch(e: TraceEvent, expected: string, actual: string): void {
    const r = this.report;
    r.mismatchCount++;
    if (r.mismatches.length >= this.keep) return;
    const operand = e.op === Op.Inta || e.op === Op.Sipi ? "" : e.op === Op.Cpu ? String(e.a) : `0x${e.a.toString(16)}`;
    r.mismatches.push({ line: e.line, event: r.events, op: OP_NAMES[e.op], operand, expected, actual });
  }
}

/** Replays a compiled (.btrace) trace inside the core, reading it chunk by chunk straight into the core's memory. */
export async function replayCompiled(path: string, options: ReplayOptions = {}): Promise<ReplayReport> {
  const trace = await readCompiledChunks(path);
  try {
    const replayer = new Replayer(trace.header, options);
    const checker = new RecordChecker(trace);
    while ((await trace.readRecords((bytes) => replayer.scratch(bytes))) > 0) replayer.runLoaded(checker, trace.labels);
    return replayer.finish();
  } finally {
    await trace.close();
  }
}

/** Replays a whole event stream. */
export async function replayEvents(header: TraceHeader, events: AsyncIterable<TraceEvent> | Iterable<TraceEvent>, options: ReplayOptions = {}): Promise<ReplayReport> {
  const replayer = new Replayer(header, options);
  for await (const e of events) replayer.step(e);
  return replayer.finish();
}

/** A value in hex, with its mask when the expectation compared only some bits of `op`'s width. */
function hex(v: number, mask = 0xffffffff, op?: Op): string {
  const text = `0x${(v >>> 0).toString(16)}`;
  const full = op === undefined ? 0xffffffff : valueWidthMask(op);
  return mask >>> 0 === full >>> 0 ? text : `${text}/0x${(mask >>> 0).toString(16)}`;
}

function vectorText(v: number): string {
  return v < 0 ? "none" : v === INTA_NMI ? "nmi" : `0x${v.toString(16)}`;
}

/** What an `inta` event expects: a vector, -1 (`= none`) or INTA_NMI. */
function expectedVector(e: TraceEvent): number {
  return e.check === Check.NoInterrupt ? -1 : e.check === Check.Nmi ? INTA_NMI : e.value;
}

/** A start-up state: a vector, "none" (waiting) or "running since reset". */
function sipiText(state: number): string {
  return state === SipiState.Waiting ? "none" : state === SipiState.Reset ? "running since reset" : `0x${state.toString(16)}`;
}

export function sumExits(reports: readonly ExitReport[]): ExitReport {
  const byReason = Object.fromEntries(EXIT_REASONS.map((k) => [k, reports.reduce((a, r) => a + r.byReason[k], 0)])) as ExitReport["byReason"];
  const ports = new Map<number, { port: number; in: number; out: number }>();
  const regs = new Map<string, ExitReport["byRegister"][number]>();
  const msrs = new Map<string, ExitReport["byMsr"][number]>();
  for (const r of reports) {
    for (const p of r.byPort) {
      const s = ports.get(p.port) ?? { port: p.port, in: 0, out: 0 };
      s.in += p.in;
      s.out += p.out;
      ports.set(p.port, s);
    }
    for (const g of r.byRegister) {
      const key = `${g.region}:${g.offset}`;
      const s = regs.get(key) ?? { ...g, read: 0, write: 0 };
      s.read += g.read;
      s.write += g.write;
      regs.set(key, s);
    }
    for (const m of r.byMsr) {
      const s = msrs.get(m.msr) ?? { ...m, read: 0, write: 0 };
      s.read += m.read;
      s.write += m.write;
      msrs.set(m.msr, s);
    }
  }
  return {
    total: reports.reduce((a, r) => a + r.total, 0),
    byReason,
    byPort: [...ports.values()].sort((a, b) => a.port - b.port),
    byRegister: [...regs.values()],
    byMsr: [...msrs.values()],
    byCpu: reports.reduce<number[]>((sum, r) => r.byCpu.map((n, k) => n + (sum[k] ?? 0)), []),
  };
}

/** Counts integers in 1-wide buckets up to a limit (those above share one): the median in fixed memory. */
class MedianCounter {
  private readonly buckets = new Uint32Array(16384);
  private count = 0;
  private maxSeen = 0;

  add(value: number): void {
    this.buckets[Math.min(Math.max(0, value), this.buckets.length - 1)]++;
    this.maxSeen = Math.max(this.maxSeen, value);
    this.count++;
  }

  /** The middle value (the upper one of an even count), or the largest seen if it lies above the buckets. */
  median(): number {
    let left = Math.floor(this.count / 2) + 1;
    for (let v = 0; v < this.buckets.length; v++) {
      left -= this.buckets[v];
      if (left <= 0) return v === this.buckets.length - 1 ? this.maxSeen : v;
    }
    return 0;
  }
}
