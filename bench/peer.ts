// `npm run bench -- --peer qemu`: QEMU migrating the guests of B2 and B3 in the same run, median
// of 3 each, and rows setting this run's B2 and B3 beside QEMU's figures. See docs/performance.md.

import { spawnSync } from "node:child_process";
import { randomFillSync } from "node:crypto";
import { closeSync, mkdtempSync, openSync, rmSync, writeSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { DEFAULT_DEADLINES, QEMU_BINARY, findQemu, killAllQemu, pickAccelerator, qemuMigrateOnce, type QemuMigrationFigures, type QemuSetup } from "./qemu-migration.js";
import { median, type BenchResult } from "./result.js";

export const PEERS = ["qemu"] as const;
export type Peer = (typeof PEERS)[number];
/** The benchmarks of this project a peer is compared with: a peer run always includes them. */
export const PEER_COMPARES = ["B2", "B3"];
export const INSTALL_QEMU = `--peer qemu needs ${QEMU_BINARY} on PATH: install QEMU (Debian and Ubuntu: apt-get install qemu-system-x86)`;

const MiB = 2 ** 20;
const RUNS = 3;
/** B2's guest is random from 1 MiB up; QEMU's loader fills it from there, short of the top, where SeaBIOS keeps its tables. */
const LOAD_ADDRESS = MiB;
const FIRMWARE_HEADROOM = 23 * MiB;
/** B2 needs at least this many times QEMU's throughput (issue target). */
const B2_TARGET_RATIO = 1.5;

/** The `--peer` value checked: undefined when absent; an unknown peer is an error naming the known ones. */
export function parsePeer(value: string | undefined): Peer | undefined {
  if (value === undefined) return undefined;
  if ((PEERS as readonly string[]).includes(value)) return value as Peer;
  throw new Error(`--peer: unknown peer "${value}" (known: ${PEERS.join(", ")})`);
}

/** Why `peer` cannot run here (with how to fix it), or undefined when it can. */
export function peerUnavailable(peer: Peer, path = process.env.PATH): string | undefined {
  switch (peer) {
    case "qemu":
      return findQemu(path) === undefined ? INSTALL_QEMU : undefined;
  }
}

interface QemuCase {
  runs: QemuMigrationFigures[];
  median(pick: (f: QemuMigrationFigures) => number): number;
}

function qemuCase(runs: QemuMigrationFigures[]): QemuCase {
  return { runs, median: (pick) => median(runs.map(pick)) };
}

/** A file of `bytes` random bytes. */
function writeRandomFile(path: string, bytes: number): void {
  const chunk = Buffer.allocUnsafe(64 * MiB);
  const fd = openSync(path, "w");
  try {
    for (let left = bytes; left > 0; left -= chunk.length) {
      randomFillSync(chunk);
      writeSync(fd, chunk, 0, Math.min(left, chunk.length));
    }
  } finally {
    closeSync(fd);
  }
}

function qemuVersion(binary: string): string {
  const out = spawnSync(binary, ["--version"], { encoding: "utf8", timeout: 10_000 }).stdout ?? "";
  return /version (\S+)/.exec(out)?.[1] ?? "unknown version";
}

/** Runs QEMU's migrations in a private temporary directory, removed (and QEMU killed) however it ends, Ctrl-C included. */
async function measureQemu(quick: boolean): Promise<{ setup: QemuSetup; version: string; memoryMiB: number; idle: QemuCase; random: QemuCase }> {
  const binary = findQemu();
  if (!binary) throw new Error(INSTALL_QEMU);
  const dir = mkdtempSync(join(tmpdir(), "blmv-peer-qemu-"));
  const cleanUp = (): void => {
    killAllQemu();
    rmSync(dir, { recursive: true, force: true });
  };
  const interrupted = (signal: NodeJS.Signals): void => {
    cleanUp();
    process.stderr.write(`bench: ${signal}: QEMU stopped, temporary files removed\n`);
    process.exit(signal === "SIGINT" ? 130 : 143);
  };
  process.once("SIGINT", interrupted);
  process.once("SIGTERM", interrupted);
  try {
    const setup: QemuSetup = { binary, accel: pickAccelerator(), dir, deadlines: DEFAULT_DEADLINES };
    const memoryMiB = quick ? 32 : 1024;
    const idle: QemuMigrationFigures[] = [];
    for (let i = 0; i < RUNS; i++) idle.push(await qemuMigrateOnce(setup, { memoryMiB }, i));
    const file = join(dir, "random.bin");
    const loadBytes = memoryMiB * MiB - LOAD_ADDRESS - FIRMWARE_HEADROOM;
    writeRandomFile(file, loadBytes);
    const random: QemuMigrationFigures[] = [];
    for (let i = 0; i < RUNS; i++) {
      const f = await qemuMigrateOnce(setup, { memoryMiB, load: { file, address: LOAD_ADDRESS }, preallocateDestination: true }, RUNS + i);
      if (f.normalBytes < loadBytes) throw new Error(`QEMU sent ${f.normalBytes} bytes of non-zero pages, fewer than the ${loadBytes} random bytes loaded: the guest did not hold them`);
      random.push(f);
    }
    return { setup, version: qemuVersion(binary), memoryMiB, idle: qemuCase(idle), random: qemuCase(random) };
  } finally {
    process.off("SIGINT", interrupted);
    process.off("SIGTERM", interrupted);
    cleanUp();
  }
}

function ours(results: readonly BenchResult[], id: string): BenchResult {
  const r = results.find((x) => x.id === id);
  if (!r) throw new Error(`the QEMU peer compares with ${id}, which did not complete in this run`);
  return r;
}

/** QEMU's migrations of B2's and B3's guests, as rows beside this run's B2 and B3 (which `results` must hold). */
export async function qemuPeerRows(quick: boolean, results: readonly BenchResult[]): Promise<BenchResult[]> {
  const b2 = ours(results, "B2");
  const b3 = ours(results, "B3");
  const { setup, version, memoryMiB, idle, random } = await measureQemu(quick);
  const qemu = `QEMU ${version} (${setup.accel}), median of ${RUNS}`;
  const details = { qemuVersion: version, accelerator: setup.accel, runs: { idle: idle.runs, random: random.runs } };
  const qemuThroughput = random.median((f) => f.payloadMiBps);
  const qemuTotal = idle.median((f) => f.totalMs);
  const qemuDowntime = idle.median((f) => f.downtimeMs);
  const downtimes = b3.details.downtimesMs;
  if (!Array.isArray(downtimes) || downtimes.length === 0) throw new Error("the QEMU peer needs B3's downtimes, which its result does not hold");
  const ourDowntime = median(downtimes as number[]);
  const ratio = (a: number, b: number): number | undefined => (b > 0 ? a / b : undefined);
  return [
    {
      id: "B2 vs QEMU",
      what: `payload throughput, ${memoryMiB} MiB incompressible guest, destinations preallocated: B2 vs QEMU, bandwidth limit lifted`,
      measured: b2.measured,
      unit: b2.unit,
      baseline: { what: qemu, value: qemuThroughput },
      ratio: ratio(b2.measured, qemuThroughput),
      ratioOf: "of QEMU",
      target: `≥ ${B2_TARGET_RATIO}× QEMU`,
      met: b2.measured >= B2_TARGET_RATIO * qemuThroughput,
      details: {
        ...details,
        qemuMbps: random.median((f) => f.mbps),
        qemuTotalMs: random.median((f) => f.totalMs),
        qemuDowntimeMs: random.median((f) => f.downtimeMs),
        // Each destination's own CPU cost for the migration (B2's from its connection to its ready), which load blurs less than time.
        destinationCpuMs: {
          ours: (b2.details.preallocated as { destinationCpuMs?: unknown } | undefined)?.destinationCpuMs,
          qemu: random.runs.every((f) => f.cost) ? { user: random.median((f) => f.cost!.destination.userMs), system: random.median((f) => f.cost!.destination.systemMs) } : undefined,
        },
      },
    },
    {
      id: "B3 vs QEMU",
      what: `total time, idle ${memoryMiB} MiB guest: B3 vs QEMU (SeaBIOS halted)`,
      measured: b3.measured,
      unit: b3.unit,
      baseline: { what: qemu, value: qemuTotal },
      ratio: ratio(b3.measured, qemuTotal),
      ratioOf: "of QEMU",
      target: "≤ QEMU's",
      met: b3.measured <= qemuTotal,
      details: { ...details, qemuSetupMs: idle.median((f) => f.setupMs) },
    },
    {
      id: "B3 downtime vs QEMU",
      what: `downtime, idle ${memoryMiB} MiB guest: B3 vs QEMU`,
      measured: ourDowntime,
      unit: "ms",
      baseline: { what: qemu, value: qemuDowntime },
      ratio: ratio(ourDowntime, qemuDowntime),
      ratioOf: "of QEMU",
      target: "≤ QEMU's",
      met: ourDowntime <= qemuDowntime,
      details: { qemuDowntimesMs: idle.runs.map((f) => f.downtimeMs) },
    },
  ];
}
