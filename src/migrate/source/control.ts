// Steering a running migration from outside the engine: the downtime limit, the bandwidth, the
// switch from pre-copy to post-copy and the cancel, as QEMU's monitor offers them. The engine
// (source.ts) attaches itself while it runs and applies each change at a safe point; a change
// it cannot take is refused with a ControlError and changes nothing. See docs/monitor.md.

import type { LiveGuest } from "../run/live.js";
import type { MigrationReport, MigrationStatus } from "../report/metrics.js";
import type { Progress } from "./progress.js";

/** Longest downtime limit a user may set: an hour. */
export const MAX_DOWNTIME_LIMIT_MS = 3_600_000;

/**
 * bad-value   the value is not one the setting takes.
 * not-now     the migration is in a phase where the change no longer (or not yet) applies.
 * ended       no migration is running: it has ended (or not started).
 */
export type ControlRefusal = "bad-value" | "not-now" | "ended";

export class ControlError extends Error {
  override name = "ControlError";
  constructor(
    readonly refusal: ControlRefusal,
    message: string,
  ) {
    super(message);
  }
}

/** What the engine offers while it runs; each method applies the change or throws a ControlError. */
export interface ControlTarget {
  /** The report as the engine fills it in (read only). */
  readonly report: Readonly<MigrationReport>;
  setDowntimeLimit(ms: number): void;
  setBandwidth(bytesPerSec: number): void;
  /** Pre-copy ends after the current round and post-copy moves the rest. */
  startPostcopy(): void;
  /** Stops before the commit: the guest keeps running on the source. */
  cancel(): void;
}

/** The handle a caller keeps: it outlives the engine and says so when a change comes too late. */
export class MigrationControl {
  private target?: ControlTarget;
  private endedWith?: MigrationStatus;
  /** The source's running guest, once booted. */
  guest?: LiveGuest;
  /** The last progress the engine reported. */
  progress?: Progress;
  private readonly listeners = new Set<() => void>();

  /** The engine starts. */
  attach(target: ControlTarget): void {
    this.target = target;
    this.endedWith = undefined;
    this.changed();
  }

  /** The engine has finished with this status. */
  detach(status: MigrationStatus): void {
    this.target = undefined;
    this.endedWith = status;
    this.changed();
  }

  /** The live report while the engine runs. */
  get report(): Readonly<MigrationReport> | undefined {
    return this.target?.report;
  }

  get running(): boolean {
    return this.target !== undefined;
  }

  get ended(): MigrationStatus | undefined {
    return this.endedWith;
  }

  /** Calls `listener` after every progress report and every change of the engine. */
  subscribe(listener: () => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  reportProgress(p: Progress): void {
    this.progress = p;
    this.changed();
  }

  /** Applies both settings or, if either is refused, neither. */
  set(settings: { downtimeLimitMs?: number; bandwidth?: number }): void {
    const { downtimeLimitMs, bandwidth } = settings;
    if (downtimeLimitMs === undefined && bandwidth === undefined) throw new ControlError("bad-value", "nothing to set: give a downtime limit, a bandwidth or both");
    if (downtimeLimitMs !== undefined && !(Number.isInteger(downtimeLimitMs) && downtimeLimitMs >= 1 && downtimeLimitMs <= MAX_DOWNTIME_LIMIT_MS)) {
      throw new ControlError("bad-value", `the downtime limit must be a whole number of milliseconds from 1 to ${MAX_DOWNTIME_LIMIT_MS}, got ${downtimeLimitMs}`);
    }
    if (bandwidth !== undefined && !(Number.isFinite(bandwidth) && bandwidth >= 1)) throw new ControlError("bad-value", `the bandwidth must be at least 1 byte/s, got ${bandwidth}`);
    const target = this.live("set");
    if (downtimeLimitMs !== undefined) target.setDowntimeLimit(downtimeLimitMs);
    if (bandwidth !== undefined) target.setBandwidth(bandwidth);
    this.changed();
  }

  startPostcopy(): void {
    this.live("postcopy").startPostcopy();
    this.changed();
  }

  cancel(): void {
    this.live("cancel").cancel();
    this.changed();
  }

  private live(what: string): ControlTarget {
    if (this.target) return this.target;
    throw new ControlError("ended", this.endedWith ? `${what}: the migration has ended (${this.endedWith}); nothing was changed` : `${what}: no migration is running yet; nothing was changed`);
  }

  private changed(): void {
    for (const l of this.listeners) l();
  }
}
