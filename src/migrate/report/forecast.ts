// The a-priori pre-copy model: total time and downtime predicted before the run, from the
// configuration alone (memory and which of it is zero, link, workload, stop rules) and a fixed
// cost calibrated on other runs. docs/migration.md ("The a-priori model") states every term.

import type { DirtyPattern } from "../../guest/config.js";
import { StopConditions, expectedDowntimeMs, type StopLimits, type StopReason } from "../source/stop-conditions.js";
import { needsThrottle, raisedThrottle } from "../source/throttle.js";

export interface ForecastInput {
  /** Guest pages with data when the migration starts: round 0 sends them with their bytes. */
  dataPages: number;
  /** Zero pages when it starts: elided, each costs only `cost.zeroPageMs` of the sender's time. */
  zeroPages: number;
  pageSize: number;
  workload: {
    /** Page writes per second × page size (the workload's configured rate, not a measured one). */
    dirtyBytesPerSecond: number;
    /** The pages the writes fall in; they hold data (rounds after the first send only data pages). */
    workingSetBytes: number;
    /** uniform: each write hits a random page of the working set; scan: the next page in turn. */
    pattern: Exclude<DirtyPattern, "hot">;
  };
  link: {
    /** Bytes of encoded frames the link carries per second (after any per-packet overhead). */
    bytesPerSecond: number;
    /** Frame bytes per page with data when pages go in long runs (round 0) and one by one (later rounds). */
    denseBytesPerPage: number;
    sparseBytesPerPage: number;
  };
  cost: {
    /** Connection, authentication, configuration, state, commit and resume of a migration that moves no memory. */
    fixedMs: number;
    /** The part of `fixedMs` spent with the guest paused (state, commit, resumed). */
    fixedDowntimeMs: number;
    /** The sender's time per zero page (CRC and scan; nothing on the wire). */
    zeroPageMs: number;
    /**
     * The two processes' time per page with data in round 0 when the link is not the limit (a page
     * never goes faster): the destination writes each page into fresh memory then, and both warm up.
     */
    dataPageMs: number;
    /** As dataPageMs for a page sent again (later rounds, stop-and-copy): its memory is in place at the destination. */
    resentPageMs: number;
  };
  /** The source's stop rules, and whether it throttles a guest that outruns the link (auto-converge). */
  stop: StopLimits & { autoConverge: boolean };
}

export interface ForecastRound {
  /** Pages with data the round sends. */
  pages: number;
  durationMs: number;
  /** Distinct pages the guest dirties meanwhile: the next round's pages. */
  dirtiedPages: number;
  /** Fraction of time the guest is held back during the round. */
  throttle: number;
}

export interface Forecast {
  /** The pre-copy rounds, round 0 first. */
  rounds: ForecastRound[];
  stopReason: StopReason;
  stopCopyPages: number;
  /** Auto-converge steps taken. */
  throttleSteps: number;
  /** Whether pre-copy alone (no throttle) brings a round under the downtime limit before the round cap. */
  convergesUnthrottled: boolean;
  downtimeMs: number;
  totalMs: number;
  /** Frame bytes of all memory rounds (the stop-and-copy included). */
  wireBytes: number;
}

/** Expected distinct pages hit by `writes` writes of `pattern` over `workingSetPages` pages. */
export function distinctPagesDirtied(writes: number, workingSetPages: number, pattern: Exclude<DirtyPattern, "hot">): number {
  if (writes <= 0 || workingSetPages <= 0) return 0;
  // Uniform writes: each page escapes one write with chance 1 − 1/ws, so n writes leave
  // ws·(1 − (1 − 1/ws)ⁿ) ≈ ws·(1 − e^(−n/ws)) pages dirty: linear at first, saturating at ws.
  if (pattern === "uniform") return workingSetPages * -Math.expm1(-writes / workingSetPages);
  return Math.min(workingSetPages, writes);
}

