// Options shared by `blmv migrate send`, `blmv demo` and `blmv compare`: the guest to run, how
// to move it and what to show, each table with its help; and their checks, with those of the
// rates and the token that the migrate commands share. docs/usage.md.

import { WORKLOAD_NAMES, type GuestRunSpec } from "../migrate/run/guest-run.js";
import type { LiveMigrationOptions } from "../migrate/run/run.js";
import { DEFAULT_DOWNTIME_LIMIT_MS, DEFAULT_MAX_ROUNDS, DEFAULT_TIMEOUT_MS } from "../migrate/source/source.js";
import { DEFAULT_HYBRID_ROUNDS, TECHNIQUES, type Technique } from "../migrate/source/techniques.js";
import { DEFAULT_PREPAGE_PAGES, MAX_PREPAGE_PAGES } from "../migrate/source/postcopy.js";
import { DEFAULT_XBZRLE_CACHE_BYTES } from "../migrate/wire/xbzrle.js";
import { MAX_ROUNDS } from "../migrate/wire/protocol.js";
import { formatBytes, parseRate, parseSize } from "../migrate/report/units.js";
import { PROGRESS_MODES, type ProgressMode } from "../migrate/report/progress.js";
import { PAGE_SIZE } from "../guest/page.js";
import { MAX_MEMORY_BYTES } from "../guest/memory.js";
import { WORK_BASE_PAGE } from "../guest/layout.js";
import { MAX_CPUS } from "../core/machine.js";
import type { OptionTable, OptionValues } from "./command.js";
import { UsageError, fileProblem, integerOption } from "./usage.js";
import { loadToken } from "../migrate/transport/auth.js";

const MIN_MEMORY_BYTES = 2 * 2 ** 20;
const MAX_MEMORY_TEXT = `${MAX_MEMORY_BYTES / 2 ** 40}T`;

const GUEST = "the guest";
const MIGRATION = "the migration";
const OUTPUT = "output";

/** The guest that runs and migrates: `migrate send`, `demo` and `compare` share these. */
export const GUEST_OPTIONS = {
  memory: { type: "string", value: "SIZE", default: "64M", group: GUEST, help: `guest memory in binary units, from 2M to ${MAX_MEMORY_TEXT}, e.g. 64M, 1G` },
  workload: { type: "string", value: "NAME", default: "uniform", group: GUEST, help: WORKLOAD_NAMES.join(" | ") },
  interrupts: { type: "string", value: "SETUP", default: "apic", group: GUEST, help: "pic (8259A + 8254) or apic (local APIC timer + I/O APIC)" },
  "dirty-rate": { type: "string", value: "RATE", defaultText: "the workload's", group: GUEST, help: "page writes the guest makes, in bytes/s, e.g. 64M" },
  "working-set": { type: "string", value: "SIZE", defaultText: "the workload's, cut to fit the memory", group: GUEST, help: "memory the workload writes into, above the first 1 MiB; it must fit in the rest of --memory" },
  duration: { type: "string", value: "S", default: "4", group: GUEST, help: "virtual seconds the guest runs in all" },
  "migrate-after": { type: "string", value: "S", default: "1", group: GUEST, help: "virtual seconds it runs before the migration starts" },
  seed: { type: "string", value: "N", default: "1", group: GUEST, help: "the workload's seed" },
  cpus: { type: "string", value: "N", default: "1", group: GUEST, help: `vCPUs, 1 to ${MAX_CPUS}: CPU 0 starts the others with INIT and start-up IPIs, each runs its own local APIC timer and sends IPIs to the others` },
} as const satisfies OptionTable;

/** How the guest moves. */
export const MIGRATION_OPTIONS = {
  technique: { type: "string", value: "T", default: "precopy", group: MIGRATION, help: TECHNIQUES.join(" | ") },
  "downtime-limit": { type: "string", value: "MS", default: String(DEFAULT_DOWNTIME_LIMIT_MS), group: MIGRATION, help: "pre-copy pauses the guest once the expected downtime fits this; a longer downtime is flagged in the report" },
  bandwidth: { type: "string", value: "RATE", defaultText: "unlimited", group: MIGRATION, help: "emulate a slower link: 100M (bytes/s, binary) or 1Gbit (bits/s, decimal)" },
  latency: { type: "string", value: "MS", default: "0", group: MIGRATION, help: "emulated one-way link latency, each direction" },
  "max-rounds": { type: "string", value: "N", default: String(DEFAULT_MAX_ROUNDS), group: MIGRATION, help: "pre-copy rounds before stop-and-copy regardless" },
  "no-throttle": { type: "boolean", group: MIGRATION, help: "never slow the guest down (auto-converge off)" },
  timeout: { type: "string", value: "MS", default: String(DEFAULT_TIMEOUT_MS), group: MIGRATION, help: "how long to wait for each answer of the destination" },
  "hybrid-rounds": { type: "string", value: "N", default: String(DEFAULT_HYBRID_ROUNDS), group: MIGRATION, help: "hybrid: pre-copy rounds before post-copy" },
  "max-data": { type: "string", value: "X", group: MIGRATION, help: "pre-copy stops once X times the memory size has been sent, e.g. 3" },
  "min-dirty": { type: "string", value: "N", group: MIGRATION, help: "pre-copy stops once a round leaves at most N dirty pages" },
  xbzrle: { type: "boolean", group: MIGRATION, help: "send re-sent pages as XBZRLE deltas" },
  "xbzrle-cache": { type: "string", value: "SIZE", default: `${DEFAULT_XBZRLE_CACHE_BYTES / 2 ** 20}M`, group: MIGRATION, help: "the source's cache of sent pages for XBZRLE, from 4K to 4G" },
  "no-zero-pages": { type: "boolean", group: MIGRATION, help: "send zero pages with their bytes" },
  prepage: { type: "string", value: "N", default: String(DEFAULT_PREPAGE_PAGES), group: MIGRATION, help: "post-copy: missing pages sent after each faulting one" },
} as const satisfies OptionTable;

