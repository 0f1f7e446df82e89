// What a migration measured, as one plain object (the `--json` output).

import type { AckStats } from "../transport/ack-window.js";
import { EXIT_REASONS, type ExitReason } from "../../core/exits.js";
import { PAGE_SIZE } from "../../guest/page.js";
import type { SessionFate } from "../wire/protocol.js";
import type { FailureCode } from "../failure.js";
import { predictTechnique, type ModelInput, type ModelPrediction } from "./model.js";
import type { Technique } from "../source/techniques.js";
import type { StopReason } from "../source/stop-conditions.js";
import type { XbzrleStats } from "../wire/xbzrle.js";

/**
 * completed    the destination runs the guest.
 * failed       stopped before the commit: the source runs the guest as before.
 * cancelled    as failed, on the user's request.
 * unconfirmed  the commit was sent, the link failed before the destination confirmed the
 *              resume, and the destination could not be asked afterwards: the source keeps the
 *              guest paused and never runs it on a guess (see source/resolve.ts).
 * lost         post-copy: the link failed after the resume, before every page had arrived:
 *              the destination stopped the guest for good, the source keeps its paused copy
 *              and never resumes it.
 * A commit whose confirmation was lost ends completed or failed once the destination, asked,
 * says it took or dropped the guest; `resolution` then holds its answer.
 */
export type MigrationStatus = "completed" | "failed" | "cancelled" | "unconfirmed" | "lost";

/** Why a migration stopped: a protocol code, or "connection" when the link went away. */

export interface RoundStat {
  round: number;
  /** The last entry is the stop-and-copy, sent with the guest paused. */
  stopAndCopy: boolean;
  /** The post-copy push (it replaces the stop-and-copy). */
  postcopy?: boolean;
  /** Pages sent with their bytes. */
  pages: number;
  /** Zero pages sent as a run header only. */
  zeroPages: number;
  /** Bytes put on the wire for this round's frames. */
  bytes: number;
  durationMs: number;
  /** Distinct pages the guest dirtied during the round: the next round's work. */
  dirtiedPages: number;
  /** Remaining dirty bytes ÷ measured bandwidth, when the round ended. */
  expectedDowntimeMs: number;
  throttlePercent: number;
}

/** What the guest went through while post-copy memory was on its way. */
export interface PostcopyStats {
  /** Guest accesses to pages that had not arrived (the destination's count). */
  faults: number;
  /** Pages sent because a fault asked for them, and the neighbours sent with them. */
  demandPages: number;
  prepagedPages: number;
  /** Pages sent by the background push. */
  pushedPages: number;
  /** Wall time the guest spent waiting for faulted pages. */
  blockedMs: number;
  faultLatencyMedianMs: number;
  faultLatencyP99Ms: number;
}

export interface MigrationReport {
  status: MigrationStatus;
  technique: Technique;
  /** Which pre-copy stop condition ended the iteration. */
  stopReason?: StopReason;
  postcopy?: PostcopyStats;
  xbzrle?: XbzrleStats;
  error?: { code: FailureCode; message: string; byPeer: boolean };
  /** At which protocol step it stopped (failures only). */
  failedAt?: string;
  workload: string;
  memoryBytes: number;
  /** The guest's vCPUs. */
  cpus: number;
  pageSize: number;
  totalMs: number;
  /** Connect, authenticate, agree on the configuration, allocate the destination's memory. */
  setupMs: number;
  /** Guest paused on the source → resumed on the destination (as the source saw it). */
  downtimeMs: number;
  /** The estimate that decided the stop. */
  expectedDowntimeMs: number;
  downtimeLimitMs: number;
  /** The guest was paused longer than the downtime limit allowed (completed migrations only). */
  downtimeOverLimit: boolean;
  /** Pre-copy rounds, round 0 (all memory) included; stop-and-copy not included. */
  rounds: number;
  roundStats: RoundStat[];
  bytes: { total: number; memory: number; state: number };
  pages: { normal: number; zero: number; total: number };
  /** Distinct bytes dirtied per second of pre-copy. */
  dirtyRateBytesPerSec: number;
  /** Memory bytes per second of the memory rounds: those the destination acknowledged, when it does, else those on the wire. */
  throughputBytesPerSec: number;
  bandwidthLimitBytesPerSec?: number;
  throttlePercent: number;
  throttleSteps: number;
  /** VM exits the hypervisor counted on the source up to the pause, by reason and by CPU. */
  exits: { total: number; byReason: Record<ExitReason, number>; byCpu: number[] };
  model?: { input: ModelInput; prediction: ModelPrediction };
  /** Flow control, when the destination acknowledged batches. */
  acks?: AckStats;
  /** SHA-256 over the per-page CRC-32s both sides agreed on at stop-and-copy (hex). */
  memoryDigest?: string;
  /** After a commit whose confirmation was lost: the destination's answer when asked, or "unreachable". */
  resolution?: SessionFate | "unreachable";
  /** Unconfirmed: the file the paused guest was saved to (run/snapshot.ts), or why it could not be. */
  snapshot?: { path: string } | { error: string };
  /** Where the guest ended up after its run on the destination, when it was awaited. */
  destination?: { virtualNs: number; digest: string; ticks: number; exits: number };
}

