// QEMU's own live migration between two QEMU processes over loopback TCP, driven over QMP: the
// peer `npm run bench -- --peer qemu` measures beside B2 and B3. See docs/performance.md.

import { spawn, type ChildProcess } from "node:child_process";
import { accessSync, constants, existsSync, readFileSync } from "node:fs";
import { delimiter, join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { QmpClient } from "./qmp.js";

export const QEMU_BINARY = "qemu-system-x86_64";
/** What SeaBIOS writes to its debug port once it has found nothing to boot; from then on it halts. */
const SEABIOS_IDLE = "No bootable device";
/** SeaBIOS's debug console port (QEMU's isa-debugcon). */
const SEABIOS_DEBUG_PORT = "0x402";
/** High enough that QEMU's rate limit never applies on loopback: 64 GiB/s. */
const UNLIMITED_BANDWIDTH = 64 * 2 ** 30;

export interface QemuDeadlines {
  /** QEMU started (its machine built, the loader's file read) and its QMP greeting read. */
  startMs: number;
  /** Any one QMP command answered. */
  commandMs: number;
  /** SeaBIOS booted to its halt. */
  firmwareMs: number;
  /** The whole migration, from `migrate` to completed. */
  migrationMs: number;
  /** The longest the migration may go without moving a byte. */
  stallMs: number;
  /** Between two `query-migrate` polls. */
  pollMs: number;
}

export const DEFAULT_DEADLINES: QemuDeadlines = { startMs: 60_000, commandMs: 10_000, firmwareMs: 60_000, migrationMs: 120_000, stallMs: 10_000, pollMs: 10 };

export interface QemuGuest {
  memoryMiB: number;
  /** A raw file QEMU's generic loader copies into guest RAM at `address` before the firmware starts. */
  load?: { file: string; address: number };
  /** The destination faults its guest RAM in at start-up (`-mem-prealloc`), as B2's destination preallocates. */
  preallocateDestination?: boolean;
}

/** What QEMU's `query-migrate` on the source says of a completed migration. */
export interface QemuMigrationFigures {
  totalMs: number;
  downtimeMs: number;
  setupMs: number;
  /** Bytes of pages sent whole (not zero pages). */
  normalBytes: number;
  /** Everything the RAM stream put on the wire. */
  transferredBytes: number;
  /** QEMU's own rate, megabits (10^6) per second over the time after setup. */
  mbps: number;
  /** normalBytes over (total − setup): what B2 measures of ours (page bytes over the time sending memory). */
  payloadMiBps: number;
  /** What each QEMU process spent from `migrate` until both said completed (Linux only): load does not blur it as it does the times. */
  cost?: { source: ProcessCost; destination: ProcessCost };
}

export interface ProcessCost {
  userMs: number;
  systemMs: number;
  minorFaults: number;
}

/** Linux's clock tick for /proc/<pid>/stat times (USER_HZ, 100 on every Linux platform Node runs on). */
const USER_HZ = 100;

/** The process's CPU time and minor page faults so far, from /proc, or undefined where there is none. */
function processCost(pid: number | undefined): ProcessCost | undefined {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
    // Fields after the command name (which may hold spaces), from field 3 (state) on.
    const fields = stat.slice(stat.lastIndexOf(") ") + 2).split(" ");
    return { minorFaults: Number(fields[7]), userMs: (Number(fields[11]) * 1000) / USER_HZ, systemMs: (Number(fields[12]) * 1000) / USER_HZ };
  } catch {
    return undefined;
  }
}

function costSince(before: ProcessCost | undefined, pid: number | undefined): ProcessCost | undefined {
  const after = processCost(pid);
  if (!before || !after) return undefined;
  return { userMs: after.userMs - before.userMs, systemMs: after.systemMs - before.systemMs, minorFaults: after.minorFaults - before.minorFaults };
}

/** The full path of the QEMU binary on PATH, or undefined. */
export function findQemu(path = process.env.PATH ?? ""): string | undefined {
  for (const dir of path.split(delimiter)) {
    if (dir === "") continue;
    const candidate = join(dir, QEMU_BINARY);
    try {
      accessSync(candidate, constants.X_OK);
      return candidate;
    } catch {
      // not in this directory
    }
  }
  return undefined;
}

