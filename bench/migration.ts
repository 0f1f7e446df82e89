// B2, B3, B4, B10: live migrations of a running guest from this process to a destination
// process over loopback WebSockets, (B2) raw ws throughput between the same two processes, and
// (B10) the resident memory both processes need for B2's migration. B7 (model-sweep.ts) uses the same helpers.

import { spawn, type ChildProcess } from "node:child_process";
import { randomBytes, randomFillSync } from "node:crypto";
import { once } from "node:events";
import { fileURLToPath } from "node:url";
import { createInterface } from "node:readline";
import { performance } from "node:perf_hooks";
import WebSocket from "ws";
import { GuestMemory } from "../src/guest/memory.js";
import { WORK_BASE_PAGE } from "../src/guest/layout.js";
import { PAGE_SIZE } from "../src/guest/page.js";
import { BatchBuilder } from "../src/migrate/source/batch.js";
import { bootGuest, type GuestRunSpec } from "../src/migrate/run/guest-run.js";
import { LiveGuest } from "../src/migrate/run/live.js";
import type { MigrationReport } from "../src/migrate/report/metrics.js";
import { BATCH_DATA_BYTES, MAX_PAYLOAD, encode } from "../src/migrate/wire/protocol.js";
import { DEFAULT_DOWNTIME_LIMIT_MS, migrate, type SourceOptions } from "../src/migrate/source/source.js";
import { clientMasking } from "../src/migrate/transport/connect.js";
import { median, type BenchResult } from "./result.js";
import { peakRssBytes, resetPeakRss, rssBytes, type MemoryMakeup } from "./footprint.js";

const MiB = 2 ** 20;
const GiB = 2 ** 30;
/** Bytes handed to the raw socket and not yet written, above which the raw sender waits. */
const RAW_HIGH_WATER = 4 * MiB;
/** The guest runs this long (virtual, in real time) before its migration starts. */
const MIGRATE_AT_NS = 50_000_000;
/** Long enough that the guest is still running (and dirtying) when its migration ends. */
const RUN_END_NS = 600_000_000_000;
const DESTINATION = fileURLToPath(new URL("./destination.js", import.meta.url));

export interface Destination {
  child: ChildProcess;
  migrateUrl: string;
  sinkUrl: string;
  token: string;
  /** What the destination process's memory was made of once it listened. */
  listening: MemoryMakeup;
  /** The listener's next event named `event` (see bench/destination.ts). */
  event(event: string): Promise<DestinationEvent>;
}

interface DestinationEvent {
  event: string;
  /** CPU time the destination process had used when it reported the event. */
  cpuMs: { user: number; system: number };
  /** The destination process's peak resident set since the migration's connection (with `footprint`). */
  peakRssBytes?: number;
  /** What its memory was made of then (with `footprint`). */
  memory?: MemoryMakeup;
}

/** Where a destination process runs: by default here, on 127.0.0.1; else in network namespace `netns`, listening on `host`. */
export interface DestinationPlace {
  netns: string;
  host: string;
}

/**
 * Runs `fn` with a fresh destination process (same Node flags: `node --cpu-prof` profiles both),
 * stopped afterwards whatever happens; `preallocBytes` gives its listener preallocated guest memory,
 * `footprint` has it report its peak resident set with each event.
 */
export async function withDestination<T>(fn: (d: Destination) => Promise<T>, options: { preallocBytes?: number; place?: DestinationPlace; footprint?: boolean } = {}): Promise<T> {
  const { preallocBytes, place, footprint } = options;
  const token = randomBytes(16).toString("hex");
  const node = [process.execPath, ...process.execArgv, DESTINATION, ...(preallocBytes === undefined ? [] : ["--prealloc", String(preallocBytes)]), ...(footprint ? ["--footprint"] : [])];
  const [command, ...args] = place ? ["ip", "netns", "exec", place.netns, ...node] : node;
  const env = { ...process.env, BLMV_TOKEN: token, ...(place && { BLMV_BENCH_HOST: place.host }) };
  const child = spawn(command, args, { env, stdio: ["ignore", "pipe", "inherit"] });
  try {
    const lines = createInterface({ input: child.stdout! });
    const first = await new Promise<{ migrate: string; sink: string; memory: MemoryMakeup }>((resolve, reject) => {
      lines.once("line", (line) => resolve(JSON.parse(line) as { migrate: string; sink: string; memory: MemoryMakeup }));
      child.once("exit", (code) => reject(new Error(`bench destination exited (${code}) before listening`)));
    });
    const event = (name: string): Promise<DestinationEvent> => {
      const next = new Promise<DestinationEvent>((resolve, reject) => {
        const onLine = (line: string): void => {
          const e = JSON.parse(line) as DestinationEvent;
          if (e.event !== name) return;
          lines.off("line", onLine);
          resolve(e);
        };
        lines.on("line", onLine);
        child.once("exit", (code) => reject(new Error(`bench destination exited (${code}) before its ${name} event`)));
      });
      // Awaited by whoever asked, unless its migration failed first: then the exit is no news.
      next.catch(() => undefined);
      return next;
    };
    return await fn({ child, migrateUrl: first.migrate, sinkUrl: first.sink, token, listening: first.memory, event });
  } finally {
    if (child.exitCode === null && child.signalCode === null) {
      const exited = once(child, "exit");
      child.kill("SIGTERM");
      await Promise.race([exited, new Promise((r) => setTimeout(r, 5000).unref())]);
      child.kill("SIGKILL");
    }
  }
}

