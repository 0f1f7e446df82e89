// A guest that runs in real time: its virtual clock follows the wall clock, slowed by the
// throttle (as a vCPU that sleeps part of each period), and stops while it is paused. The
// guest only runs inside runSlice(), so whoever drives it — an idle loop or the migration
// sending pages — interleaves it with its own work on one event loop.

import { performance } from "node:perf_hooks";
import type { Guest } from "../../guest/workload.js";
import { PageFault } from "../destination/demand-memory.js";

/** Virtual time one slice may catch up: a host that stalls longer loses the rest, as a descheduled vCPU does. */
const MAX_SLICE_NS = 50_000_000;
/** How often an idle loop lets the guest run. */
const IDLE_TICK_MS = 1;

export class LiveGuest {
  /** Fraction of wall time the guest does not run, 0 ≤ throttle < 1. */
  throttle = 0;
  private paused = true;
  private lastWallMs = 0;
  /** Virtual time owed to the guest but not yet run (below 1 ns). */
  private creditNs = 0;
  /** Post-copy: the page the guest waits for, and where a fault is reported. */
  private blockedOn = -1;
  onFault?: (page: number) => void;

  constructor(
    readonly guest: Guest,
    /** Virtual time at which the guest's run is over. */
    readonly endNs: number,
  ) {}

  get finished(): boolean {
    return this.guest.now() >= this.endNs;
  }

  get running(): boolean {
    return !this.paused;
  }

  /** The page a faulted guest waits for, or −1. */
  get blockedPage(): number {
    return this.blockedOn;
  }

  /** The page it waited for is in: the guest runs on from now; the time it was blocked is not made up. */
  unblock(): void {
    this.blockedOn = -1;
    this.lastWallMs = performance.now();
    this.creditNs = 0;
  }

  /** Starts (or restarts) the virtual clock from now; time spent paused is not made up. */
  resume(): void {
    this.paused = false;
    this.lastWallMs = performance.now();
    this.creditNs = 0;
  }

  /** Stops the virtual clock; returns the CPU state, current. */
  pause(): ReturnType<Guest["pause"]> {
    this.runSlice();
    this.paused = true;
    return this.guest.pause();
  }

  /** Runs the guest for the wall time elapsed since the last slice, scaled by (1 − throttle). */
  runSlice(): void {
    if (this.paused || this.blockedOn >= 0) return;
    const wall = performance.now();
    this.creditNs = Math.min(MAX_SLICE_NS, this.creditNs + (wall - this.lastWallMs) * 1e6 * (1 - this.throttle));
    this.lastWallMs = wall;
    const step = Math.floor(this.creditNs);
    if (step <= 0 || this.finished) return;
    const target = Math.min(this.endNs, this.guest.now() + step);
    const from = this.guest.now();
    try {
      this.guest.runUntil(target);
      this.creditNs -= target - from;
    } catch (e) {
      if (!(e instanceof PageFault) || !this.onFault) throw e;
      this.blockedOn = e.page;
      this.onFault(e.page);
    }
  }

  /**
   * Lets the guest run in real time, a slice every millisecond, until the end of its run or
   * until `stop()` returns true. While paused it waits: a migration that fails resumes it.
   */
  async runLive(stop: () => boolean = () => false): Promise<void> {
    while (!this.finished && !stop()) {
      await new Promise((r) => setTimeout(r, IDLE_TICK_MS));
      this.runSlice();
    }
  }
}
