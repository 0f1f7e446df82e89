// Preallocated guest memory (SlabPool, `migrate listen --prealloc`): a guest built on the pool's
// slabs behaves as one on fresh memory, a released guest's slabs come back zeroed whatever it
// wrote, and a listener with preallocated memory receives guest after guest, each whole.

import fc from "fast-check";
import { afterEach, describe, expect, it } from "vitest";
import { GuestMemory, PAGE_SIZE, SlabPool } from "../src/guest/memory.js";
import { referenceDigest, type GuestRunSpec } from "../src/migrate/run/guest-run.js";
import { bootAndMigrate } from "../src/migrate/run/run.js";
import { Destination, killChildren, runCli } from "./migrate-harness.js";

const MiB = 2 ** 20;
const MS = 1_000_000;
/** Pages in one of GuestMemory's slabs (256 MiB). */
const SLAB_PAGES = 1 << 16;

afterEach(killChildren);

/** Every page of `mem` reads as zero, through each way of reading it. */
function expectAllZero(mem: GuestMemory): void {
  for (let p = 0; p < mem.pageCount; p++) {
    expect(mem.isZero(p), `page ${p}`).toBe(true);
    expect(mem.read32(p * PAGE_SIZE + 4 * (p % 1024))).toBe(0);
  }
}

/** Waits until the pool has zeroed what was given back in the background. */
const settle = (): Promise<void> => new Promise((r) => setTimeout(r, 20));

describe("SlabPool", () => {
  it("hands its slabs to a guest and, zeroed, to the next one whatever the first wrote", async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.uniqueArray(fc.integer({ min: 0, max: 511 }), { maxLength: 40 }),
        fc.uniqueArray(fc.integer({ min: 0, max: 511 }), { maxLength: 40 }),
        fc.boolean(),
        async (stored, written, waitForClean) => {
          const pool = new SlabPool(512 * PAGE_SIZE);
          const first = new GuestMemory(512 * PAGE_SIZE, pool);
          const page = new Uint8Array(PAGE_SIZE).fill(0xa5);
          for (const p of stored) first.writePage(p, page);
          for (const p of written) first.write32(p * PAGE_SIZE + 8, 0xdeadbeef);
          for (const p of stored) if (!written.includes(p)) expect(first.page(p)).toEqual(page);
          expect(pool.free).toBe(stored.length + written.length > 0 ? 0 : 1);
          first.release();
          expect(pool.free).toBe(1);
          // Taken again either after the pool zeroed it in the background or before (then at once).
          if (waitForClean) await settle();
          const second = new GuestMemory(512 * PAGE_SIZE, pool);
          second.write32(0, 0);
          expect(pool.free).toBe(0);
          expectAllZero(second);
        },
      ),
      { numRuns: 40 },
    );
  });

  it("gives the smallest slab that fits, allocates beyond it, and takes back only its own slabs", async () => {
    // One whole slab and one of 16 pages.
    const pool = new SlabPool((SLAB_PAGES + 16) * PAGE_SIZE);
    expect(pool.bytes).toBe((SLAB_PAGES + 16) * PAGE_SIZE);
    expect(pool.free).toBe(2);
    const small = new GuestMemory(8 * PAGE_SIZE, pool);
    small.write32(0, 1);
    expect(pool.free).toBe(1); // the 16-page slab, not the whole one
    const big = new GuestMemory(2 * SLAB_PAGES * PAGE_SIZE, pool);
    big.write32(0, 2);
    expect(pool.free).toBe(0);
    big.write32(SLAB_PAGES * PAGE_SIZE, 3); // a second slab: allocated, the pool has none left
    expect(big.read32(SLAB_PAGES * PAGE_SIZE)).toBe(3);
    big.release();
    small.release();
    await settle();
    expect(pool.free).toBe(2);
  });

  it("refuses writes to a released memory and sizes that are not whole pages", () => {
    const mem = new GuestMemory(4 * PAGE_SIZE, new SlabPool(4 * PAGE_SIZE));
    mem.write32(0, 7);
    mem.release();
    expect(() => mem.write32(0, 7)).toThrow(/released/);
    expect(mem.read32(0)).toBe(0);
    expect(() => new SlabPool(PAGE_SIZE + 1)).toThrow(RangeError);
    expect(() => new SlabPool(0)).toThrow(RangeError);
  });
});

describe("migrate listen --prealloc", () => {
  it("receives guest after guest into the same preallocated memory, each ending with its own digest", async () => {
    const dest = await Destination.start("prealloc", ["--prealloc", "8M"]);
    expect(dest.events[0]).toMatchObject({ event: "listening", preallocatedBytes: 8 * MiB });
    const specs: GuestRunSpec[] = [3, 4, 5].map((seed) => ({ workload: "uniform", interrupts: "apic", memoryBytes: 8 * MiB, seed, endNs: 250 * MS }));
    for (const [i, spec] of specs.entries()) {
      const { report } = await bootAndMigrate(spec, { url: dest.url, token: dest.token, migrateAtNs: 100 * MS });
      expect(report.status).toBe("completed");
      const reference = referenceDigest(spec);
      expect(report.destination?.digest).toBe(reference);
      await dest.waitFor((e) => e.event === "finished" && e.digest === reference);
      expect(dest.events.filter((e) => e.event === "finished")).toHaveLength(i + 1);
    }
  }, 60_000);

  it("refuses a size that is not whole pages or more than the memory budget, with exit 2", async () => {
    for (const [args, message] of [
      [["--prealloc", "lots"], /--prealloc expects a size/],
      [["--prealloc", "1000"], /--prealloc expects a size in whole 4 KiB pages/],
      [["--prealloc", "2G", "--memory-budget", "1G"], /--prealloc 2G is more than --memory-budget 1G/],
    ] as const) {
      const run = await runCli(["migrate", "listen", "--port", "0", ...args]);
      expect(run.code).toBe(2);
      expect(run.stderr).toMatch(message);
    }
  });
});