/** KVM when this process may open /dev/kvm, TCG (QEMU's binary translator) otherwise. */
export function pickAccelerator(): "kvm" | "tcg" {
  try {
    accessSync("/dev/kvm", constants.R_OK | constants.W_OK);
    return "kvm";
  } catch {
    return "tcg";
  }
}

/** The QEMU processes started so far and not yet stopped, for cleanup on a signal. */
const running = new Set<ChildProcess>();

/** Kills every QEMU process still running (SIGKILL: nothing of theirs needs saving). */
export function killAllQemu(): void {
  for (const child of running) child.kill("SIGKILL");
  running.clear();
}

interface Qemu {
  child: ChildProcess;
  qmp: QmpClient;
  /** The last of what it wrote to stderr, for error messages. */
  stderr(): string;
}

export interface QemuSetup {
  binary: string;
  accel: "kvm" | "tcg";
  /** A private directory for the sockets and debug logs, removed by the caller. */
  dir: string;
  deadlines: QemuDeadlines;
}

async function startQemu(setup: QemuSetup, name: string, args: string[]): Promise<Qemu> {
  const socket = join(setup.dir, `${name}.qmp`);
  const child = spawn(setup.binary, [...args, "-qmp", `unix:${socket},server=on,wait=off`], { stdio: ["ignore", "ignore", "pipe"] });
  running.add(child);
  let stderr = "";
  child.stderr!.setEncoding("utf8");
  child.stderr!.on("data", (s: string) => (stderr = (stderr + s).slice(-2000)));
  const exited = new AbortController();
  child.once("exit", () => {
    running.delete(child);
    exited.abort();
  });
  child.once("error", (e) => {
    stderr += `${e.message}\n`;
    exited.abort();
  });
  try {
    const qmp = await QmpClient.connect(socket, { connectTimeoutMs: setup.deadlines.startMs, commandTimeoutMs: setup.deadlines.commandMs, signal: exited.signal });
    return { child, qmp, stderr: () => stderr.trim() };
  } catch (e) {
    child.kill("SIGKILL");
    const said = stderr.trim();
    throw new Error(`${name} QEMU did not start: ${exited.signal.aborted ? `it exited${said ? `: ${said}` : ""}` : e instanceof Error ? e.message : String(e)}`);
  }
}

async function stopQemu(q: Qemu | undefined): Promise<void> {
  if (!q) return;
  q.qmp.close();
  if (q.child.exitCode !== null || q.child.signalCode !== null) return;
  const gone = new Promise((resolve) => q.child.once("exit", resolve));
  q.child.kill("SIGKILL");
  await gone;
}

function machineArgs(setup: QemuSetup, guest: QemuGuest, debugLog: string): string[] {
  return [
    "-accel", setup.accel,
    "-nographic", "-nodefaults",
    "-m", String(guest.memoryMiB),
    "-chardev", `file,id=firmware,path=${debugLog}`,
    "-device", `isa-debugcon,iobase=${SEABIOS_DEBUG_PORT},chardev=firmware`,
  ];
}

/** Waits until SeaBIOS says it found nothing to boot (it halts from then on). */
async function firmwareHalted(setup: QemuSetup, log: string, source: Qemu): Promise<void> {
  const deadline = Date.now() + setup.deadlines.firmwareMs;
  for (;;) {
    if (existsSync(log) && readFileSync(log, "latin1").includes(SEABIOS_IDLE)) return;
    if (source.child.exitCode !== null || source.child.signalCode !== null) throw new Error(`source QEMU exited while its firmware booted: ${source.stderr()}`);
    if (Date.now() >= deadline) throw new Error(`source QEMU: SeaBIOS did not reach "${SEABIOS_IDLE}" within ${setup.deadlines.firmwareMs} ms`);
    await sleep(20);
  }
}

interface MigrateInfo {
  status?: string;
  "error-desc"?: string;
  "total-time"?: number;
  downtime?: number;
  "setup-time"?: number;
  ram?: { transferred?: number; "normal-bytes"?: number; mbps?: number };
  "socket-address"?: { type: string; host?: string; port?: string }[];
}

/**
 * Polls `query-migrate` until the migration is completed; a failed or cancelled migration, one
 * that moves no byte for `stallMs`, or one past `migrationMs` is an error naming why.
 */