/** The TCP payload a link shaped at `bitsPerSecond` (Ethernet frames of `mtu`) carries per second, in bytes. */
export function tcpPayloadBytesPerSecond(bitsPerSecond: number, mtu = 1500): number {
  // Each packet carries mtu − 52 bytes (IPv4 20, TCP 20, timestamps 12) in mtu + 14 on the wire (Ethernet header).
  return (bitsPerSecond / 8) * ((mtu - 52) / (mtu + 14));
}

/**
 * Plays the source's rules (source/source.ts, source/stop-conditions.ts) forward on the
 * expected figures: round 0 sends every page with data and elides the zero ones; each later
 * round sends what the guest dirtied during the one before; the source estimates the downtime
 * from the bandwidth it has seen so far and the pause's fixed part (here F_d, fixedDowntimeMs),
 * stops once that fits the limit or at the round cap,
 * and raises the throttle after a round that left more than half its own volume dirty.
 */
export function forecast(input: ForecastInput): Forecast {
  const { link, cost, stop, workload, pageSize } = input;
  if (!(link.bytesPerSecond > 0)) throw new RangeError(`link rate must be positive, got ${link.bytesPerSecond}`);
  if (!(input.dataPages >= 0) || !(input.zeroPages >= 0)) throw new RangeError("page counts must be non-negative");
  if (!(workload.dirtyBytesPerSecond >= 0) || !(workload.workingSetBytes > 0)) throw new RangeError("the dirty rate must be non-negative and the working set positive");
  const rules = new StopConditions(stop);
  const writesPerMs = workload.dirtyBytesPerSecond / pageSize / 1000;
  const workingSetPages = workload.workingSetBytes / pageSize;
  const rounds: ForecastRound[] = [];
  let pages = input.dataPages;
  let throttle = 0;
  let throttleSteps = 0;
  let wireBytes = 0;
  let elapsedMs = 0;
  let stopReason: StopReason | undefined;
  while (stopReason === undefined) {
    const first = rounds.length === 0;
    const bytesPerPage = first ? link.denseBytesPerPage : link.sparseBytesPerPage;
    const linkMs = (pages * bytesPerPage * 1000) / link.bytesPerSecond;
    const cpuMs = pages * (first ? cost.dataPageMs : cost.resentPageMs);
    const durationMs = Math.max(linkMs, cpuMs) + (first ? input.zeroPages * cost.zeroPageMs : 0);
    const dirtiedPages = distinctPagesDirtied(writesPerMs * (1 - throttle) * durationMs, workingSetPages, workload.pattern);
    rounds.push({ pages, durationMs, dirtiedPages, throttle });
    wireBytes += pages * bytesPerPage;
    elapsedMs += durationMs;
    // The source's estimate: what is left, over the memory bytes per second of the rounds so far, and the pause's fixed part.
    const expected = wireBytes > 0 ? expectedDowntimeMs(dirtiedPages * pageSize, (wireBytes * 1000) / elapsedMs, cost.fixedDowntimeMs) : cost.fixedDowntimeMs;
    stopReason = rules.check({ rounds: rounds.length, expectedDowntimeMs: expected, sentBytes: wireBytes, dirtyPages: dirtiedPages });
    if (stopReason === undefined && stop.autoConverge && needsThrottle(dirtiedPages, pages)) {
      const raised = raisedThrottle(throttle);
      if (raised !== throttle) throttleSteps++;
      throttle = raised;
    }
    pages = dirtiedPages;
  }
  const stopCopyPages = pages;
  const stopCopyMs = stopCopyPages * Math.max((link.sparseBytesPerPage * 1000) / link.bytesPerSecond, cost.resentPageMs);
  wireBytes += stopCopyPages * link.sparseBytesPerPage;
  return {
    rounds,
    stopReason,
    stopCopyPages,
    throttleSteps,
    // The same rounds without a throttle: do they reach the downtime limit before the round cap?
    convergesUnthrottled: stop.autoConverge && throttleSteps > 0 ? forecast({ ...input, stop: { ...stop, autoConverge: false } }).stopReason === "downtime" : stopReason === "downtime",
    downtimeMs: cost.fixedDowntimeMs + stopCopyMs,
    totalMs: cost.fixedMs + elapsedMs + stopCopyMs,
    wireBytes,
  };
}
