// Building one `pages` frame on the source: consecutive pages coalesce into runs, zero pages
// into runs of their own that carry no bytes, and every page's CRC-32 goes both into the
// source's digest state and into the batch checksum. Page bytes go straight into the buffer of
// the frame that will carry them (wire/frame-pool.ts).

import { PAGE_SIZE } from "../../guest/page.js";
import { framePool } from "../wire/frame-pool.js";
import { BATCH_DATA_BYTES, MAX_BATCH_PAGES, MAX_RUNS, PAGES_DATA_OFFSET, batchChecksum, type Pages } from "../wire/protocol.js";

const BATCH_DATA_PAGES = BATCH_DATA_BYTES / PAGE_SIZE;

export class BatchBuilder {
  /** The frame buffer the data pages are copied into, taken from the pool at the batch's first. */
  private frame?: Buffer;
  /** (page, CRC) pairs, data pages first: the batch checksum's input. */
  private readonly dataPairs = new Uint32Array(2 * BATCH_DATA_PAGES);
  private readonly zeroPairs = new Uint32Array(2 * MAX_BATCH_PAGES);
  /** Both lists joined for the checksum, reused from batch to batch. */
  private readonly pairs = new Uint32Array(2 * MAX_BATCH_PAGES);
  private runs: number[] = [];
  private zeros: number[] = [];
  private dataPages = 0;
  private zeroPages = 0;

  get empty(): boolean {
    return this.dataPages + this.zeroPages === 0;
  }

  /** Whether one more page might not fit. */
  get full(): boolean {
    return (
      this.dataPages === BATCH_DATA_PAGES ||
      this.dataPages + this.zeroPages === MAX_BATCH_PAGES ||
      this.runs.length === 2 * MAX_RUNS ||
      this.zeros.length === 2 * MAX_RUNS
    );
  }

  /** Adds page `p` with its content (copied now, into the frame's buffer) and CRC; a zero page adds no bytes. */
  add(p: number, page: Uint8Array, crc: number, zero: boolean): void {
    if (zero) {
      this.zeroPairs[2 * this.zeroPages] = p;
      this.zeroPairs[2 * this.zeroPages + 1] = crc;
      this.zeroPages++;
      extendRun(this.zeros, p);
    } else {
      this.frame ??= framePool.take();
      this.frame.set(page, PAGES_DATA_OFFSET + this.dataPages * PAGE_SIZE);
      this.dataPairs[2 * this.dataPages] = p;
      this.dataPairs[2 * this.dataPages + 1] = crc;
      this.dataPages++;
      extendRun(this.runs, p);
    }
  }

  /**
   * The batch of what was added, then empties the builder. Its data is the page bytes in place in
   * a pool buffer, which the channel encodes the frame around and hands back once it is written.
   */
  take(round: number, seq: number): Pages & { data: Uint8Array } {
    const pairs = this.pairs;
    pairs.set(this.dataPairs.subarray(0, 2 * this.dataPages));
    pairs.set(this.zeroPairs.subarray(0, 2 * this.zeroPages), 2 * this.dataPages);
    const message: Pages & { data: Uint8Array } = {
      t: "pages",
      round,
      seq,
      runs: this.runs,
      zeros: this.zeros,
      data: this.frame?.subarray(PAGES_DATA_OFFSET, PAGES_DATA_OFFSET + this.dataPages * PAGE_SIZE) ?? new Uint8Array(0),
      crc: batchChecksum(pairs, this.dataPages + this.zeroPages),
    };
    this.frame = undefined;
    this.runs = [];
    this.zeros = [];
    this.dataPages = this.zeroPages = 0;
    return message;
  }
}

/** Appends page p to flat [first, count] runs, extending the last run when p follows it. */
function extendRun(runs: number[], p: number): void {
  const n = runs.length;
  if (n > 0 && runs[n - 2] + runs[n - 1] === p) runs[n - 1]++;
  else runs.push(p, 1);
}
