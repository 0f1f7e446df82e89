// A token bucket that paces what the source puts on the wire, so a fast local link can stand in
// for a slow one. Tokens are bytes; they accrue at `rate` per second up to `burst`.

export class TokenBucket {
  private tokens: number;
  private lastMs: number;
  /** Size of the frame held back by the last call, if it did not go. */
  private waiting = 0;

  constructor(
    readonly rate: number,
    readonly burst = Math.max(64 * 1024, rate / 50),
    nowMs = performance.now(),
  ) {
    if (!(rate > 0)) throw new RangeError(`bandwidth must be positive, got ${rate}`);
    this.tokens = this.burst;
    this.lastMs = nowMs;
  }

  /**
   * Takes `bytes` if the bucket holds them and returns 0; otherwise takes nothing and returns
   * how many milliseconds to wait before asking again. A frame larger than the burst cannot
   * fit the bucket, so while that frame waits (asked for again with the same size) the bucket
   * may fill up to its size: it goes after the time the link needs to carry it, and that time
   * is charged to it rather than to the next frame. A sender that comes back late for it (a
   * busy event loop, a descheduled process) keeps up to a burst of what the link carried
   * meanwhile, as a real link drains its send buffer while the sender is away.
   */
  take(bytes: number, nowMs = performance.now()): number {
    const cap = bytes === this.waiting ? this.burst + bytes : this.burst;
    this.tokens = Math.min(cap, this.tokens + ((nowMs - this.lastMs) * this.rate) / 1000);
    this.lastMs = nowMs;
    if (this.tokens >= bytes) {
      this.tokens -= bytes;
      this.waiting = 0;
      return 0;
    }
    this.waiting = bytes;
    return ((bytes - this.tokens) * 1000) / this.rate;
  }
}
