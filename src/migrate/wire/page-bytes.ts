// The page bytes of a `pages` batch as the destination received them: in one buffer, or in the
// WebSocket fragments the source sent them in (each a whole number of pages), viewed where they
// arrived instead of joined into one buffer first. docs/migration.md, "The link".

import type { GuestMemory } from "../../guest/memory.js";
import { PAGE_SIZE } from "../../guest/page.js";

/** Page bytes in the fragments they arrived in, each a whole number of pages, in order. */
export class PageFragments {
  constructor(
    readonly chunks: readonly Uint8Array[],
    /** Bytes in all of them. */
    readonly length: number,
  ) {}
}

export type PageBytes = Uint8Array | PageFragments;

/** The buffers that hold `data`, in order; each is a whole number of pages. */
export function chunksOf(data: PageBytes): readonly Uint8Array[] {
  return data instanceof PageFragments ? data.chunks : [data];
}

/**
 * Copies the pages of `runs` ([first, count] pairs) into `memory` from `data`, which holds their
 * bytes one after the other: one copy for each part of a run that lies in one buffer.
 */
export function storeRuns(memory: GuestMemory, runs: readonly number[], data: PageBytes): void {
  const chunks = chunksOf(data);
  let c = 0;
  let offset = 0;
  for (let i = 0; i < runs.length; i += 2) {
    for (let p = runs[i], left = runs[i + 1]; left > 0; ) {
      const chunk = chunks[c];
      const n = Math.min(left, (chunk.length - offset) / PAGE_SIZE);
      memory.writePages(p, n, chunk, offset);
      p += n;
      left -= n;
      offset += n * PAGE_SIZE;
      if (offset === chunk.length) [c, offset] = [c + 1, 0];
    }
  }
}
