// B7: the a-priori model (src/migrate/report/forecast.ts) against live migrations over a sweep of
// dirty rates and link rates, and one point over a link the kernel shapes (tc tbf between network
// namespaces). Every prediction is made before its run, from the configuration and a calibration
// on other runs. docs/performance.md says how it is measured.

import { execFileSync } from "node:child_process";
import { BOOT_DATA_PAGES, WORK_BASE_PAGE } from "../src/guest/layout.js";
import { PAGE_SIZE } from "../src/guest/page.js";
import { BATCH_DATA_BYTES } from "../src/migrate/wire/protocol.js";
import { DEFAULT_DOWNTIME_LIMIT_MS, DEFAULT_MAX_ROUNDS } from "../src/migrate/source/source.js";
import { forecast, tcpPayloadBytesPerSecond, type Forecast, type ForecastInput } from "../src/migrate/report/forecast.js";
import type { MigrationReport } from "../src/migrate/report/metrics.js";
import type { GuestRunSpec } from "../src/migrate/run/guest-run.js";
import { migrateOnce, pagesFrameBytes, spec, withDestination, type DestinationPlace } from "./migration.js";
import { median, type BenchResult } from "./result.js";

const MiB = 2 ** 20;
/** The dirty rates of the sweep, as multiples of the link's rate. */
const DIRTY_FACTORS = [0, 0.25, 0.5, 0.75, 1, 1.5];
/** The target: the median |error| of the points. */
const MEDIAN_ERROR_TARGET = 0.1;

/** One configuration: a guest whose lower half holds random data from 1 MiB up, all of it the working set; its upper half is zero. */
interface PointConfig {
  memoryBytes: number;
  /** Link rate in bits per second. */
  linkBits: number;
  dirtyFactor: number;
  /** Shaped by the kernel (tc) rather than by the source's token bucket. */
  kernel: boolean;
}

type Cost = ForecastInput["cost"];

interface PointResult {
  memoryMiB: number;
  linkMbit: number;
  link: "token bucket" | "tc tbf";
  dirtyMiBps: number;
  predicted: { totalMs: number; downtimeMs: number; roundMs: number[]; rounds: number; throttleSteps: number; stopReason: string; convergesUnthrottled: boolean };
  measured: { totalMs: number; downtimeMs: number; rounds: number; throttleSteps: number; stopReason?: string; setupMs: number; roundMs: number[] };
  /** measured ÷ predicted − 1, total time. */
  error: number;
  /** For a point the model calls non-converging without a throttle: whether the run throttled or hit its round cap. */
  verdictHeld: boolean;
}

const randomPages = (memoryBytes: number): number => memoryBytes / 2 / PAGE_SIZE - WORK_BASE_PAGE;
const workingSetBytes = (memoryBytes: number): number => randomPages(memoryBytes) * PAGE_SIZE;

/** What the model knows before the run. */
function forecastInput(c: PointConfig, cost: Cost): ForecastInput {
  const pages = c.memoryBytes / PAGE_SIZE;
  const dataPages = BOOT_DATA_PAGES + randomPages(c.memoryBytes);
  const pagesPerFrame = BATCH_DATA_BYTES / PAGE_SIZE;
  // The kernel's link carries TCP packets; the token bucket counts frame bytes.
  const bytesPerSecond = c.kernel ? tcpPayloadBytesPerSecond(c.linkBits) : c.linkBits / 8;
  return {
    dataPages,
    zeroPages: pages - dataPages,
    pageSize: PAGE_SIZE,
    workload: { dirtyBytesPerSecond: dirtyRate(c), workingSetBytes: workingSetBytes(c.memoryBytes), pattern: "uniform" },
    link: { bytesPerSecond, denseBytesPerPage: pagesFrameBytes() / pagesPerFrame, sparseBytesPerPage: pagesFrameBytes(2) / pagesPerFrame },
    cost,
    stop: { downtimeLimitMs: DEFAULT_DOWNTIME_LIMIT_MS, maxRounds: DEFAULT_MAX_ROUNDS, maxDataBytes: Infinity, minDirtyPages: 0, autoConverge: true },
  };
}

/** Bytes of page writes per second: the factor times the link's bit rate in bytes. */
function dirtyRate(c: PointConfig): number {
  return Math.round((c.dirtyFactor * c.linkBits) / 8 / PAGE_SIZE) * PAGE_SIZE;
}