export async function awaitMigration(qmp: QmpClient, deadlines: Pick<QemuDeadlines, "migrationMs" | "stallMs" | "pollMs">, side = "source"): Promise<MigrateInfo> {
  const started = Date.now();
  let moved = -1;
  let movedAt = started;
  for (;;) {
    const info = await qmp.execute<MigrateInfo>("query-migrate");
    if (typeof info !== "object" || info === null) throw new Error(`${side} query-migrate: expected an object, got ${JSON.stringify(info)}`);
    const now = Date.now();
    switch (info.status) {
      case "completed":
        return info;
      case "failed":
      case "cancelled":
        throw new Error(`${side} QEMU: migration ${info.status}${info["error-desc"] ? `: ${info["error-desc"]}` : ""}`);
    }
    const transferred = info.ram?.transferred ?? 0;
    if (transferred !== moved) {
      moved = transferred;
      movedAt = now;
    } else if (now - movedAt >= deadlines.stallMs) {
      throw new Error(`${side} QEMU: migration stalled (status ${info.status ?? "none"}, ${transferred} bytes sent, none for ${deadlines.stallMs} ms)`);
    }
    if (now - started >= deadlines.migrationMs) throw new Error(`${side} QEMU: migration not completed within ${deadlines.migrationMs} ms (status ${info.status ?? "none"})`);
    await sleep(deadlines.pollMs);
  }
}

function figures(info: MigrateInfo): QemuMigrationFigures {
  const total = info["total-time"];
  const downtime = info.downtime;
  const setupMs = info["setup-time"] ?? 0;
  const normalBytes = info.ram?.["normal-bytes"];
  const transferredBytes = info.ram?.transferred;
  if (total === undefined || downtime === undefined || normalBytes === undefined || transferredBytes === undefined) {
    throw new Error(`source query-migrate: a completed migration without total-time, downtime or ram figures: ${JSON.stringify(info).slice(0, 300)}`);
  }
  const sendingMs = total - setupMs;
  return { totalMs: total, downtimeMs: downtime, setupMs, normalBytes, transferredBytes, mbps: info.ram?.mbps ?? 0, payloadMiBps: sendingMs > 0 ? normalBytes / 2 ** 20 / (sendingMs / 1000) : 0 };
}

/**
 * Starts a destination QEMU waiting for a migration and a source QEMU with `guest`, lets the
 * source's SeaBIOS boot to its halt, migrates it live over loopback TCP with the bandwidth
 * limit lifted (the downtime limit left at QEMU's default), and returns the source's figures
 * once the destination says it has the guest too. Both QEMU processes are gone on return.
 */
export async function qemuMigrateOnce(setup: QemuSetup, guest: QemuGuest, run: number): Promise<QemuMigrationFigures> {
  const destinationLog = join(setup.dir, `destination-${run}.log`);
  const sourceLog = join(setup.dir, `source-${run}.log`);
  let destination: Qemu | undefined;
  let source: Qemu | undefined;
  try {
    destination = await startQemu(setup, `destination-${run}`, [...machineArgs(setup, guest, destinationLog), ...(guest.preallocateDestination ? ["-mem-prealloc"] : []), "-incoming", "defer"]);
    await destination.qmp.execute("migrate-incoming", { uri: "tcp:127.0.0.1:0" });
    const listening = (await destination.qmp.execute<MigrateInfo>("query-migrate"))["socket-address"]?.find((a) => a.type === "inet");
    if (!listening?.port) throw new Error("destination QEMU: query-migrate names no TCP address it listens on");
    const load = guest.load ? ["-device", `loader,file=${guest.load.file},addr=0x${guest.load.address.toString(16)},force-raw=on`] : [];
    source = await startQemu(setup, `source-${run}`, [...machineArgs(setup, guest, sourceLog), ...load]);
    await firmwareHalted(setup, sourceLog, source);
    await source.qmp.execute("migrate-set-parameters", { "max-bandwidth": UNLIMITED_BANDWIDTH });
    const before = { source: processCost(source.child.pid), destination: processCost(destination.child.pid) };
    await source.qmp.execute("migrate", { uri: `tcp:127.0.0.1:${listening.port}` });
    const info = await awaitMigration(source.qmp, setup.deadlines);
    await awaitMigration(destination.qmp, setup.deadlines, "destination");
    const sourceCost = costSince(before.source, source.child.pid);
    const destinationCost = costSince(before.destination, destination.child.pid);
    return { ...figures(info), ...(sourceCost && destinationCost ? { cost: { source: sourceCost, destination: destinationCost } } : {}) };
  } finally {
    await Promise.all([stopQemu(source), stopQemu(destination)]);
  }
}