/** What a single migration shows: `migrate send` and `demo`. */
export const REPORT_OPTIONS = {
  progress: { type: "string", value: "MODE", default: "auto", group: OUTPUT, help: `${PROGRESS_MODES.join(" | ")}: on stderr, a redrawn bar (a terminal's auto), a line every few seconds (auto elsewhere) or JSON lines` },
  svg: { type: "string", value: "FILE", group: OUTPUT, help: "write the per-round chart as SVG: pages sent and dirtied (left axis), expected downtime against the limit (right axis)" },
  json: { type: "boolean", group: OUTPUT, help: "print the report as JSON" },
} as const satisfies OptionTable;

/** The guest's and the migration's options as parsed; `compare` has no --technique (it runs each). */
type Values = Omit<OptionValues<typeof GUEST_OPTIONS & typeof MIGRATION_OPTIONS>, "technique"> & { technique?: string };

export interface GuestAndLink {
  spec: GuestRunSpec;
  link: Omit<LiveMigrationOptions, "url" | "token" | "signal">;
}

export function parseGuestAndLink(command: string, v: Values): GuestAndLink {
  const text = (k: Exclude<keyof Values, "technique">): string => v[k] as string;
  const memoryBytes = parseSize(text("memory"));
  if (memoryBytes === undefined || memoryBytes % PAGE_SIZE !== 0 || memoryBytes < MIN_MEMORY_BYTES || memoryBytes > MAX_MEMORY_BYTES) {
    throw new UsageError(`${command}: --memory expects a size from 2M to ${MAX_MEMORY_TEXT} in whole 4 KiB pages, like 64M or 1G, got ${JSON.stringify(text("memory"))}`);
  }
  const workload = text("workload");
  if (!WORKLOAD_NAMES.includes(workload)) throw new UsageError(`${command}: --workload must be one of ${WORKLOAD_NAMES.join(", ")}, got ${JSON.stringify(workload)}`);
  const interrupts = text("interrupts");
  if (interrupts !== "pic" && interrupts !== "apic") throw new UsageError(`${command}: --interrupts must be pic or apic, got ${JSON.stringify(interrupts)}`);
  const dirtyBytesPerSecond = rateOption(command, "dirty-rate", v["dirty-rate"], 0);
  let workingSetBytes: number | undefined;
  if (v["working-set"] !== undefined) {
    workingSetBytes = parseSize(text("working-set"));
    if (workingSetBytes === undefined || workingSetBytes === 0 || workingSetBytes % PAGE_SIZE !== 0) {
      throw new UsageError(`${command}: --working-set expects a size in whole 4 KiB pages, like 32M, got ${JSON.stringify(text("working-set"))}`);
    }
    const room = memoryBytes - WORK_BASE_PAGE * PAGE_SIZE;
    if (workingSetBytes > room) {
      throw new UsageError(
        `${command}: --working-set ${text("working-set")} does not fit in a guest of ${formatBytes(memoryBytes)} (--memory ${text("memory")}): ` +
          `the workload writes above its first 1 MiB, so at most ${formatBytes(room)}; raise --memory or lower --working-set`,
      );
    }
  }
  const bandwidth = rateOption(command, "bandwidth", v.bandwidth, 1);
  const duration = seconds(command, "duration", text("duration"));
  const migrateAfter = seconds(command, "migrate-after", text("migrate-after"));
  if (migrateAfter >= duration) throw new UsageError(`${command}: --migrate-after (${migrateAfter} s) must be less than --duration (${duration} s)`);
  const maxRounds = integerOption(command, "max-rounds", text("max-rounds"), 1)!;
  if (maxRounds > MAX_ROUNDS) throw new UsageError(`${command}: --max-rounds must be at most ${MAX_ROUNDS}, got ${maxRounds}`);
  const seed = integerOption(command, "seed", text("seed"))!;
  if (seed > 0xffff_ffff) throw new UsageError(`${command}: --seed must fit in 32 bits, got ${seed}`);
  const cpus = integerOption(command, "cpus", text("cpus"), 1)!;
  if (cpus > MAX_CPUS) throw new UsageError(`${command}: --cpus must be at most ${MAX_CPUS}, got ${cpus}`);
  const technique = (v.technique ?? MIGRATION_OPTIONS.technique.default) as Technique;
  if (!TECHNIQUES.includes(technique)) throw new UsageError(`${command}: --technique must be one of ${TECHNIQUES.join(", ")}, got ${JSON.stringify(technique)}`);
  const hybridRounds = integerOption(command, "hybrid-rounds", text("hybrid-rounds"), 1)!;
  if (hybridRounds > MAX_ROUNDS) throw new UsageError(`${command}: --hybrid-rounds must be at most ${MAX_ROUNDS}, got ${hybridRounds}`);
  const maxData = v["max-data"] === undefined ? undefined : Number(text("max-data"));
  if (maxData !== undefined && !(maxData >= 1 && maxData <= 1000)) throw new UsageError(`${command}: --max-data expects a multiple of the memory size between 1 and 1000, like 3, got ${JSON.stringify(text("max-data"))}`);
  const xbzrleCacheBytes = parseSize(text("xbzrle-cache"));
  if (xbzrleCacheBytes === undefined || xbzrleCacheBytes < PAGE_SIZE || xbzrleCacheBytes > 2 ** 32) throw new UsageError(`${command}: --xbzrle-cache expects a size from 4K to 4G, like 64M, got ${JSON.stringify(text("xbzrle-cache"))}`);
  const prepagePages = integerOption(command, "prepage", text("prepage"))!;
  if (prepagePages > MAX_PREPAGE_PAGES) throw new UsageError(`${command}: --prepage must be at most ${MAX_PREPAGE_PAGES}, got ${prepagePages}`);
  const latencyMs = integerOption(command, "latency", text("latency"))!;
  if (latencyMs > 10_000) throw new UsageError(`${command}: --latency must be at most 10000 ms, got ${latencyMs}`);
  return {
    spec: { workload, interrupts, memoryBytes, dirtyBytesPerSecond, workingSetBytes, seed, cpus, endNs: Math.round(duration * 1e9) },
    link: {
      migrateAtNs: Math.round(migrateAfter * 1e9),
      downtimeLimitMs: integerOption(command, "downtime-limit", text("downtime-limit"), 1)!,
      bandwidth,
      maxRounds,
      autoConverge: v["no-throttle"] !== true,
      timeoutMs: integerOption(command, "timeout", text("timeout"), 1)!,
      technique,
      hybridRounds,
      maxDataFactor: maxData,
      minDirtyPages: integerOption(command, "min-dirty", v["min-dirty"] as string | undefined),
      xbzrle: v.xbzrle === true,
      xbzrleCacheBytes,
      zeroPages: v["no-zero-pages"] !== true,
      prepagePages,
      latencyMs,
    },
  };
}

