// Page-level helpers of the migration's page loops: the next dirty page of a bitmap, and
// loading and zeroing runs of pages on the destination.

import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { GuestMemory, PAGE_SIZE, nextSetBit } from "../src/guest/memory.js";
import { DemandMemory } from "../src/migrate/destination/demand-memory.js";
import { expectEqual, expectIs } from "./expect-same.js";

/** A page whose every byte says which page and which write it came from. */
function pattern(p: number, write: number): Uint8Array {
  return new Uint8Array(PAGE_SIZE).fill((p * 7 + write * 13 + 1) & 0xff || 1);
}

describe("nextSetBit", () => {
  it("visits exactly the set bits, in order", () => {
    fc.assert(
      fc.property(fc.uint32Array({ maxLength: 12 }), (words) => {
        const expected: number[] = [];
        for (let p = 0; p < 32 * words.length; p++) if ((words[p >>> 5] >>> (p & 31)) & 1) expected.push(p);
        const seen: number[] = [];
        for (let p = nextSetBit(words, 0); p >= 0; p = nextSetBit(words, p + 1)) seen.push(p);
        expectEqual(seen, expected);
      }),
    );
  });

  it("answers -1 past the end", () => {
    expect(nextSetBit(new Uint32Array([0x80000000]), 31)).toBe(31);
    expect(nextSetBit(new Uint32Array([0x80000000]), 32)).toBe(-1);
    expect(nextSetBit(new Uint32Array(0), 0)).toBe(-1);
  });
});

describe("GuestMemory.zeroPages", () => {
  it("zeroes exactly the run, touched pages and untouched alike", () => {
    fc.assert(
      fc.property(fc.uniqueArray(fc.integer({ min: 0, max: 199 }), { maxLength: 60 }), fc.integer({ min: 0, max: 199 }), fc.integer({ min: 0, max: 200 }), (written, first, length) => {
        const count = Math.min(length, 200 - first);
        const mem = new GuestMemory(200 * PAGE_SIZE);
        const page = new Uint8Array(PAGE_SIZE).fill(0x5a);
        for (const p of written) mem.writePage(p, page);
        mem.zeroPages(first, count);
        for (let p = 0; p < 200; p++) {
          const inRun = p >= first && p < first + count;
          expectIs(mem.isZero(p), inRun || !written.includes(p), () => `page ${p}`);
        }
      }),
    );
  });

  it("refuses a run outside memory", () => {
    const mem = new GuestMemory(64 * PAGE_SIZE);
    expect(() => mem.zeroPages(60, 5)).toThrow(/page 64 is outside guest memory/);
  });
});

describe("GuestMemory.writePages", () => {
  /** 64 pages either side of the first slab's end (slabs hold 65536 pages). */
  const BASE = 65536 - 64;
  const PAGES = 128;

  it("stores a run exactly as writePage stores each of its pages, across a slab boundary too", () => {
    fc.assert(
      fc.property(
        fc.array(fc.record({ first: fc.integer({ min: 0, max: PAGES - 1 }), length: fc.integer({ min: 1, max: PAGES }), skip: fc.integer({ min: 0, max: 3 }) }), { maxLength: 6 }),
        (runs) => {
          const bulk = new GuestMemory((BASE + PAGES) * PAGE_SIZE);
          const single = new GuestMemory((BASE + PAGES) * PAGE_SIZE);
          runs.forEach(({ first, length, skip }, write) => {
            const count = Math.min(length, PAGES - first);
            // The run's bytes start `skip` pages into the buffer, as a run does inside a frame.
            const data = new Uint8Array((skip + count) * PAGE_SIZE);
            for (let k = 0; k < count; k++) data.set(pattern(BASE + first + k, write), (skip + k) * PAGE_SIZE);
            bulk.writePages(BASE + first, count, data, skip * PAGE_SIZE);
            for (let k = 0; k < count; k++) single.writePage(BASE + first + k, pattern(BASE + first + k, write));
          });
          for (let p = BASE - 1; p < BASE + PAGES; p++) {
            expectIs(bulk.isZero(p), single.isZero(p), () => `page ${p}`);
            expectIs(Buffer.compare(bulk.page(p), single.page(p)), 0, () => `page ${p}`);
          }
        },
      ),
      { numRuns: 50 },
    );
  });

  it("refuses a run outside memory or bytes that do not hold it", () => {
    const mem = new GuestMemory(64 * PAGE_SIZE);
    const data = new Uint8Array(4 * PAGE_SIZE);
    expect(() => mem.writePages(62, 4, data, 0)).toThrow(/page 65 is outside guest memory/);
    expect(() => mem.writePages(0, 4, data, 1)).toThrow(/16384 bytes from offset 1 do not hold them/);
    expect(() => mem.writePages(0, 5, data, 0)).toThrow(/do not hold them/);
    expect(() => mem.writePage(3, data)).toThrow(/expected 4096 bytes/);
  });

  it("makes every page of the run present in demand-paged memory, and only those", () => {
    const mem = new DemandMemory(64 * PAGE_SIZE);
    mem.markAbsent(new Uint8Array(8).fill(0xff));
    mem.writePages(10, 5, new Uint8Array(5 * PAGE_SIZE).fill(3), 0);
    expect(mem.missingPages).toBe(59);
    for (let p = 0; p < 64; p++) expect(mem.isAbsent(p), `page ${p}`).toBe(p < 10 || p >= 15);
  });
});
