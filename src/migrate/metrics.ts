// What a migration measured, as one plain object (the `--json` output).

import { EXIT_REASONS, type ExitReason } from "../core/exits.js";
import { PAGE_SIZE } from "../guest/page.js";
import type { ErrorCode, SessionFate } from "./protocol.js";
import { predict, type ModelInput, type ModelPrediction } from "./model.js";

/**
 * completed    the destination runs the guest.
 * failed       stopped before the commit: the source runs the guest as before.
 * cancelled    as failed, on the user's request.
 * unconfirmed  the commit was sent, the link failed before the destination confirmed the
 *              resume, and the destination could not be asked afterwards: the source keeps the
 *              guest paused and never runs it on a guess (see resolve.ts).
 * A commit whose confirmation was lost ends completed or failed once the destination, asked,
 * says it took or dropped the guest; `resolution` then holds its answer.
 */
export type MigrationStatus = "completed" | "failed" | "cancelled" | "unconfirmed";

/** Why a migration stopped: a protocol code, or "connection" when the link went away. */
export type FailureCode = ErrorCode | "connection";

export interface RoundStat {
  round: number;
  /** The last entry is the stop-and-copy, sent with the guest paused. */
  stopAndCopy: boolean;
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

export interface MigrationReport {
  status: MigrationStatus;
  error?: { code: FailureCode; message: string; byPeer: boolean };
  /** At which protocol step it stopped (failures only). */
  failedAt?: string;
  workload: string;
  memoryBytes: number;
  pageSize: number;
  totalMs: number;
  /** Connect, authenticate, agree on the configuration, allocate the destination's memory. */
  setupMs: number;
  /** Guest paused on the source → resumed on the destination (as the source saw it). */
  downtimeMs: number;
  /** The estimate that decided the stop. */
  expectedDowntimeMs: number;
  downtimeLimitMs: number;
  /** Pre-copy rounds, round 0 (all memory) included; stop-and-copy not included. */
  rounds: number;
  roundStats: RoundStat[];
  bytes: { total: number; memory: number; state: number };
  pages: { normal: number; zero: number; total: number };
  /** Distinct bytes dirtied per second of pre-copy. */
  dirtyRateBytesPerSec: number;
  /** Memory bytes on the wire per second of pre-copy and stop-and-copy. */
  throughputBytesPerSec: number;
  bandwidthLimitBytesPerSec?: number;
  throttlePercent: number;
  throttleSteps: number;
  /** VM exits the hypervisor counted on the source up to the pause, by reason. */
  exits: { total: number; byReason: Record<ExitReason, number> };
  model?: { input: ModelInput; prediction: ModelPrediction };
  /** SHA-256 over the per-page CRC-32s both sides agreed on at stop-and-copy (hex). */
  memoryDigest?: string;
  /** After a commit whose confirmation was lost: the destination's answer when asked, or "unreachable". */
  resolution?: SessionFate | "unreachable";
  /** Where the guest ended up after its run on the destination, when it was awaited. */
  destination?: { virtualNs: number; digest: string; ticks: number; exits: number };
}

export function newReport(workload: string, memoryBytes: number, downtimeLimitMs: number, bandwidthLimitBytesPerSec?: number): MigrationReport {
  return {
    status: "failed",
    workload,
    memoryBytes,
    pageSize: PAGE_SIZE,
    totalMs: 0,
    setupMs: 0,
    downtimeMs: 0,
    expectedDowntimeMs: 0,
    downtimeLimitMs,
    rounds: 0,
    roundStats: [],
    bytes: { total: 0, memory: 0, state: 0 },
    pages: { normal: 0, zero: 0, total: 0 },
    dirtyRateBytesPerSec: 0,
    throughputBytesPerSec: 0,
    bandwidthLimitBytesPerSec,
    throttlePercent: 0,
    throttleSteps: 0,
    exits: { total: 0, byReason: Object.fromEntries(EXIT_REASONS.map((r) => [r, 0])) as Record<ExitReason, number> },
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
  const precopy = r.roundStats.filter((s) => !s.stopAndCopy);
  const precopyMs = sum(precopy, (s) => s.durationMs);
  r.dirtyRateBytesPerSec = precopyMs > 0 ? (sum(precopy, (s) => s.dirtiedPages) * PAGE_SIZE * 1000) / precopyMs : 0;
  r.throughputBytesPerSec = memoryMs > 0 ? (r.bytes.memory * 1000) / memoryMs : 0;
  r.throttlePercent = Math.max(0, ...r.roundStats.map((s) => s.throttlePercent));
  const bandwidth = r.bandwidthLimitBytesPerSec ?? r.throughputBytesPerSec;
  if (precopy.length > 0 && bandwidth > 0 && (r.status === "completed" || r.status === "unconfirmed")) {
    const input = { memoryBytes: precopy[0].pages * PAGE_SIZE, bandwidth, dirtyRate: r.dirtyRateBytesPerSec, downtimeLimitMs: r.downtimeLimitMs, maxRounds };
    r.model = { input, prediction: predict(input) };
  }
}
