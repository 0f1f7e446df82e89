// XBZRLE: a page sent again goes as the difference from the version sent before, when that is
// small. The source keeps the versions it sent in a bounded, direct-mapped cache (a page's
// slot is its number modulo the slot count; a newer page evicts an older one). The difference
// is the XOR of the two versions, run-length encoded: a sequence of
//   varint(unchanged bytes) varint(changed bytes) <the changed bytes' new values>
// with the trailing unchanged run left out. The destination applies it to the version it holds.

import { pageChecksum, type PageChecksums } from "../../guest/digest.js";
import type { GuestMemory } from "../../guest/memory.js";
import { PAGE_SIZE } from "../../guest/page.js";
import { BATCH_DATA_BYTES, MAX_DELTA_BYTES, MAX_DELTA_PAGES, ProtocolError, batchChecksum, type Deltas } from "./protocol.js";

export const DEFAULT_XBZRLE_CACHE_BYTES = 64 * 1024 * 1024;

export interface XbzrleStats {
  /** Pages sent as deltas. */
  deltaPages: number;
  /** Pages sent again that the cache no longer held. */
  cacheMisses: number;
  /** Pages whose delta was too large, sent whole. */
  overflows: number;
  /** Page bytes not sent thanks to the deltas. */
  bytesSaved: number;
  /** deltaPages ÷ pages considered for a delta (hits and overflows and misses). */
  hitRate: number;
}

/**
 * Encodes `page` against `old` (at `oldOffset`) into `out` at `outOffset`; returns the encoded
 * length, or −1 when it would exceed `max` bytes. Allocates nothing.
 */
export function encodeDelta(old: Uint8Array, oldOffset: number, page: Uint8Array, out: Uint8Array, outOffset: number, max: number): number {
  let o = outOffset;
  const end = outOffset + max;
  let i = 0;
  while (i < PAGE_SIZE) {
    const start = i;
    while (i < PAGE_SIZE && page[i] === old[oldOffset + i]) i++;
    if (i === PAGE_SIZE) break;
    const same = i - start;
    const from = i;
    while (i < PAGE_SIZE && page[i] !== old[oldOffset + i]) i++;
    const changed = i - from;
    if (o + varintLength(same) + varintLength(changed) + changed > end) return -1;
    o = writeVarint(out, o, same);
    o = writeVarint(out, o, changed);
    for (let j = from; j < i; j++) out[o++] = page[j];
  }
  return o - outOffset;
}

/** Applies the delta in `delta[from, to)` to `page` in place; throws RangeError when it is malformed. */
export function applyDelta(page: Uint8Array, delta: Uint8Array, from = 0, to = delta.length): void {
  let i = 0;
  let d = from;
  while (d < to) {
    const same = readVarint(delta, d, to);
    d += varintLength(same);
    const changed = readVarint(delta, d, to);
    d += varintLength(changed);
    i += same;
    if (changed === 0 || i + changed > PAGE_SIZE || d + changed > to) throw new RangeError("XBZRLE delta runs outside the page");
    for (const end = d + changed; d < end; ) page[i++] = delta[d++];
  }
}

function varintLength(n: number): number {
  return n < 0x80 ? 1 : 2;
}

function writeVarint(out: Uint8Array, o: number, n: number): number {
  // Runs are at most a page (4096 < 2^14): two bytes suffice.
  if (n < 0x80) {
    out[o] = n;
    return o + 1;
  }
  out[o] = 0x80 | (n & 0x7f);
  out[o + 1] = n >>> 7;
  return o + 2;
}

/** The run length at b[d] (one or two bytes, see writeVarint). */
function readVarint(b: Uint8Array, d: number, end: number): number {
  if (d >= end) throw new RangeError("XBZRLE delta ends inside a run header");
  const lo = b[d];
  if (lo < 0x80) return lo;
  // A two-byte form must hold a value that needs two bytes, so that its length reads back.
  if (d + 1 >= end || b[d + 1] >= 0x80 || b[d + 1] === 0) throw new RangeError("XBZRLE delta has a malformed run length");
  return (lo & 0x7f) | (b[d + 1] << 7);
}

