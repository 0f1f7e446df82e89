// What the source's page, `blmv migrate status` and /metrics show of a migration: the figures
// of QEMU's `info migrate` taken from the engine's live report and progress, the monotone
// progress bar, and at the end the outcome with the model's prediction and the digest verdict.
// See docs/monitor.md (the progress definition is there).

import { performance } from "node:perf_hooks";
import { PAGE_SIZE } from "../guest/page.js";
import { DEFAULT_DOWNTIME_LIMIT_MS } from "../migrate/source/source.js";
import { MigrationControl } from "../migrate/source/control.js";
import type { MigrationReport, MigrationStatus, RoundStat } from "../migrate/report/metrics.js";
import type { Progress } from "../migrate/source/progress.js";
import { machineView, type MachineView } from "./machine-view.js";

/** Sent pages are counted over this window for the pages/s figure. */
const RATE_WINDOW_MS = 1000;
/** How often at most the engine's progress reports are sampled (rate and progress bar). */
const SAMPLE_INTERVAL_MS = 100;

export type SourceState = "waiting" | "setup" | "active" | "postcopy-active" | MigrationStatus;

export interface RoundPoint {
  round: number;
  kind: "pre-copy" | "stop-and-copy" | "post-copy";
  pages: number;
  dirtiedPages: number;
  bytes: number;
  durationMs: number;
  expectedDowntimeMs: number;
  throttlePercent: number;
}

export interface Outcome {
  status: MigrationStatus;
  error?: string;
  downtimeMs: number;
  totalMs: number;
  /** The analytic model against the measurement (completed migrations). */
  model?: { predicted: { rounds: number; downtimeMs: number; totalMs: number }; measured: { rounds: number; downtimeMs: number; totalMs: number } };
  /** The guest's final digest, where it ran to its end, and a reference run's when one was made. */
  digest?: { final?: string; reference?: string; verdict: "identical" | "differs" | "unchecked" };
  /** Where the guest runs after the migration. */
  guestOn: "destination" | "source" | "nowhere";
}

export interface SourceStatus {
  role: "source";
  workload: string;
  memoryBytes: number;
  technique: string;
  status: SourceState;
  phase?: Progress["phase"];
  /** Since the migration started. */
  elapsedMs: number;
  setupMs: number;
  /** 0–100, never lower than before (docs/monitor.md). */
  progressPercent: number;
  sentBytes: number;
  transferredBytes: number;
  remainingBytes: number;
  pagesSent: number;
  bytesPerSec: number;
  pagesPerSec: number;
  dirtyBytesPerSec: number;
  dirtyPagesPerSec: number;
  bandwidthLimitBytesPerSec?: number;
  expectedDowntimeMs?: number;
  downtimeLimitMs: number;
  downtimeMs?: number;
  rounds: number;
  roundStats: RoundPoint[];
  throttlePercent: number;
  postcopyFaults: number;
  guest: { virtualNs: number; running: boolean };
  outcome?: Outcome;
}

/** The migration as it was asked for, before the engine reports anything. */
export interface WatchedMigration {
  workload: string;
  memoryBytes: number;
  technique?: string;
  downtimeLimitMs?: number;
  bandwidth?: number;
}

/** The source side: reads the control handle the engine reports to; the CLI adds the end result. */
export class SourceMonitor {
  readonly role = "source";
  /** Pass it to the engine (LiveMigrationOptions.control). */
  readonly control = new MigrationControl();
  private startedAt?: number;
  private progressRatio = 0;
  private lastReport?: Readonly<MigrationReport>;
  private outcome?: Outcome;
  private readonly samples: { t: number; pages: number }[] = [];
  private readonly listeners = new Set<() => void>();
  private lastSampleAt = -Infinity;
  /** Migrations that ended, by status (the listener counts its sessions the same way). */
  readonly outcomes = new Map<MigrationStatus, number>();

  constructor(private readonly guest: WatchedMigration) {
    const control = this.control;
    control.subscribe(() => {
      if (this.startedAt === undefined && control.running) this.startedAt = performance.now();
      if (control.report) this.lastReport = control.report;
      if (control.ended && this.outcome === undefined && this.lastReport) this.outcome = outcomeOf(this.lastReport);
      if (performance.now() - this.lastSampleAt >= SAMPLE_INTERVAL_MS) this.observe();
      this.changed();
    });
  }

