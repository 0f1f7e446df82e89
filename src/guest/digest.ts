// Memory digests: a CRC-32 per page (IEEE 802.3, as zlib's; computed with the carry-less multiply
// instructions where the CPU has them), and a digest over all of them kept up to date page by page.
// Each page that is not a zero page adds a term mixing its number with its CRC; the digest sums
// the terms in four 32-bit lanes (128 bits), so changing one page's CRC costs a few
// multiplications and the whole-memory digest at a pause costs nothing more. docs/migration.md.

import { createHash } from "node:crypto";
import { crc32 } from "@node-rs/crc32";
import { PAGE_SIZE, ZERO_PAGE, type PagedMemory } from "./page.js";

/** CRC-32 of a page of zero bytes. */
export const ZERO_PAGE_CRC: number = crc32(new Uint8Array(PAGE_SIZE)) >>> 0;

/** CRC-32 of a page; the shared zero page (every never-written page) costs no hashing. */
export function pageChecksum(page: Uint8Array): number {
  return page === ZERO_PAGE ? ZERO_PAGE_CRC : crc32(page) >>> 0;
}

/** One seed per lane: four independent 32-bit mixes of (page, CRC). */
const LANE_SEEDS = [0x243f6a88, 0x85a308d3, 0x13198a2e, 0x03707344] as const;
const LANES = LANE_SEEDS.length;

/** A page's term in one lane: page number and CRC mixed (murmur3-style multiply–xorshift steps). */
function term(p: number, crc: number, seed: number): number {
  let h = Math.imul(crc ^ seed, 0xcc9e2d51);
  h ^= h >>> 15;
  h = Math.imul(h ^ p, 0x1b873593);
  h ^= h >>> 13;
  h = Math.imul(h, 0xc2b2ae35);
  return (h ^ (h >>> 16)) >>> 0;
}

/**
 * Per-page CRC-32s of one guest memory and their running digest, updated page by page: every
 * change goes through set() (or update, fill), which keeps the lane sums right.
 */
export class PageChecksums {
  private readonly crcs: Uint32Array;
  /** Per lane: the sum (mod 2^32) of every page's term. */
  private readonly sums = new Uint32Array(LANES);

  constructor(readonly pageCount: number) {
    this.crcs = new Uint32Array(pageCount).fill(ZERO_PAGE_CRC);
  }

  /** Checksums of every page of `memory` as it is now. */
  static of(memory: PagedMemory): PageChecksums {
    const sums = new PageChecksums(memory.pageCount);
    for (let p = 0; p < memory.pageCount; p++) sums.update(p, memory.page(p));
    return sums;
  }

  /** Page p's CRC-32 as last set. */
  crc(p: number): number {
    return this.crcs[p];
  }

  update(p: number, page: Uint8Array): void {
    this.set(p, pageChecksum(page));
  }

  /** Page p now has CRC `crc`. */
  set(p: number, crc: number): void {
    const old = this.crcs[p];
    if (old === crc) return;
    this.addTerm(p, old, -1);
    this.addTerm(p, crc, 1);
    this.crcs[p] = crc;
  }

  /** Pages first..end-1 now have CRC `crc`. */
  fill(crc: number, first: number, end: number): void {
    for (let p = first; p < end; p++) this.set(p, crc);
  }

  /**
   * The digest (hex): SHA-256 over the page count and the four lane sums, little-endian. Equal
   * for two memories with the same CRC at every page; O(1), whatever the memory's size.
   */
  digest(): string {
    const head = new Uint32Array([this.pageCount >>> 0, Math.floor(this.pageCount / 2 ** 32)]);
    return createHash("sha256").update("blmv page-crc sum\0").update(head).update(this.sums).digest("hex");
  }

  /** A zero page's term is 0: a fresh memory's sums are 0 without a pass over its pages. */
  private addTerm(p: number, crc: number, sign: 1 | -1): void {
    if (crc === ZERO_PAGE_CRC) return;
    const sums = this.sums;
    for (let k = 0; k < LANES; k++) sums[k] += sign * term(p, crc, LANE_SEEDS[k]);
  }
}

export function memoryDigest(memory: PagedMemory): string {
  return PageChecksums.of(memory).digest();
}
