// Options shared by `blmv migrate send` and `blmv demo`: the guest to run and how to move it.

import { WORKLOAD_NAMES, type GuestRunSpec } from "../migrate/run/guest-run.js";
import type { LiveMigrationOptions } from "../migrate/run/run.js";
import { DEFAULT_DOWNTIME_LIMIT_MS, DEFAULT_MAX_ROUNDS, DEFAULT_TIMEOUT_MS } from "../migrate/source/source.js";
import { DEFAULT_HYBRID_ROUNDS, TECHNIQUES, type Technique } from "../migrate/source/techniques.js";
import { DEFAULT_PREPAGE_PAGES, MAX_PREPAGE_PAGES } from "../migrate/source/postcopy.js";
import { DEFAULT_XBZRLE_CACHE_BYTES } from "../migrate/wire/xbzrle.js";
import { MAX_ROUNDS } from "../migrate/wire/protocol.js";
import { parseRate, parseSize } from "../migrate/report/units.js";
import { PAGE_SIZE } from "../guest/page.js";
import { UsageError, integerOption } from "./usage.js";

export const GUEST_OPTIONS = {
  memory: { type: "string", default: "64M" },
  workload: { type: "string", default: "uniform" },
  interrupts: { type: "string", default: "apic" },
  "dirty-rate": { type: "string" },
  "working-set": { type: "string" },
  "downtime-limit": { type: "string", default: String(DEFAULT_DOWNTIME_LIMIT_MS) },
  bandwidth: { type: "string" },
  "max-rounds": { type: "string", default: String(DEFAULT_MAX_ROUNDS) },
  "no-throttle": { type: "boolean", default: false },
  duration: { type: "string", default: "4" },
  "migrate-after": { type: "string", default: "1" },
  seed: { type: "string", default: "1" },
  timeout: { type: "string", default: String(DEFAULT_TIMEOUT_MS) },
  svg: { type: "string" },
  json: { type: "boolean", default: false },
  technique: { type: "string", default: "precopy" },
  "hybrid-rounds": { type: "string", default: String(DEFAULT_HYBRID_ROUNDS) },
  "max-data": { type: "string" },
  "min-dirty": { type: "string" },
  xbzrle: { type: "boolean", default: false },
  "xbzrle-cache": { type: "string", default: String(DEFAULT_XBZRLE_CACHE_BYTES / 2 ** 20) + "M" },
  "no-zero-pages": { type: "boolean", default: false },
  prepage: { type: "string", default: String(DEFAULT_PREPAGE_PAGES) },
  latency: { type: "string", default: "0" },
} as const;

export const GUEST_OPTIONS_HELP = `  --memory SIZE         guest memory, e.g. 64M, 1G (default 64M; binary units)
  --workload NAME       ${WORKLOAD_NAMES.join(" | ")} (default uniform)
  --interrupts SETUP    pic (8259A + 8254) or apic (local APIC timer + I/O APIC) (default apic)
  --dirty-rate RATE     page writes the guest makes, in bytes/s, e.g. 64M (default: the workload's)
  --working-set SIZE    memory the workload writes into, above the first 1 MiB (default: the
                        workload's, cut to fit the memory)
  --downtime-limit MS   stop-and-copy once the expected downtime fits (default ${DEFAULT_DOWNTIME_LIMIT_MS})
  --bandwidth RATE      emulate a slower link: 100M (bytes/s, binary) or 1Gbit (bits/s, decimal)
  --max-rounds N        pre-copy rounds before stop-and-copy regardless (default ${DEFAULT_MAX_ROUNDS})
  --no-throttle         never slow the guest down (auto-converge off)
  --duration S          virtual seconds the guest runs in all (default 4)
  --migrate-after S     virtual seconds it runs before the migration starts (default 1)
  --seed N              the workload's seed (default 1)
  --timeout MS          how long to wait for each answer of the destination (default ${DEFAULT_TIMEOUT_MS})
  --svg FILE            write the per-round chart (pages sent and dirtied) as SVG
  --json                print the report as JSON
  --technique T         ${TECHNIQUES.join(" | ")} (default precopy)
  --hybrid-rounds N     hybrid: pre-copy rounds before post-copy (default ${DEFAULT_HYBRID_ROUNDS})
  --max-data X          pre-copy stops once X times the memory size has been sent, e.g. 3
  --min-dirty N         pre-copy stops once a round leaves at most N dirty pages
  --xbzrle              send re-sent pages as XBZRLE deltas
  --xbzrle-cache SIZE   the source's cache of sent pages for XBZRLE (default ${DEFAULT_XBZRLE_CACHE_BYTES / 2 ** 20}M)
  --no-zero-pages       send zero pages with their bytes
  --prepage N           post-copy: missing pages sent after each faulting one (default ${DEFAULT_PREPAGE_PAGES})
  --latency MS          emulated one-way link latency, each direction (default 0)`;