  /** Calls `listener` whenever the figures may have changed. */
  subscribe(listener: () => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  /** The CLI's last word: the guest's final digest and, when it made one, the reference run's. */
  finish(report: MigrationReport, digests: { final?: string; reference?: string }): void {
    this.lastReport = report;
    const { final, reference } = digests;
    this.outcome = {
      ...outcomeOf(report),
      digest: final === undefined && reference === undefined ? undefined : { final, reference, verdict: final === undefined || reference === undefined ? "unchecked" : final === reference ? "identical" : "differs" },
    };
    this.outcomes.set(report.status, (this.outcomes.get(report.status) ?? 0) + 1);
    if (report.status === "completed") this.progressRatio = 1;
    this.changed();
  }

  private changed(): void {
    for (const l of this.listeners) l();
  }

  status(): SourceStatus {
    const r = this.lastReport;
    const p = this.control.progress;
    const now = performance.now();
    const stats = r?.roundStats ?? [];
    const pagesSent = this.observe();
    const ended = this.outcome?.status;
    const live = this.control.guest;
    const precopy = stats.filter((s) => !s.stopAndCopy && !s.postcopy && s.durationMs > 0);
    const precopyMs = precopy.reduce((a, s) => a + s.durationMs, 0);
    const dirtyPagesPerSec = precopyMs > 0 ? (precopy.reduce((a, s) => a + s.dirtiedPages, 0) * 1000) / precopyMs : 0;
    const state: SourceState = ended ?? (this.startedAt === undefined ? "waiting" : p === undefined || p.phase === "setup" ? "setup" : p.phase === "post-copy" ? "postcopy-active" : "active");
    return {
      role: "source",
      workload: this.guest.workload,
      memoryBytes: this.guest.memoryBytes,
      technique: r?.technique ?? this.guest.technique ?? "precopy",
      status: state,
      phase: p?.phase,
      elapsedMs: this.startedAt === undefined ? 0 : r && ended ? r.totalMs : now - this.startedAt,
      setupMs: r?.setupMs ?? 0,
      progressPercent: Math.round(this.progressRatio * 1000) / 10,
      sentBytes: r?.bytes.memory ?? 0,
      transferredBytes: r ? (r.bytes.total > 0 ? r.bytes.total : r.bytes.memory + r.bytes.state) : 0,
      remainingBytes: ended ? 0 : this.remainingPages(p) * PAGE_SIZE,
      pagesSent,
      bytesPerSec: ended ? (r?.throughputBytesPerSec ?? 0) : finite(p?.bytesPerSec),
      pagesPerSec: this.pagesPerSec(),
      dirtyBytesPerSec: dirtyPagesPerSec * PAGE_SIZE,
      dirtyPagesPerSec,
      bandwidthLimitBytesPerSec: r?.bandwidthLimitBytesPerSec ?? this.guest.bandwidth,
      expectedDowntimeMs: p && Number.isFinite(p.expectedDowntimeMs) ? p.expectedDowntimeMs : undefined,
      downtimeLimitMs: r?.downtimeLimitMs ?? this.guest.downtimeLimitMs ?? DEFAULT_DOWNTIME_LIMIT_MS,
      downtimeMs: r && r.downtimeMs > 0 ? r.downtimeMs : undefined,
      rounds: r?.rounds ?? 0,
      roundStats: stats.map(roundPoint),
      throttlePercent: p?.throttlePercent ?? 0,
      postcopyFaults: r?.postcopy?.faults ?? p?.faults ?? 0,
      guest: { virtualNs: live?.guest.now() ?? 0, running: live?.running ?? false },
      outcome: this.outcome,
    };
  }

  /** The machine as the hypervisor sees it, or undefined before the guest has booted. */
  machine(): MachineView | undefined {
    const live = this.control.guest;
    return live && machineView(live.guest.machine, live.guest.now(), live.running);
  }

  /** Samples the pages sent (for pages/s) and moves the progress bar; returns the pages sent. */
  private observe(): number {
    const t = performance.now();
    this.lastSampleAt = t;
    const stats = this.lastReport?.roundStats ?? [];
    const pages = stats.reduce((a, s) => a + s.pages + s.zeroPages, 0);
    this.samples.push({ t, pages });
    while (this.samples.length > 2 && t - this.samples[1].t >= RATE_WINDOW_MS) this.samples.shift();
    const p = this.control.progress;
    if (p && !this.outcome) {
      // Pages sent ÷ (pages sent + pages remaining), never below what was shown before.
      const total = pages + this.remainingPages(p);
      if (total > 0) this.progressRatio = Math.max(this.progressRatio, Math.min(0.999, pages / total));
    }
    return pages;
  }

  /**
   * Pages still to send: the rest of the round under way and, during pre-copy, the pages the
   * guest has dirtied since the last harvest among those this round has already sent (the
   * next round's work so far; at most all of them).
   */
  private remainingPages(p: Progress | undefined): number {
    if (!p) return 0;
    const current = this.lastReport?.roundStats.at(-1);
    const sentThisRound = current ? current.pages + current.zeroPages : 0;
    const dirtied = p.phase === "pre-copy" ? (this.control.guest?.guest.memory.dirtyPageCount() ?? 0) : 0;
    return Math.ceil(p.remainingBytes / PAGE_SIZE) + Math.min(dirtied, sentThisRound);
  }

  private pagesPerSec(): number {
    const first = this.samples[0];
    const last = this.samples[this.samples.length - 1];
    return last.t > first.t ? ((last.pages - first.pages) * 1000) / (last.t - first.t) : 0;
  }
}

function outcomeOf(r: Readonly<MigrationReport>): Outcome {
  const handedOver = r.status === "completed" || r.status === "unconfirmed" || r.status === "lost";
  return {
    status: r.status,
    error: r.error ? `${r.error.code}${r.error.byPeer ? " (reported by the destination)" : ""} at ${r.failedAt}: ${r.error.message}` : undefined,
    downtimeMs: r.downtimeMs,
    totalMs: r.totalMs,
    model: r.model
      ? {
          predicted: { rounds: r.model.prediction.rounds, downtimeMs: r.model.prediction.downtimeMs, totalMs: r.model.prediction.totalMs },
          measured: { rounds: r.rounds, downtimeMs: r.downtimeMs, totalMs: r.totalMs },
        }
      : undefined,
    guestOn: r.status === "completed" ? "destination" : handedOver ? "nowhere" : "source",
  };
}

function roundPoint(s: RoundStat): RoundPoint {
  return {
    round: s.round,
    kind: s.stopAndCopy ? "stop-and-copy" : s.postcopy ? "post-copy" : "pre-copy",
    pages: s.pages + s.zeroPages,
    dirtiedPages: s.dirtiedPages,
    bytes: s.bytes,
    durationMs: s.durationMs,
    expectedDowntimeMs: s.expectedDowntimeMs,
    throttlePercent: s.throttlePercent,
  };
}

function finite(n: number | undefined): number {
  return n !== undefined && Number.isFinite(n) ? n : 0;
}