async function runPoint(c: PointConfig, cost: Cost, place?: DestinationPlace): Promise<PointResult> {
  const predicted = forecast(forecastInput(c, cost));
  const run = spec(c.memoryBytes, "uniform", { workingSetBytes: workingSetBytes(c.memoryBytes), dirtyBytesPerSecond: dirtyRate(c) });
  const report = await withDestination(
    (d) => migrateOnce(d, { spec: run, randomMemory: true, randomPages: randomPages(c.memoryBytes), bandwidth: c.kernel ? undefined : c.linkBits / 8 }),
    { place },
  );
  return pointResult(c, predicted, report);
}

function pointResult(c: PointConfig, p: Forecast, r: MigrationReport): PointResult {
  return {
    memoryMiB: c.memoryBytes / MiB,
    linkMbit: c.linkBits / 1e6,
    link: c.kernel ? "tc tbf" : "token bucket",
    dirtyMiBps: dirtyRate(c) / MiB,
    predicted: { totalMs: p.totalMs, downtimeMs: p.downtimeMs, roundMs: p.rounds.map((r) => r.durationMs), rounds: p.rounds.length, throttleSteps: p.throttleSteps, stopReason: p.stopReason, convergesUnthrottled: p.convergesUnthrottled },
    measured: { totalMs: r.totalMs, downtimeMs: r.downtimeMs, rounds: r.rounds, throttleSteps: r.throttleSteps, stopReason: r.stopReason, setupMs: r.setupMs, roundMs: r.roundStats.map((s) => s.durationMs) },
    error: r.totalMs / p.totalMs - 1,
    verdictHeld: p.convergesUnthrottled || r.throttleSteps > 0 || r.stopReason === "max-rounds",
  };
}

/**
 * The model's fixed and per-page costs, measured here on migrations of their own (never on a
 * point it predicts), each over an unlimited loopback link: an empty guest (the fixed cost), an
 * all-zero one (per zero page), and one full of random data that dirties half of it meanwhile
 * (round 0's time per page with data, warm-up included, and the later rounds' time per page sent
 * again). A first migration, which warms up this process, goes before them and is not counted.
 */
async function calibrate(quick: boolean): Promise<Cost & { runs: number }> {
  let runs = -1;
  const repeat = quick ? 1 : 3;
  const measure = async (run: GuestRunSpec, random: boolean, times = repeat): Promise<MigrationReport[]> => {
    const reports: MigrationReport[] = [];
    for (let i = 0; i < times; i++, runs++) reports.push(await withDestination((d) => migrateOnce(d, { spec: run, randomMemory: random })));
    return reports;
  };
  const idle = (memoryBytes: number): GuestRunSpec => spec(memoryBytes, "idle", { dirtyBytesPerSecond: 0 });
  await measure(idle(2 * MiB), false, 1);
  const empty = await measure(idle(2 * MiB), false);
  const fixedMs = median(empty.map((r) => r.totalMs));
  const fixedDowntimeMs = median(empty.map((r) => r.downtimeMs));
  const zeroBytes = quick ? 16 * MiB : 96 * MiB;
  const [zero] = await measure(idle(zeroBytes), false, 1);
  const zeroPageMs = Math.max(0, zero.totalMs - fixedMs) / (zeroBytes / PAGE_SIZE);
  const dataBytes = quick ? 12 * MiB : 96 * MiB;
  const data = await measure(spec(dataBytes, "uniform", { workingSetBytes: dataBytes / 2, dirtyBytesPerSecond: 32 * MiB }), true);
  const dataPageMs = median(data.map((r) => r.roundStats[0].durationMs / r.roundStats[0].pages));
  const resent = data.flatMap((r) => r.roundStats.slice(1).filter((s) => !s.stopAndCopy && s.pages > 0));
  const resentPageMs = resent.length > 0 ? median(resent.map((s) => s.durationMs / s.pages)) : dataPageMs;
  return { fixedMs, fixedDowntimeMs, zeroPageMs, dataPageMs, resentPageMs, runs };
}