export interface MigrationRun {
  spec: GuestRunSpec;
  /** Fill guest memory from 1 MiB up with random bytes before the guest starts. */
  randomMemory: boolean;
  /** With randomMemory: only this many pages from 1 MiB up (default: all of them). */
  randomPages?: number;
  bandwidth?: number;
  downtimeLimitMs?: number;
  /** Called once the guest runs, just before its migration starts. */
  beforeMigration?: () => void;
}

/** Boots the guest here, lets it run, migrates it to `d` while it keeps running. */
export async function migrateOnce(d: Destination, run: MigrationRun): Promise<MigrationReport> {
  const guest = bootGuest(run.spec);
  if (run.randomMemory) fillRandom(guest.memory, run.randomPages);
  const live = new LiveGuest(guest, run.spec.endNs);
  live.resume();
  let handedOver = false;
  const running = live.runLive(() => handedOver);
  while (guest.now() < MIGRATE_AT_NS) await new Promise((r) => setTimeout(r, 2));
  const options: SourceOptions = { url: d.migrateUrl, token: d.token, workload: run.spec.workload, bandwidth: run.bandwidth, downtimeLimitMs: run.downtimeLimitMs };
  run.beforeMigration?.();
  const report = await migrate(live, options);
  handedOver = true;
  await running;
  if (report.status !== "completed") throw new Error(`migration ${report.status}: ${report.error?.message ?? "no reason given"}`);
  return report;
}

function fillRandom(memory: GuestMemory, pages = memory.pageCount - WORK_BASE_PAGE): void {
  const chunk = Buffer.allocUnsafe(64 * MiB);
  const end = WORK_BASE_PAGE + pages;
  for (let p = WORK_BASE_PAGE; p < end; p += chunk.length / PAGE_SIZE) {
    randomFillSync(chunk);
    const n = Math.min(chunk.length / PAGE_SIZE, end - p);
    memory.writePages(p, n, chunk, 0);
  }
}

export function spec(memoryBytes: number, workload: string, extra: Partial<GuestRunSpec> = {}): GuestRunSpec {
  return { workload, interrupts: "apic", memoryBytes, seed: 7, endNs: RUN_END_NS, ...extra };
}

/** Page bytes (not frame headers) over the time spent sending memory rounds. */
function payloadThroughput(r: MigrationReport): { bytes: number; ms: number } {
  const ms = r.roundStats.reduce((a, s) => a + s.durationMs, 0);
  return { bytes: r.pages.normal * PAGE_SIZE, ms };
}

/**
 * How fast pages go into guest memory never written before (the destination's case: each
 * first write faults a fresh page in) and into memory written once already, in MiB/s; the
 * median of three fresh memories of `bytes` each.
 */
function pageStoreRates(bytes: number): { freshMiBps: number; touchedMiBps: number } {
  const page = randomBytes(PAGE_SIZE);
  const pass = (memory: GuestMemory): number => {
    const start = performance.now();
    for (let p = 0; p < memory.pageCount; p++) memory.writePage(p, page);
    return bytes / MiB / ((performance.now() - start) / 1000);
  };
  const fresh: number[] = [];
  const touched: number[] = [];
  for (let i = 0; i < 3; i++) {
    const memory = new GuestMemory(bytes);
    fresh.push(pass(memory));
    touched.push(pass(memory));
  }
  return { freshMiBps: median(fresh), touchedMiBps: median(touched) };
}

/** The size of a full `pages` frame of data pages, `stride` pages apart: what the migration puts on the wire. */
export function pagesFrameBytes(stride = 1): number {
  const batch = new BatchBuilder();
  const page = randomBytes(PAGE_SIZE);
  for (let p = 0; p < BATCH_DATA_BYTES / PAGE_SIZE; p++) batch.add(WORK_BASE_PAGE + p * stride, page, 0, false);
  return encode(batch.take(0, 0)).length;
}

