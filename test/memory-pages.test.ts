// Page-level helpers of the migration's page loops: the next dirty page of a bitmap, and
// zeroing runs of pages on the destination.

import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { GuestMemory, PAGE_SIZE, nextSetBit } from "../src/guest/memory.js";

describe("nextSetBit", () => {
  it("visits exactly the set bits, in order", () => {
    fc.assert(
      fc.property(fc.uint32Array({ maxLength: 12 }), (words) => {
        const expected: number[] = [];
        for (let p = 0; p < 32 * words.length; p++) if ((words[p >>> 5] >>> (p & 31)) & 1) expected.push(p);
        const seen: number[] = [];
        for (let p = nextSetBit(words, 0); p >= 0; p = nextSetBit(words, p + 1)) seen.push(p);
        expect(seen).toEqual(expected);
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
          expect(mem.isZero(p), `page ${p}`).toBe(inRun || !written.includes(p));
        }
      }),
    );
  });

  it("refuses a run outside memory", () => {
    const mem = new GuestMemory(64 * PAGE_SIZE);
    expect(() => mem.zeroPages(60, 5)).toThrow(/page 64 is outside guest memory/);
  });
});
