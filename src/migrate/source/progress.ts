// What the source engine reports as a migration goes: the progress line, the monitor and its
// control handle read it (report/progress.ts, source/control.ts, docs/monitor.md).

export interface Progress {
  phase: "setup" | "pre-copy" | "stop-and-copy" | "commit" | "post-copy" | "finishing";
  round: number;
  sentBytes: number;
  /** Pages left in this round, plus the dirty pages waiting for the next, in bytes. */
  remainingBytes: number;
  bytesPerSec: number;
  expectedDowntimeMs: number;
  throttlePercent: number;
  /** Post-copy: the destination's page faults the source has served so far. */
  faults: number;
}
