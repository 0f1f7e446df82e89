// Flow control by the destination's acknowledgements. A batch (`pages` or `deltas`) stays in
// flight from the moment the source hands it to the socket until the destination says it has
// checked and stored it. The source sends a batch only while the bytes in flight stay within a
// window, so the buffers between the two (socket, kernel, a slow link) never hold more than
// that, and what it measures is what arrived, not what the socket took. The window follows the
// link: twice its bandwidth-delay product — the delivery rate while something was in flight,
// times the shortest send-to-acknowledgement time seen — within fixed bounds.

import { BATCH_DATA_BYTES, ProtocolError } from "../wire/protocol.js";

/** Two full batches with their headers: one on its way while the destination stores the one before. */
export const MIN_WINDOW_BYTES = 2 * (BATCH_DATA_BYTES + 64 * 1024);
export const MAX_WINDOW_BYTES = 64 * 1024 * 1024;
/** Batches in flight at most, whatever their size (post-copy batches are small). */
export const MAX_BATCHES_IN_FLIGHT = 1024;

/** What the acknowledgements showed, for the report. */
export interface AckStats {
  /** Bytes of batches the destination acknowledged. */
  ackedBytes: number;
  /** The most bytes ever in flight at once. */
  maxInFlightBytes: number;
  /** The largest window the source allowed itself. */
  maxWindowBytes: number;
  /** Shortest time from handing a batch to the socket to its acknowledgement. */
  minRttMs: number;
  /** Acknowledged bytes per second of time with something in flight. */
  deliveryBytesPerSec: number;
}

export class AckWindow {
  // A ring of the batches in flight, oldest first: no allocation per batch.
  private readonly seqs = new Float64Array(MAX_BATCHES_IN_FLIGHT);
  private readonly sizes = new Float64Array(MAX_BATCHES_IN_FLIGHT);
  private readonly sentAt = new Float64Array(MAX_BATCHES_IN_FLIGHT);
  private head = 0;
  private count = 0;
  private lastSeq = -1;
  inFlightBytes = 0;
  ackedBytes = 0;
  maxInFlightBytes = 0;
  maxWindowBytes = MIN_WINDOW_BYTES;
  minRttMs = Infinity;
  /** Time with at least one batch in flight, finished busy periods only, and when this one began. */
  private busyMs = 0;
  private busySince = 0;
  private deliveryRate = 0;

  /** Bytes allowed in flight now. */
  get windowBytes(): number {
    const bdp = this.deliveryRate * (Number.isFinite(this.minRttMs) ? this.minRttMs / 1000 : 0);
    return Math.min(MAX_WINDOW_BYTES, Math.max(MIN_WINDOW_BYTES, 2 * bdp));
  }

  get empty(): boolean {
    return this.count === 0;
  }

  /**
   * Whether a batch of `bytes` may go now; one always may when nothing is in flight. One sent
   * `beyondWindow` needs only a free place among the batches in flight.
   */
  fits(bytes: number, beyondWindow = false): boolean {
    if (this.count === 0) return true;
    return this.count < MAX_BATCHES_IN_FLIGHT && (beyondWindow || this.inFlightBytes + bytes <= this.windowBytes);
  }

  /** Batch `seq` of `bytes` went to the socket at `nowMs`. */
  sent(seq: number, bytes: number, nowMs: number): void {
    if (this.count === 0) this.busySince = nowMs;
    const slot = (this.head + this.count) % MAX_BATCHES_IN_FLIGHT;
    this.seqs[slot] = seq;
    this.sizes[slot] = bytes;
    this.sentAt[slot] = nowMs;
    this.count++;
    this.lastSeq = seq;
    this.inFlightBytes += bytes;
    this.maxInFlightBytes = Math.max(this.maxInFlightBytes, this.inFlightBytes);
    this.maxWindowBytes = Math.max(this.maxWindowBytes, this.windowBytes);
  }

  /** The destination stored every batch up to `seq`; one that acknowledges nothing in flight is refused. */
  acked(seq: number, nowMs: number): void {
    if (this.count === 0 || seq < this.seqs[this.head] || seq > this.lastSeq) {
      throw new ProtocolError("bad-message", `ack.seq: batch ${seq} is not in flight`);
    }
    while (this.count > 0 && this.seqs[this.head] <= seq) {
      this.ackedBytes += this.sizes[this.head];
      this.inFlightBytes -= this.sizes[this.head];
      this.minRttMs = Math.min(this.minRttMs, nowMs - this.sentAt[this.head]);
      this.head = (this.head + 1) % MAX_BATCHES_IN_FLIGHT;
      this.count--;
    }
    const busy = this.busyMs + nowMs - this.busySince;
    if (this.count === 0) this.busyMs = busy;
    if (busy > 0) this.deliveryRate = (this.ackedBytes * 1000) / busy;
  }

  stats(): AckStats {
    return {
      ackedBytes: this.ackedBytes,
      maxInFlightBytes: this.maxInFlightBytes,
      maxWindowBytes: this.maxWindowBytes,
      minRttMs: Number.isFinite(this.minRttMs) ? this.minRttMs : 0,
      deliveryBytesPerSec: this.deliveryRate,
    };
  }
}