/** A rate option (bytes/s, or bits/s with "bit") of at least `min`, or a usage error naming it. */
export function rateOption(command: string, name: string, text: string | undefined, min: number): number | undefined {
  if (text === undefined) return undefined;
  const r = parseRate(text);
  if (r === undefined || r < min) throw new UsageError(`${command}: --${name} expects a rate like 100M (bytes/s) or 1Gbit (bits/s)${min > 0 ? " above 0" : ""}, got ${JSON.stringify(text)}`);
  return r;
}

/** The token from --token-file F or the environment, or a usage error naming the file. */
export function tokenOption(command: string, file: string | undefined): string | undefined {
  try {
    return loadToken(file);
  } catch (e) {
    throw new UsageError(`${command}: ${(e as NodeJS.ErrnoException).code ? `token file ${file}: ${fileProblem(e)}` : (e as Error).message}`);
  }
}

function seconds(command: string, name: string, t: string): number {
  const s = /^\d+(\.\d+)?$/.test(t) ? Number(t) : NaN;
  if (!(s > 0) || s > 86_400) throw new UsageError(`${command}: --${name} expects a number of seconds between 0 and 86400, like 2.5, got ${JSON.stringify(t)}`);
  return s;
}

/** The --progress mode, checked. */
export function progressMode(command: string, text: string): ProgressMode {
  if (!(PROGRESS_MODES as readonly string[]).includes(text)) throw new UsageError(`${command}: --progress must be one of ${PROGRESS_MODES.join(", ")}, got ${JSON.stringify(text)}`);
  return text as ProgressMode;
}
