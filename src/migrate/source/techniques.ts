// The migration techniques and their options, and what the source sets up for them once the
// destination has said which optional features it has.

import { MigrationFailure } from "../failure.js";
import { StopConditions } from "./stop-conditions.js";
import { XbzrleEncoder } from "../wire/xbzrle.js";

/**
 * precopy        iterate over dirty memory while the guest runs, then stop and copy the rest.
 * postcopy       move the CPU and devices first, resume there, fetch memory on demand and push it.
 * hybrid         a fixed number of pre-copy rounds, then post-copy for what they left.
 * stop-and-copy  pause, send everything, resume: the non-live baseline.
 */
export type Technique = "precopy" | "postcopy" | "hybrid" | "stop-and-copy";
export const TECHNIQUES: readonly Technique[] = ["precopy", "postcopy", "hybrid", "stop-and-copy"];
export const DEFAULT_HYBRID_ROUNDS = 2;

export interface TechniqueOptions {
  /** precopy unless said otherwise. */
  technique?: Technique;
  /** Hybrid: pre-copy rounds before the switch to post-copy. */
  hybridRounds?: number;
  /** Pre-copy stops once this many times the memory size has been sent. */
  maxDataFactor?: number;
  /** Pre-copy stops once a round leaves at most this many dirty pages. */
  minDirtyPages?: number;
  /** Zero-page elision (when the destination agrees); on unless false. */
  zeroPages?: boolean;
  /** XBZRLE delta compression of re-sent pages (the destination must agree), with this cache. */
  xbzrle?: boolean;
  xbzrleCacheBytes?: number;
  /** Post-copy: missing pages sent after the faulting one with each demand (prepaging). */
  prepagePages?: number;
  /** Emulated one-way link latency, each direction. */
  latencyMs?: number;
}

/** Pre-copy rounds at most: hybrid's fixed count, else the cap given. */
export function roundCap(options: TechniqueOptions, maxRounds: number): number {
  return options.technique === "hybrid" ? (options.hybridRounds ?? DEFAULT_HYBRID_ROUNDS) : maxRounds;
}

/** The rules that end pre-copy; hybrid ends it on its round count, not on the expected downtime. */
export function stopConditions(options: TechniqueOptions, downtimeLimitMs: number, maxRounds: number, memoryBytes: number): StopConditions {
  return new StopConditions({
    downtimeLimitMs: options.technique === "hybrid" ? 0 : downtimeLimitMs,
    maxRounds,
    maxDataBytes: options.maxDataFactor === undefined ? Infinity : options.maxDataFactor * memoryBytes,
    minDirtyPages: options.minDirtyPages ?? 0,
  });
}

/** The features this migration uses among those the destination agreed to; refuses one it needs and lacks. */
export function negotiate(options: TechniqueOptions, capabilities: readonly string[]): { zeroPages: boolean; xbzrle?: XbzrleEncoder } {
  const technique = options.technique ?? "precopy";
  if ((technique === "postcopy" || technique === "hybrid") && !capabilities.includes("postcopy")) {
    throw new MigrationFailure("config", `the destination does not support post-copy, which ${technique} needs`);
  }
  if (options.xbzrle && !capabilities.includes("xbzrle")) throw new MigrationFailure("config", "the destination does not support XBZRLE");
  return {
    zeroPages: capabilities.includes("zero-pages") && options.zeroPages !== false,
    xbzrle: options.xbzrle ? new XbzrleEncoder(options.xbzrleCacheBytes) : undefined,
  };
}