/** Runs `fn` with a network namespace joined to this one by a veth pair whose outbound end tc shapes to `linkBits`; or says why it cannot. */
async function withShapedLink<T>(linkBits: number, fn: (place: DestinationPlace) => Promise<T>): Promise<{ ran: T } | { notRun: string }> {
  const tag = `${process.pid % 100_000}`;
  const netns = `blmv-b7-${tag}`;
  const [outside, inside] = [`b7o${tag}`, `b7i${tag}`];
  const subnet = `10.233.${process.pid % 250}`;
  const sh = (...args: string[]): void => void execFileSync(args[0], args.slice(1), { stdio: ["ignore", "ignore", "pipe"] });
  const removeNamespace = (): void => {
    try {
      // Deleting the namespace deletes the veth pair with it.
      sh("ip", "netns", "del", netns);
    } catch (e) {
      process.stderr.write(`B7: could not remove network namespace ${netns}: ${why(e)}\n`);
    }
  };
  try {
    if (process.getuid?.() !== 0) return { notRun: "needs root to create a network namespace and shape its link" };
    sh("ip", "netns", "add", netns);
  } catch (e) {
    return { notRun: `cannot create a network namespace: ${why(e)}` };
  }
  try {
    sh("ip", "link", "add", outside, "type", "veth", "peer", "name", inside, "netns", netns);
    sh("ip", "addr", "add", `${subnet}.1/24`, "dev", outside);
    sh("ip", "-n", netns, "addr", "add", `${subnet}.2/24`, "dev", inside);
    sh("ip", "link", "set", outside, "up");
    sh("ip", "-n", netns, "link", "set", inside, "up");
    // The pages flow outward from here: shape that direction, as a token bucket in the kernel.
    sh("tc", "qdisc", "add", "dev", outside, "root", "tbf", "rate", `${linkBits}bit`, "burst", "64kb", "latency", "100ms");
  } catch (e) {
    removeNamespace();
    return { notRun: `cannot set up the shaped veth link: ${why(e)}` };
  }
  try {
    return { ran: await fn({ netns, host: `${subnet}.2` }) };
  } finally {
    removeNamespace();
  }
}

function why(e: unknown): string {
  const stderr = (e as { stderr?: Buffer }).stderr?.toString().trim();
  return stderr || (e instanceof Error ? e.message : String(e));
}

export async function benchModel(quick: boolean): Promise<BenchResult> {
  const cost = await calibrate(quick);
  // Guest sizes chosen so that round 0 takes most of a second on each link. A loaded machine of
  // two cores moves pages at about 1 Gbit/s: there the calibrated per-page cost may set the pace.
  const links = quick
    ? [{ linkBits: 1e9, memoryBytes: 16 * MiB }]
    : [
        { linkBits: 100e6, memoryBytes: 24 * MiB },
        { linkBits: 300e6, memoryBytes: 56 * MiB },
        { linkBits: 1e9, memoryBytes: 160 * MiB },
      ];
  const factors = quick ? [1.5] : DIRTY_FACTORS;
  const points: PointResult[] = [];
  for (const link of links) for (const dirtyFactor of factors) points.push(await runPoint({ ...link, dirtyFactor, kernel: false }, cost));
  const kernelConfig: PointConfig = { linkBits: 100e6, memoryBytes: quick ? 8 * MiB : 24 * MiB, dirtyFactor: 0.5, kernel: true };
  const kernel = await withShapedLink(kernelConfig.linkBits, (place) => runPoint(kernelConfig, cost, place));
  if ("ran" in kernel) points.push(kernel.ran);
  const errors = points.map((p) => Math.abs(p.error));
  const medianError = median(errors);
  const worstError = Math.max(...errors);
  const verdictsHeld = points.every((p) => p.verdictHeld);
  const kernelNote = "ran" in kernel ? `tc point ${signed(kernel.ran.error)}` : "tc point not run";
  return {
    id: "B7",
    what: `a-priori model vs ${points.length} live migrations: ${links.map((l) => `${l.memoryBytes / MiB} MiB at ${l.linkBits / 1e6} Mbit/s`).join(", ")}, dirtying ${factors.join("/")}× link; ${kernelConfig.memoryBytes / MiB} MiB at ${kernelConfig.linkBits / 1e6} Mbit/s tc tbf`,
    measured: medianError * 100,
    unit: "% median |error|",
    baseline: { what: `worst |error|; ${kernelNote}`, value: worstError * 100 },
    target: `median |error| ≤ ${MEDIAN_ERROR_TARGET * 100} %, every non-converging verdict held, tc point run`,
    met: medianError <= MEDIAN_ERROR_TARGET && verdictsHeld && "ran" in kernel,
    details: { calibration: cost, points, kernelPoint: "ran" in kernel ? "run" : { notRun: kernel.notRun }, medianError, worstError, verdictsHeld },
  };
}

function signed(error: number): string {
  return `${error >= 0 ? "+" : ""}${(error * 100).toFixed(1)} %`;
}
