// A migration's progress as it goes, on stderr: a redrawn bar on a terminal, a line every few
// seconds elsewhere, or one JSON object per line for programs. docs/usage.md.

import type { Progress } from "../source/progress.js";
import { formatBytes, formatMs, formatRate } from "./units.js";

export const PROGRESS_MODES = ["auto", "bar", "lines", "json", "none"] as const;
export type ProgressMode = (typeof PROGRESS_MODES)[number];

/** How often the bar is redrawn, and how often a line (text or JSON) is written. */
const BAR_INTERVAL_MS = 100;
export const LINE_INTERVAL_MS = 2000;
const JSON_INTERVAL_MS = 1000;
const BAR_WIDTH = 20;

export interface ProgressReporter {
  update(p: Progress): void;
  /** Removes a drawn bar before other output. */
  clear(): void;
}

/** A reporter for `mode`; auto is a bar on a terminal and lines elsewhere. */
export function progressReporter(mode: ProgressMode, out: NodeJS.WriteStream = process.stderr): ProgressReporter {
  const resolved = mode === "auto" ? (out.isTTY ? "bar" : "lines") : mode;
  switch (resolved) {
    case "bar":
      return new ProgressBar(out);
    case "lines":
      return new Throttled(LINE_INTERVAL_MS, (p, elapsedMs) => out.write(`${(elapsedMs / 1000).toFixed(1).padStart(6)} s  ${describe(p)}\n`));
    case "json":
      return new Throttled(JSON_INTERVAL_MS, (p, elapsedMs) => out.write(`${JSON.stringify({ event: "progress", elapsedMs: Math.round(elapsedMs), ...p, expectedDowntimeMs: finite(p.expectedDowntimeMs), bytesPerSec: finite(p.bytesPerSec) })}\n`));
    case "none":
      return { update: () => undefined, clear: () => undefined };
  }
}

function finite(x: number): number | null {
  return Number.isFinite(x) ? Math.round(x * 1000) / 1000 : null;
}

/** One line of text for a progress report. */
function describe(p: Progress): string {
  const step = p.phase === "pre-copy" ? `round ${p.round}` : p.phase;
  const downtime = Number.isFinite(p.expectedDowntimeMs) ? formatMs(p.expectedDowntimeMs) : "–";
  return `${step}  sent ${formatBytes(p.sentBytes)}  remaining ${formatBytes(p.remainingBytes)}  ${formatRate(p.bytesPerSec)}  exp. downtime ${downtime}${p.throttlePercent ? `  throttle ${p.throttlePercent}%` : ""}`;
}

/** Writes at most one report per interval, and every change of phase at once. */
class Throttled implements ProgressReporter {
  private readonly start = Date.now();
  private last = -Infinity;
  private phase?: Progress["phase"];

  constructor(
    private readonly intervalMs: number,
    private readonly write: (p: Progress, elapsedMs: number) => void,
  ) {}

  update(p: Progress): void {
    const now = Date.now();
    if (p.phase === this.phase && now - this.last < this.intervalMs) return;
    this.phase = p.phase;
    this.last = now;
    this.write(p, now - this.start);
  }

  clear(): void {}
}

/** Redraws one status line on a terminal, at most ten times a second. */
class ProgressBar implements ProgressReporter {
  private lastDraw = 0;
  private drawn = false;

  constructor(private readonly out: NodeJS.WriteStream) {}

  update(p: Progress): void {
    const now = Date.now();
    if (now - this.lastDraw < BAR_INTERVAL_MS && p.phase === "pre-copy") return;
    this.lastDraw = now;
    const total = p.sentBytes + p.remainingBytes;
    const filled = total > 0 ? Math.round((p.sentBytes / total) * BAR_WIDTH) : 0;
    const line = `${"█".repeat(filled)}${"░".repeat(BAR_WIDTH - filled)} ${describe(p)}`;
    this.out.write(`\r\x1b[2K${line.slice(0, Math.max(20, (this.out.columns || 120) - 1))}`);
    this.drawn = true;
  }

  clear(): void {
    if (this.drawn) this.out.write("\r\x1b[2K");
    this.drawn = false;
  }
}