/** Sends `total` bytes as binary frames of `frameBytes` to the sink; returns the time until it has them all. */
async function rawSend(url: string, frameBytes: number, total: number): Promise<{ bytes: number; ms: number }> {
  // The client options of the migration's own connection (transport/connect.ts), masking included.
  const ws = new WebSocket(url, { perMessageDeflate: false, maxPayload: MAX_PAYLOAD, ...clientMasking(url) });
  await once(ws, "open");
  try {
    const frame = randomBytes(frameBytes);
    const frames = Math.ceil(total / frameBytes);
    let inflight = 0;
    let wake: (() => void) | undefined;
    const start = performance.now();
    for (let i = 0; i < frames; i++) {
      while (inflight > RAW_HIGH_WATER) await new Promise<void>((r) => (wake = r));
      inflight += frame.length;
      ws.send(frame, { binary: true }, () => {
        inflight -= frame.length;
        wake?.();
      });
    }
    ws.send("count");
    const [reply] = (await once(ws, "message")) as [Buffer];
    const ms = performance.now() - start;
    const bytes = Number(reply.toString());
    if (bytes !== frames * frameBytes) throw new Error(`raw sink counted ${bytes} bytes, ${frames * frameBytes} were sent`);
    return { bytes, ms };
  } finally {
    ws.close();
  }
}

/** One B2 migration and what was measured around it. */
interface IncompressibleRun {
  raw: { bytes: number; ms: number };
  report: MigrationReport;
  /** CPU time the destination used from the connection to its `ready`. */
  destinationCpuMs: { user: number; system: number };
  /** CPU time this (the source's) process used during the migration, the running guest's included. */
  sourceCpuMs: { user: number; system: number };
  /** The destination's peak resident set from the connection to its `ready`. */
  destinationPeakRssBytes: number;
  /** What the destination's memory was made of once it listened, when the migration connected, and at its `ready`. */
  destinationMemory: { listening: MemoryMakeup; session: MemoryMakeup; ready: MemoryMakeup };
  /** This (the source's) process: resident set when the migration started, peak during it. */
  sourceRssBytes: { before: number; peak: number; peakReset: boolean };
}

/** Raw ws, then the incompressible guest's migration, to one destination process. */
function incompressibleRun(memoryBytes: number, frameBytes: number, preallocBytes?: number): Promise<IncompressibleRun> {
  return withDestination(async (d) => {
    // The faster of two passes: the first also warms both processes up (JIT, allocator, socket buffers).
    const passes = [await rawSend(d.sinkUrl, frameBytes, memoryBytes), await rawSend(d.sinkUrl, frameBytes, memoryBytes)];
    const raw = passes[0].ms <= passes[1].ms ? passes[0] : passes[1];
    const [session, ready] = [d.event("session"), d.event("ready")];
    let before = 0;
    let peakReset = false;
    let cpuBefore = process.cpuUsage();
    const beforeMigration = (): void => {
      peakReset = resetPeakRss();
      before = rssBytes();
      cpuBefore = process.cpuUsage();
    };
    const report = await migrateOnce(d, { spec: spec(memoryBytes, "idle", { dirtyBytesPerSecond: 0 }), randomMemory: true, beforeMigration });
    const sourceCpu = process.cpuUsage(cpuBefore);
    const peak = peakRssBytes();
    const [from, to] = [await session, await ready];
    return {
      raw,
      report,
      destinationCpuMs: { user: to.cpuMs.user - from.cpuMs.user, system: to.cpuMs.system - from.cpuMs.system },
      sourceCpuMs: { user: sourceCpu.user / 1000, system: sourceCpu.system / 1000 },
      destinationPeakRssBytes: to.peakRssBytes!,
      destinationMemory: { listening: d.listening, session: from.memory!, ready: to.memory! },
      sourceRssBytes: { before, peak, peakReset },
    };
  }, { preallocBytes, footprint: true });
}

/** B2's measurements, made once for B2 and B10 together. */
interface IncompressibleRuns {
  memoryBytes: number;
  frameBytes: number;
  pageStores: { freshMiBps: number; touchedMiBps: number };
  /** To a listener with the guest's size preallocated (listen --prealloc). */
  preallocated: IncompressibleRun;
  /** To a listener without: every page stored into memory never written before. */
  plain: IncompressibleRun;
}

const incompressible = new Map<boolean, Promise<IncompressibleRuns>>();