type Values = { [K in keyof typeof GUEST_OPTIONS]?: string | boolean };

export interface GuestAndLink {
  spec: GuestRunSpec;
  link: Omit<LiveMigrationOptions, "url" | "token" | "signal">;
  svg?: string;
  json: boolean;
}

export function parseGuestAndLink(command: string, v: Values): GuestAndLink {
  const text = (k: keyof typeof GUEST_OPTIONS): string => v[k] as string;
  const memoryBytes = parseSize(text("memory"));
  if (memoryBytes === undefined || memoryBytes % PAGE_SIZE !== 0 || memoryBytes < 2 * 1024 * 1024) {
    throw new UsageError(`${command}: --memory expects a size of at least 2M in whole 4 KiB pages, like 64M or 1G, got ${JSON.stringify(text("memory"))}`);
  }
  const workload = text("workload");
  if (!WORKLOAD_NAMES.includes(workload)) throw new UsageError(`${command}: --workload must be one of ${WORKLOAD_NAMES.join(", ")}, got ${JSON.stringify(workload)}`);
  const interrupts = text("interrupts");
  if (interrupts !== "pic" && interrupts !== "apic") throw new UsageError(`${command}: --interrupts must be pic or apic, got ${JSON.stringify(interrupts)}`);
  const rate = (k: "dirty-rate" | "bandwidth", min: number): number | undefined => {
    if (v[k] === undefined) return undefined;
    const r = parseRate(text(k));
    if (r === undefined || r < min) throw new UsageError(`${command}: --${k} expects a rate like 100M (bytes/s) or 1Gbit (bits/s)${min > 0 ? " above 0" : ""}, got ${JSON.stringify(text(k))}`);
    return r;
  };
  const dirtyBytesPerSecond = rate("dirty-rate", 0);
  let workingSetBytes: number | undefined;
  if (v["working-set"] !== undefined) {
    workingSetBytes = parseSize(text("working-set"));
    if (workingSetBytes === undefined || workingSetBytes === 0 || workingSetBytes % PAGE_SIZE !== 0 || workingSetBytes > memoryBytes - 1024 * 1024) {
      throw new UsageError(`${command}: --working-set expects a size in whole 4 KiB pages that fits above 1 MiB of the guest memory, got ${JSON.stringify(text("working-set"))}`);
    }
  }
  const bandwidth = rate("bandwidth", 1);
  const duration = seconds(command, "duration", text("duration"));
  const migrateAfter = seconds(command, "migrate-after", text("migrate-after"));
  if (migrateAfter >= duration) throw new UsageError(`${command}: --migrate-after (${migrateAfter} s) must be less than --duration (${duration} s)`);
  const maxRounds = integerOption(command, "max-rounds", text("max-rounds"), 1)!;
  if (maxRounds > MAX_ROUNDS) throw new UsageError(`${command}: --max-rounds must be at most ${MAX_ROUNDS}, got ${maxRounds}`);
  const seed = integerOption(command, "seed", text("seed"))!;
  if (seed > 0xffff_ffff) throw new UsageError(`${command}: --seed must fit in 32 bits, got ${seed}`);
  const technique = text("technique") as Technique;
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
    spec: { workload, interrupts, memoryBytes, dirtyBytesPerSecond, workingSetBytes, seed, endNs: Math.round(duration * 1e9) },
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
    svg: v.svg as string | undefined,
    json: v.json === true,
  };
}

function seconds(command: string, name: string, t: string): number {
  const s = /^\d+(\.\d+)?$/.test(t) ? Number(t) : NaN;
  if (!(s > 0) || s > 86_400) throw new UsageError(`${command}: --${name} expects a number of seconds between 0 and 86400, like 2.5, got ${JSON.stringify(t)}`);
  return s;
}
