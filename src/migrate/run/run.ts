// A whole live migration as users run it: boot a guest, let it run in real time, migrate it
// while it keeps running, and — when the migration fails before the commit — let it finish
// where it is, to show it was not disturbed.

import type { Guest } from "../../guest/workload.js";
import { bootGuest, type GuestRunSpec } from "./guest-run.js";
import { LiveGuest } from "./live.js";
import type { MigrationReport } from "../report/metrics.js";
import { ProgressLine } from "../report/report.js";
import { migrate, type SourceOptions } from "../source/source.js";

export interface LiveMigrationOptions extends Omit<SourceOptions, "workload" | "onProgress" | "awaitFinish"> {
  /** Virtual time the guest runs on the source before the migration starts. */
  migrateAtNs: number;
}

export interface LiveMigrationResult {
  report: MigrationReport;
  /** The guest as the source holds it: paused for good once handed over (or lost in post-copy), else at the end of its run. */
  guest: Guest;
  /** When the guest stayed on the source: where its run ended there. */
  source?: { virtualNs: number; digest: string; ticks: number };
}

export async function bootAndMigrate(spec: GuestRunSpec, options: LiveMigrationOptions): Promise<LiveMigrationResult> {
  const live = new LiveGuest(bootGuest(spec), spec.endNs);
  if (options.control) options.control.guest = live;
  live.resume();
  let handedOver = false;
  const running = live.runLive(() => handedOver);
  while (live.guest.now() < options.migrateAtNs && !live.finished && !options.signal?.aborted) await new Promise((r) => setTimeout(r, 5));
  const progress = new ProgressLine();
  const report = await migrate(live, { ...options, workload: spec.workload, awaitFinish: true, onProgress: (p) => progress.update(p) });
  progress.clear();
  handedOver = report.status === "completed" || report.status === "unconfirmed" || report.status === "lost";
  await running;
  return handedOver ? { report, guest: live.guest } : { report, guest: live.guest, source: finalState(live.guest) };
}

function finalState(guest: Guest): NonNullable<LiveMigrationResult["source"]> {
  return { virtualNs: guest.now(), digest: guest.digest(), ticks: guest.ticks() };
}