function incompressibleRuns(quick: boolean): Promise<IncompressibleRuns> {
  let runs = incompressible.get(quick);
  if (runs === undefined) {
    runs = (async () => {
      const memoryBytes = quick ? 32 * MiB : GiB;
      // Measured while no other process of the benchmark runs.
      const pageStores = pageStoreRates(quick ? 16 * MiB : 128 * MiB);
      const frameBytes = pagesFrameBytes();
      const plain = await incompressibleRun(memoryBytes, frameBytes);
      const preallocated = await incompressibleRun(memoryBytes, frameBytes, memoryBytes);
      return { memoryBytes, frameBytes, pageStores, preallocated, plain };
    })();
    incompressible.set(quick, runs);
  }
  return runs;
}

/** Throughput of one run: the migration's payload rate, raw ws's, their ratio, and what goes in the JSON. */
function throughput(run: IncompressibleRun): { rate: number; rawRate: number; details: Record<string, unknown> } {
  const moved = payloadThroughput(run.report);
  const rate = (moved.bytes / moved.ms) * 1000;
  const rawRate = (run.raw.bytes / run.raw.ms) * 1000;
  const r = run.report;
  return {
    rate,
    rawRate,
    details: {
      MiBps: rate / MiB,
      rawMiBps: rawRate / MiB,
      ratio: rate / rawRate,
      raw: run.raw,
      migration: { payloadBytes: moved.bytes, memoryMs: moved.ms, totalMs: r.totalMs, rounds: r.rounds, bytesOnWire: r.bytes.total },
      // From the connection to `ready`: the destination's own cost, apart from any time it waited or was not scheduled.
      destinationCpuMs: run.destinationCpuMs,
      sourceCpuMs: run.sourceCpuMs,
    },
  };
}

export async function benchIncompressible(quick: boolean): Promise<BenchResult> {
  const runs = await incompressibleRuns(quick);
  const pre = throughput(runs.preallocated);
  const plain = throughput(runs.plain);
  return {
    id: "B2",
    what: `migration payload throughput, ${runs.memoryBytes / MiB} MiB incompressible guest, loopback, destination with guest memory preallocated`,
    measured: pre.rate / MiB,
    unit: "MiB/s",
    baseline: { what: `raw ws, same processes, ${runs.frameBytes}-byte frames`, value: pre.rawRate / MiB },
    ratio: pre.rate / pre.rawRate,
    ratioOf: "of raw",
    target: "≥ 0.75× raw ws",
    met: pre.rate >= 0.75 * pre.rawRate,
    details: { frameBytes: runs.frameBytes, pageStores: runs.pageStores, preallocated: pre.details, withoutPrealloc: plain.details },
  };
}

/** Allowed above the guest's size on the destination, and as growth on the source. */
const FOOTPRINT_MARGIN_BYTES = 64 * MiB;

export async function benchFootprint(quick: boolean): Promise<BenchResult> {
  const runs = await incompressibleRuns(quick);
  const inMiB = (m: MemoryMakeup): Record<string, number | undefined> => Object.fromEntries(Object.entries(m).map(([k, v]) => [`${k}MiB`, v === undefined ? undefined : v / MiB]));
  const each = (run: IncompressibleRun): Record<string, unknown> => ({
    destinationPeakMiB: run.destinationPeakRssBytes / MiB,
    destinationMemory: { listening: inMiB(run.destinationMemory.listening), session: inMiB(run.destinationMemory.session), ready: inMiB(run.destinationMemory.ready) },
    sourceBeforeMiB: run.sourceRssBytes.before / MiB,
    sourcePeakMiB: run.sourceRssBytes.peak / MiB,
    sourceGrowthMiB: (run.sourceRssBytes.peak - run.sourceRssBytes.before) / MiB,
    sourcePeakReset: run.sourceRssBytes.peakReset,
  });
  const both = [runs.preallocated, runs.plain];
  const destinationPeak = Math.max(...both.map((r) => r.destinationPeakRssBytes));
  const sourceGrowth = Math.max(...both.map((r) => r.sourceRssBytes.peak - r.sourceRssBytes.before));
  return {
    id: "B10",
    what: `peak resident memory during B2 (${runs.memoryBytes / MiB} MiB guest): destination; source growth ${(sourceGrowth / MiB).toFixed(1)} MiB`,
    measured: destinationPeak / MiB,
    unit: "MiB",
    baseline: { what: "guest memory", value: runs.memoryBytes / MiB },
    ratio: destinationPeak / runs.memoryBytes,
    ratioOf: "of guest",
    target: "destination ≤ guest + 64 MiB, source growth ≤ 64 MiB",
    met: destinationPeak <= runs.memoryBytes + FOOTPRINT_MARGIN_BYTES && sourceGrowth <= FOOTPRINT_MARGIN_BYTES,
    details: { guestMiB: runs.memoryBytes / MiB, preallocated: each(runs.preallocated), withoutPrealloc: each(runs.plain) },
  };
}