/** The source's side: the cache of sent versions and the `deltas` frame being built. */
export class XbzrleEncoder {
  private readonly slots: number;
  private readonly tags: Float64Array;
  private readonly cache: Uint8Array;
  private readonly data = Buffer.allocUnsafe(BATCH_DATA_BYTES);
  private readonly pairs = new Uint32Array(2 * MAX_DELTA_PAGES);
  private pages: number[] = [];
  private lengths: number[] = [];
  private used = 0;
  private considered = 0;
  readonly stats: XbzrleStats = { deltaPages: 0, cacheMisses: 0, overflows: 0, bytesSaved: 0, hitRate: 0 };

  constructor(cacheBytes = DEFAULT_XBZRLE_CACHE_BYTES) {
    this.slots = Math.floor(cacheBytes / PAGE_SIZE);
    if (this.slots < 1) throw new RangeError(`the XBZRLE cache must hold at least one page, got ${cacheBytes} bytes`);
    this.tags = new Float64Array(this.slots).fill(-1);
    this.cache = new Uint8Array(this.slots * PAGE_SIZE);
  }

  get empty(): boolean {
    return this.pages.length === 0;
  }

  /** Whether one more delta might not fit. */
  get full(): boolean {
    return this.pages.length === MAX_DELTA_PAGES || this.used + MAX_DELTA_BYTES > BATCH_DATA_BYTES;
  }

  /**
   * Page p is being sent with this content: when it is `resent` and its previous version is
   * cached, adds it as a delta and returns true if the delta is small. Caches the content.
   */
  add(p: number, page: Uint8Array, crc: number, resent: boolean): boolean {
    const slot = p % this.slots;
    const offset = slot * PAGE_SIZE;
    let sent = false;
    if (resent && this.tags[slot] !== p) {
      this.stats.cacheMisses++;
    } else if (resent) {
      const n = encodeDelta(this.cache, offset, page, this.data, this.used, MAX_DELTA_BYTES);
      if (n > 0) {
        const k = this.pages.length;
        this.pairs[2 * k] = p;
        this.pairs[2 * k + 1] = crc;
        this.pages.push(p);
        this.lengths.push(n);
        this.used += n;
        this.stats.deltaPages++;
        this.stats.bytesSaved += PAGE_SIZE - n;
        sent = true;
      } else if (n < 0) {
        this.stats.overflows++;
      }
      // n === 0: rewritten with the same bytes; it goes whole, as the dirty log asked.
    }
    if (resent) this.considered++;
    this.tags[slot] = p;
    this.cache.set(page, offset);
    this.stats.hitRate = this.considered > 0 ? this.stats.deltaPages / this.considered : 0;
    return sent;
  }

  /** Page p went as a zero page: its cached version is stale. */
  forget(p: number): void {
    const slot = p % this.slots;
    if (this.tags[slot] === p) this.tags[slot] = -1;
  }

  /** The frame for the deltas added, then empties the builder. */
  take(round: number, seq: number): Deltas {
    const n = this.pages.length;
    const message: Deltas = { t: "deltas", round, seq, pages: this.pages, lengths: this.lengths, data: this.data.subarray(0, this.used), crc: batchChecksum(this.pairs, n) };
    this.pages = [];
    this.lengths = [];
    this.used = 0;
    return message;
  }
}

/**
 * The destination's side: applies a `deltas` frame to the pages it holds, after checking the
 * frame's checksum over the decoded pages (a first pass that changes nothing).
 */
export function applyDeltas(memory: GuestMemory, checksums: PageChecksums, pairs: Uint32Array, scratch: Uint8Array, m: Deltas): void {
  for (let pass = 0; pass < 2; pass++) {
    let offset = 0;
    for (let k = 0; k < m.pages.length; k++) {
      const p = m.pages[k];
      scratch.set(memory.page(p));
      try {
        applyDelta(scratch, m.data, offset, offset + m.lengths[k]);
      } catch (e) {
        throw new ProtocolError("bad-message", `deltas batch ${m.seq}, page ${p}: ${(e as Error).message}`);
      }
      offset += m.lengths[k];
      const crc = pageChecksum(scratch);
      if (pass === 0) {
        pairs[2 * k] = p;
        pairs[2 * k + 1] = crc;
      } else {
        memory.writePage(p, scratch);
        checksums.set(p, crc);
      }
    }
    if (pass === 0 && batchChecksum(pairs, m.pages.length) !== m.crc) throw new ProtocolError("checksum", `deltas batch ${m.seq} of round ${m.round} does not match its checksum`);
  }
}
