// Memory digests: a CRC-32 per page, and a SHA-256 over those CRCs in page order. Keeping the
// per-page CRCs up to date as pages change makes the whole-memory digest cheap to recompute at
// stop-and-copy time.

import { createHash } from "node:crypto";
import * as zlib from "node:zlib";
import { PAGE_SIZE, ZERO_PAGE, type PagedMemory } from "./page.js";

// zlib.crc32 exists from Node 20.15 / 22.2 on; older typings do not declare it.
const crc32 = zlibCrc32();

function zlibCrc32(): (data: Uint8Array) => number {
  const f = (zlib as { crc32?: (data: Uint8Array) => number }).crc32;
  if (typeof f !== "function") throw new Error("node:zlib crc32 is missing: Node 20.15 or newer is required");
  return f;
}

/** CRC-32 of a page of zero bytes. */
export const ZERO_PAGE_CRC: number = crc32(new Uint8Array(PAGE_SIZE)) >>> 0;

/** CRC-32 of a page; the shared zero page (every never-written page) costs no hashing. */
export function pageChecksum(page: Uint8Array): number {
  return page === ZERO_PAGE ? ZERO_PAGE_CRC : crc32(page) >>> 0;
}

/** Per-page CRC-32s of one guest memory, updated page by page. */
export class PageChecksums {
  readonly crcs: Uint32Array;

  constructor(pageCount: number) {
    this.crcs = new Uint32Array(pageCount).fill(ZERO_PAGE_CRC);
  }

  /** Checksums of every page of `memory` as it is now. */
  static of(memory: PagedMemory): PageChecksums {
    const sums = new PageChecksums(memory.pageCount);
    for (let p = 0; p < memory.pageCount; p++) sums.update(p, memory.page(p));
    return sums;
  }

  update(p: number, page: Uint8Array): void {
    this.crcs[p] = pageChecksum(page);
  }

  /** SHA-256 (hex) over the CRCs in page order, little-endian. */
  digest(): string {
    const c = this.crcs;
    return createHash("sha256").update(new Uint8Array(c.buffer, c.byteOffset, c.byteLength)).digest("hex");
  }
}

export function memoryDigest(memory: PagedMemory): string {
  return PageChecksums.of(memory).digest();
}