/** Migrations of B3 and B4 (fewer in quick mode), each to a fresh destination process; their medians are reported. */
const runCount = (quick: boolean): number => (quick ? 3 : 5);

export async function benchIdle(quick: boolean): Promise<BenchResult> {
  const memoryBytes = quick ? 32 * MiB : GiB;
  const runs: MigrationReport[] = [];
  for (let i = 0; i < runCount(quick); i++) {
    runs.push(await withDestination((d) => migrateOnce(d, { spec: spec(memoryBytes, "idle", { dirtyBytesPerSecond: 0 }), randomMemory: false })));
  }
  const totalMs = median(runs.map((r) => r.totalMs));
  const downtimeMs = median(runs.map((r) => r.downtimeMs));
  return {
    id: "B3",
    what: `migration of an idle ${memoryBytes / MiB} MiB guest: total, median of ${runs.length} (downtime ${downtimeMs.toFixed(1)} ms)`,
    measured: totalMs,
    unit: "ms",
    target: "total ≤ 50 ms and downtime ≤ 2 ms",
    met: totalMs <= 50 && downtimeMs <= 2,
    details: {
      totalsMs: runs.map((r) => r.totalMs),
      downtimesMs: runs.map((r) => r.downtimeMs),
      setupMs: runs.map((r) => r.setupMs),
      pages: runs.map((r) => r.pages),
      bytesOnWire: runs.map((r) => r.bytes.total),
    },
  };
}

/**
 * B4's downtime limit: the 5 ms its target asks for, set as a user who wants that downtime sets
 * it (QEMU's downtime-limit). The same migrations also run with the default limit, for the JSON.
 */
const HOT_SET_DOWNTIME_LIMIT_MS = 5;

export async function benchHotSet(quick: boolean): Promise<BenchResult> {
  const memoryBytes = quick ? 32 * MiB : GiB;
  const migrations = async (downtimeLimitMs: number): Promise<MigrationReport[]> => {
    const runs: MigrationReport[] = [];
    for (let i = 0; i < runCount(quick); i++) {
      const run = spec(memoryBytes, "uniform", { workingSetBytes: 4 * MiB, dirtyBytesPerSecond: 256 * MiB, seed: 7 + i });
      runs.push(await withDestination((d) => migrateOnce(d, { spec: run, randomMemory: false, downtimeLimitMs })));
    }
    return runs;
  };
  const limited = await migrations(HOT_SET_DOWNTIME_LIMIT_MS);
  const byDefault = await migrations(DEFAULT_DOWNTIME_LIMIT_MS);
  const measured = median(limited.map((r) => r.downtimeMs));
  const defaultMedian = median(byDefault.map((r) => r.downtimeMs));
  const each = (runs: MigrationReport[]): Record<string, unknown> => ({
    downtimesMs: runs.map((r) => r.downtimeMs),
    expectedDowntimesMs: runs.map((r) => r.expectedDowntimeMs),
    stopReasons: runs.map((r) => r.stopReason),
    rounds: runs.map((r) => r.rounds),
    throttlePercent: runs.map((r) => r.roundStats[r.roundStats.length - 1].throttlePercent),
    stopCopyPages: runs.map((r) => r.roundStats[r.roundStats.length - 1].pages),
    stopCopyMs: runs.map((r) => r.roundStats[r.roundStats.length - 1].durationMs),
    totalsMs: runs.map((r) => r.totalMs),
  });
  return {
    id: "B4",
    what: `downtime, ${memoryBytes / MiB} MiB guest, 4 MiB hot set dirtied at 256 MiB/s, downtime limit ${HOT_SET_DOWNTIME_LIMIT_MS} ms, median of ${limited.length} (default ${DEFAULT_DOWNTIME_LIMIT_MS} ms limit: ${defaultMedian.toFixed(1)} ms)`,
    measured,
    unit: "ms",
    target: "median ≤ 5 ms",
    met: measured <= 5,
    details: {
      downtimeLimitMs: HOT_SET_DOWNTIME_LIMIT_MS,
      ...each(limited),
      defaultLimit: { downtimeLimitMs: DEFAULT_DOWNTIME_LIMIT_MS, medianDowntimeMs: defaultMedian, ...each(byDefault) },
    },
  };
}
