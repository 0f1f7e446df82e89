// A whole live migration as users run it: boot a guest, let it run in real time, migrate it
// while it keeps running, and — when the migration fails before the commit — let it finish
// where it is, to show it was not disturbed.

import type { Guest } from "../../guest/workload.js";
import { bootGuest, type GuestRunSpec } from "./guest-run.js";
import { LiveGuest } from "./live.js";
import type { MigrationReport } from "../report/metrics.js";
import type { ProgressReporter } from "../report/progress.js";
import { migrate, type SourceOptions } from "../source/source.js";

export interface LiveMigrationOptions extends Omit<SourceOptions, "workload" | "onProgress" | "awaitFinish"> {
  /** Reports progress as the migration goes (see report/progress.ts); none by default. */
  progress?: ProgressReporter;
  /**
   * Ends the guest's run on the source where it is, instead of at its end, once the migration
   * has failed or been cancelled (a command line that exits at Ctrl-C; `source.finished` is then false).
   */
  stopGuest?: AbortSignal;
  /** Virtual time the guest runs on the source before the migration starts. */
  migrateAtNs: number;
}

export interface LiveMigrationResult {
  report: MigrationReport;
  /** The guest as the source holds it: paused for good once handed over (or lost in post-copy), else where its run stopped. */
  guest: Guest;
  /**
   * When the guest stayed on the source: where its run there stopped — at its end, or where it
   * was when `stopGuest` aborted (`finished` false).
   */
  source?: { virtualNs: number; digest: string; ticks: number; finished: boolean };
}

export async function bootAndMigrate(spec: GuestRunSpec, options: LiveMigrationOptions): Promise<LiveMigrationResult> {
  return migrateLive(bootGuest(spec), spec.endNs, spec.workload, options);
}

/** Runs `guest` in real time until `options.migrateAtNs` (at once if it is past that) and migrates it. */
export async function migrateLive(guest: Guest, endNs: number, workload: string, options: LiveMigrationOptions): Promise<LiveMigrationResult> {
  const { progress, stopGuest, ...link } = options;
  const live = new LiveGuest(guest, endNs);
  if (options.control) options.control.guest = live;
  live.resume();
  let handedOver = false;
  const running = live.runLive(() => handedOver || stopGuest?.aborted === true);
  while (live.guest.now() < options.migrateAtNs && !live.finished && !options.signal?.aborted) await new Promise((r) => setTimeout(r, 5));
  const report = await migrate(live, { ...link, workload, awaitFinish: true, onProgress: progress && ((p) => progress.update(p)) });
  progress?.clear();
  handedOver = report.status === "completed" || report.status === "unconfirmed" || report.status === "lost";
  await running;
  return handedOver ? { report, guest: live.guest } : { report, guest: live.guest, source: finalState(live) };
}

function finalState(live: LiveGuest): NonNullable<LiveMigrationResult["source"]> {
  const { guest } = live;
  return { virtualNs: guest.now(), digest: guest.digest(), ticks: guest.ticks(), finished: live.finished };
}
