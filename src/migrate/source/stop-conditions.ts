// When pre-copy stops iterating. Besides the expected-downtime rule, the thresholds the
// literature tunes ("modified pre-copy"): a cap on rounds, a cap on the data sent as a multiple
// of the memory size, and a dirty-page count small enough to end the iteration. The first rule
// that holds after a round ends it, and is named in the report; "postcopy-requested" when the
// user switched the migration to post-copy while it ran (source/control.ts).

export type StopReason = "downtime" | "max-rounds" | "max-data" | "min-dirty" | "postcopy-requested";

export interface StopLimits {
  /** Stop once the expected downtime is at most this (0: never on this rule). */
  downtimeLimitMs: number;
  maxRounds: number;
  /** Memory bytes on the wire after which pre-copy stops (Infinity: no cap). */
  maxDataBytes: number;
  /** Stop once a round leaves at most this many dirty pages (0: only when nothing is dirty). */
  minDirtyPages: number;
}

export interface RoundEnd {
  /** Rounds done, the one that just ended included. */
  rounds: number;
  expectedDowntimeMs: number;
  sentBytes: number;
  dirtyPages: number;
}

/**
 * The downtime a pause now would take: the pages left at the bandwidth seen so far, plus the
 * pause's fixed part (capture, state, commit and resumed), which moves no pages.
 */
export function expectedDowntimeMs(remainingBytes: number, bytesPerSec: number, fixedMs: number): number {
  return fixedMs + (remainingBytes / bytesPerSec) * 1000;
}

export class StopConditions {
  constructor(readonly limits: StopLimits) {
    if (!Number.isInteger(limits.maxRounds) || limits.maxRounds < 1) throw new RangeError(`the round cap must be a positive integer, got ${limits.maxRounds}`);
    if (!(limits.maxDataBytes > 0)) throw new RangeError(`the data cap must be positive, got ${limits.maxDataBytes}`);
    if (!Number.isInteger(limits.minDirtyPages) || limits.minDirtyPages < 0) throw new RangeError(`the dirty-page threshold must be a whole number, got ${limits.minDirtyPages}`);
  }

  /** The rule that ends pre-copy after this round, if any (in the order of the type). */
  check(r: RoundEnd): StopReason | undefined {
    const l = this.limits;
    if (l.downtimeLimitMs > 0 && r.expectedDowntimeMs <= l.downtimeLimitMs) return "downtime";
    if (r.rounds >= l.maxRounds) return "max-rounds";
    if (r.sentBytes >= l.maxDataBytes) return "max-data";
    if (r.dirtyPages <= l.minDirtyPages) return "min-dirty";
    return undefined;
  }
}