export function newReport(workload: string, memoryBytes: number, downtimeLimitMs: number, bandwidthLimitBytesPerSec?: number): MigrationReport {
  return {
    status: "failed",
    technique: "precopy",
    workload,
    memoryBytes,
    cpus: 1,
    pageSize: PAGE_SIZE,
    totalMs: 0,
    setupMs: 0,
    downtimeMs: 0,
    expectedDowntimeMs: 0,
    downtimeLimitMs,
    downtimeOverLimit: false,
    rounds: 0,
    roundStats: [],
    bytes: { total: 0, memory: 0, state: 0 },
    pages: { normal: 0, zero: 0, total: 0 },
    dirtyRateBytesPerSec: 0,
    throughputBytesPerSec: 0,
    bandwidthLimitBytesPerSec,
    throttlePercent: 0,
    throttleSteps: 0,
    exits: { total: 0, byReason: Object.fromEntries(EXIT_REASONS.map((r) => [r, 0])) as Record<ExitReason, number>, byCpu: [] },
  };
}

/**
 * Fills in the totals and rates from the per-round statistics, and the model's prediction for
 * the measured M (round 0's pages), B (the link limit, else the measured throughput) and d.
 */
export function summarize(r: MigrationReport, memoryMs: number, maxRounds: number): void {
  const sum = (stats: readonly RoundStat[], f: (s: RoundStat) => number): number => stats.reduce((a, s) => a + f(s), 0);
  r.pages.normal = sum(r.roundStats, (s) => s.pages);
  r.pages.zero = sum(r.roundStats, (s) => s.zeroPages);
  r.pages.total = r.pages.normal + r.pages.zero;
  const precopy = r.roundStats.filter((s) => !s.stopAndCopy && !s.postcopy);
  const precopyMs = sum(precopy, (s) => s.durationMs);
  r.dirtyRateBytesPerSec = precopyMs > 0 ? (sum(precopy, (s) => s.dirtiedPages) * PAGE_SIZE * 1000) / precopyMs : 0;
  r.throughputBytesPerSec = memoryMs > 0 ? ((r.acks?.ackedBytes ?? r.bytes.memory) * 1000) / memoryMs : 0;
  r.throttlePercent = Math.max(0, ...r.roundStats.map((s) => s.throttlePercent));
  r.downtimeOverLimit = r.status === "completed" && r.downtimeMs > r.downtimeLimitMs;
  const bandwidth = r.bandwidthLimitBytesPerSec ?? r.throughputBytesPerSec;
  if (r.roundStats.length > 0 && bandwidth > 0 && (r.status === "completed" || r.status === "unconfirmed")) {
    // M: the pages the first transfer carried with their bytes (zero pages cost next to nothing).
    const input = { memoryBytes: r.roundStats[0].pages * PAGE_SIZE, bandwidth, dirtyRate: r.dirtyRateBytesPerSec, downtimeLimitMs: r.downtimeLimitMs, maxRounds };
    r.model = { input, prediction: predictTechnique(r.technique, input) };
  }
}
