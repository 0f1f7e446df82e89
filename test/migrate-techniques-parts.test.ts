// The parts of the migration techniques, in one process: demand-paged memory and a guest that
// stops at a faulting store and redoes it, XBZRLE deltas, the pre-copy stop conditions, the
// model's predictions per technique, the new protocol messages, and the comparison table.

import fc from "fast-check";
import { pack } from "msgpackr";
import { describe, expect, it } from "vitest";
import { Machine } from "../src/core/machine.js";
import { cpusFromRecord, cpusToRecord } from "../src/guest/cpu.js";
import { PageChecksums, pageChecksum } from "../src/guest/digest.js";
import { GuestMemory } from "../src/guest/memory.js";
import { PAGE_SIZE } from "../src/guest/page.js";
import { Guest } from "../src/guest/workload.js";
import { bootGuest, type GuestRunSpec } from "../src/migrate/run/guest-run.js";
import { DemandMemory, PageFault } from "../src/migrate/destination/demand-memory.js";
import { formatComparison, type CompareRow } from "../src/migrate/run/compare.js";
import { comparisonChartSvg } from "../src/migrate/report/compare-chart.js";
import { predict, predictTechnique } from "../src/migrate/report/model.js";
import { decode } from "../src/migrate/wire/decode.js";
import { MAX_DELTA_BYTES, ProtocolError, encode, type Message } from "../src/migrate/wire/protocol.js";
import { StopConditions } from "../src/migrate/source/stop-conditions.js";
import { XbzrleEncoder, applyDelta, applyDeltas, encodeDelta } from "../src/migrate/wire/xbzrle.js";
import { expectEqual, expectIs } from "./expect-same.js";

const MiB = 2 ** 20;
const MS = 1_000_000;

describe("demand-paged memory", () => {
  it("faults on a guest access to an absent page until the page is loaded, and never again", () => {
    const mem = new DemandMemory(64 * PAGE_SIZE);
    mem.write32(5 * PAGE_SIZE, 42);
    const missing = new Uint8Array(8);
    missing[0] = 0b0010_0000; // page 5
    missing[1] = 0b0000_0001; // page 8
    mem.markAbsent(missing);
    expect(mem.missingPages).toBe(2);
    expect(() => mem.read32(5 * PAGE_SIZE + 8)).toThrow(PageFault);
    expect(() => mem.write32(8 * PAGE_SIZE, 1)).toThrow(expect.objectContaining({ page: 8 }));
    expect(() => mem.page(5)).toThrow(PageFault);
    mem.write32(6 * PAGE_SIZE, 7); // present pages work as ever
    const page = new Uint8Array(PAGE_SIZE).fill(9);
    mem.writePage(5, page);
    expect(mem.read32(5 * PAGE_SIZE)).toBe(0x09090909);
    mem.zeroPage(8);
    expect(mem.missingPages).toBe(0);
    mem.write32(8 * PAGE_SIZE, 3);
    expect(mem.read32(8 * PAGE_SIZE)).toBe(3);
  });

  it("a run of zero pages arrives as a run", () => {
    const mem = new DemandMemory(64 * PAGE_SIZE);
    mem.write32(40 * PAGE_SIZE, 5);
    mem.markAbsent(new Uint8Array(8).fill(0xff));
    mem.zeroPages(32, 16);
    expect(mem.missingPages).toBe(48);
    expect(mem.read32(40 * PAGE_SIZE)).toBe(0);
    expect(() => mem.read32(48 * PAGE_SIZE)).toThrow(PageFault);
  });

  it("a guest whose pages arrive only when it faults on them ends exactly as one that never moved", () => {
    const spec: GuestRunSpec = { workload: "hot", interrupts: "apic", memoryBytes: 4 * MiB, seed: 11, endNs: 80 * MS };
    const reference = bootGuest(spec);
    reference.runUntil(spec.endNs);

    const source = bootGuest(spec);
    source.runUntil(30 * MS);
    const memory = new DemandMemory(spec.memoryBytes);
    const all = new Uint8Array(Math.ceil(memory.pageCount / 8)).fill(0xff);
    memory.markAbsent(all);
    const cpus = cpusFromRecord(cpusToRecord(source.pause()));
    const machine = Machine.reconstruct(source.machine.capture(), { policy: source.machine.policy });
    const fetch = (p: number): void => memory.writePage(p, source.memory.page(p));
    let faults = 0;
    let guest: Guest | undefined;
    while (!guest) {
      try {
        guest = Guest.resume(memory, cpus, machine);
      } catch (e) {
        if (!(e instanceof PageFault)) throw e;
        fetch(e.page);
        faults++;
      }
    }
    // Run in small steps, as the live guest does, each interrupted by whatever faults it meets.
    for (let t = 30 * MS; guest.now() < spec.endNs; ) {
      t = Math.min(spec.endNs, t + 3 * MS);
      for (;;) {
        try {
          guest.runUntil(t);
          break;
        } catch (e) {
          if (!(e instanceof PageFault)) throw e;
          expect(memory.isAbsent(e.page)).toBe(true);
          fetch(e.page);
          faults++;
        }
      }
    }
    expect(faults).toBeGreaterThan(10);
    for (let p = 0; p < memory.pageCount; p++) if (memory.isAbsent(p)) fetch(p);
    expect(guest.digest()).toBe(reference.digest());
  });
});

describe("XBZRLE", () => {
  const pageArb = fc.uint8Array({ minLength: PAGE_SIZE, maxLength: PAGE_SIZE });
  const edits = fc.array(fc.tuple(fc.nat(PAGE_SIZE - 1), fc.nat(255)), { maxLength: 300 });

  it("a delta applied to the old version gives the new one, or says it is too large", () => {
    fc.assert(
      fc.property(pageArb, edits, (old, changes) => {
        const page = old.slice();
        for (const [i, v] of changes) page[i] = v;
        const out = new Uint8Array(MAX_DELTA_BYTES);
        const n = encodeDelta(old, 0, page, out, 0, MAX_DELTA_BYTES);
        if (n < 0) return; // too many changes for a delta
        const back = old.slice();
        applyDelta(back, out.subarray(0, n));
        expectEqual(back, page);
        expectIs(n === 0, changes.every(([i]) => page[i] === old[i]));
      }),
    );
  });

  it("refuses a delta that runs outside the page or ends inside a header", () => {
    const page = new Uint8Array(PAGE_SIZE);
    expect(() => applyDelta(page, new Uint8Array([0xff, 0x1f, 4, 1, 2, 3, 4]))).toThrow(/outside the page/);
    expect(() => applyDelta(page, new Uint8Array([3]))).toThrow(/inside a run header/);
    expect(() => applyDelta(page, new Uint8Array([0, 0]))).toThrow(/outside the page/);
    expect(() => applyDelta(page, new Uint8Array([0x85, 0x00, 1, 7]))).toThrow(/malformed run length/);
  });

  it("sends a re-sent page as a delta when its old version is cached, and counts misses and overflows", () => {
    const enc = new XbzrleEncoder(2 * PAGE_SIZE); // two slots: pages 0 and 2 share one
    const a = new Uint8Array(PAGE_SIZE).fill(1);
    expect(enc.add(0, a, pageChecksum(a), false)).toBe(false); // first send
    const a2 = a.slice();
    a2[100] = 9;
    expect(enc.add(0, a2, pageChecksum(a2), true)).toBe(true);
    expect(enc.add(2, a, pageChecksum(a), false)).toBe(false); // evicts page 0
    expect(enc.add(0, a2, pageChecksum(a2), true)).toBe(false); // miss
    expect(enc.add(0, new Uint8Array(PAGE_SIZE).fill(5), 0, true)).toBe(false); // every byte changed
    expect(enc.stats).toMatchObject({ deltaPages: 1, cacheMisses: 1, overflows: 1 });
    expect(enc.stats.hitRate).toBeCloseTo(1 / 3);
    expect(enc.stats.bytesSaved).toBeGreaterThan(PAGE_SIZE - 10);
  });

  it("the destination applies a deltas frame only when its checksum matches", () => {
    const mem = new GuestMemory(16 * PAGE_SIZE);
    const old = new Uint8Array(PAGE_SIZE).fill(4);
    mem.writePage(3, old);
    const enc = new XbzrleEncoder();
    enc.add(3, old, pageChecksum(old), false);
    const next = old.slice();
    next.fill(8, 10, 50);
    enc.add(3, next, pageChecksum(next), true);
    const frame = enc.take(1, 0);
    const sums = new PageChecksums(16);
    const pairs = new Uint32Array(2 * 16);
    const scratch = new Uint8Array(PAGE_SIZE);
    expect(() => applyDeltas(mem, sums, pairs, scratch, { ...frame, crc: frame.crc ^ 1 })).toThrow(ProtocolError);
    expect(mem.page(3)).toEqual(old);
    applyDeltas(mem, sums, pairs, scratch, decode(encode(frame), { pageCount: 16 }) as typeof frame);
    expect(mem.page(3)).toEqual(next);
    expect(sums.crc(3)).toBe(pageChecksum(next));
  });
});

describe("pre-copy stop conditions", () => {
  const limits = { downtimeLimitMs: 50, maxRounds: 10, maxDataBytes: 3 * MiB, minDirtyPages: 16 };
  const round = { rounds: 2, expectedDowntimeMs: 400, sentBytes: MiB, dirtyPages: 500 };

  it("name the first rule that holds, and nothing while none does", () => {
    const stop = new StopConditions(limits);
    expect(stop.check(round)).toBeUndefined();
    expect(stop.check({ ...round, expectedDowntimeMs: 50 })).toBe("downtime");
    expect(stop.check({ ...round, rounds: 10 })).toBe("max-rounds");
    expect(stop.check({ ...round, sentBytes: 3 * MiB })).toBe("max-data");
    expect(stop.check({ ...round, dirtyPages: 16 })).toBe("min-dirty");
    expect(new StopConditions({ ...limits, downtimeLimitMs: 0 }).check({ ...round, expectedDowntimeMs: 0 })).toBeUndefined();
  });

  it("refuse limits that mean nothing", () => {
    expect(() => new StopConditions({ ...limits, maxRounds: 0 })).toThrow(RangeError);
    expect(() => new StopConditions({ ...limits, maxDataBytes: 0 })).toThrow(RangeError);
    expect(() => new StopConditions({ ...limits, minDirtyPages: -1 })).toThrow(RangeError);
  });
});

describe("the model per technique", () => {
  const input = { memoryBytes: 64 * MiB, bandwidth: 32 * MiB, dirtyRate: 16 * MiB, downtimeLimitMs: 50, maxRounds: 3 };

  it("stop-and-copy is all downtime, post-copy none, both send memory once", () => {
    expect(predictTechnique("stop-and-copy", input)).toMatchObject({ rounds: 0, totalMs: 2000, downtimeMs: 2000, dataBytes: 64 * MiB });
    expect(predictTechnique("postcopy", input)).toMatchObject({ rounds: 0, totalMs: 2000, downtimeMs: 0, dataBytes: 64 * MiB });
    expect(predictTechnique("precopy", input)).toEqual(predict(input));
  });

  it("hybrid sends k pre-copy rounds that halve here, then what is left by post-copy", () => {
    const p = predictTechnique("hybrid", input);
    expect(p.roundBytes).toEqual([64 * MiB, 32 * MiB, 16 * MiB, 8 * MiB]);
    expect(p).toMatchObject({ rounds: 3, dataBytes: 120 * MiB, totalMs: 3750, downtimeMs: 0 });
  });
});

describe("technique messages", () => {
  const bounds = { pageCount: 100 };
  const valid: Message[] = [
    { t: "handoff", batches: 3, missing: new Uint8Array(13), cpu: new Uint8Array([1]), devices: new Uint8Array([2]), digest: new Uint8Array(32) },
    { t: "fault", page: 7 },
    { t: "complete", batches: 9, memoryDigest: new Uint8Array(32) },
    { t: "received", faults: 3, blockedUs: 900, latencyMedianUs: 250, latencyP99Us: 400 },
    { t: "deltas", round: 1, seq: 4, pages: [2, 9], lengths: [3, 2], data: new Uint8Array(5), crc: 1 },
  ];

  it.each(valid.map((m) => [m.t, m] as const))("%s survives encode → decode", (_t, m) => {
    expect(decode(encode(m), bounds)).toMatchObject({ t: m.t });
  });

  it("are checked against the memory and their own sizes", () => {
    const refuses = (m: Message, change: Record<string, unknown>, pattern: RegExp): void => {
      expect(() => decode(pack({ ...m, ...change }), bounds)).toThrow(pattern);
    };
    const [handoff, , complete, , deltas] = valid;
    refuses(handoff, { missing: new Uint8Array(12) }, /handoff.missing: expected 13 bytes/);
    expect(() => decode(encode(handoff))).toThrow(/before the memory size/);
    refuses(complete, { memoryDigest: new Uint8Array(31) }, /complete.memoryDigest/);
    refuses(deltas, { pages: [9, 2] }, /out of order/);
    refuses(deltas, { pages: [2, 100] }, /outside guest memory/);
    refuses(deltas, { lengths: [3, 3] }, /not the sum/);
    refuses(deltas, { lengths: [3, 0] }, /deltas.lengths/);
    refuses(deltas, { lengths: [3, MAX_DELTA_BYTES + 1] }, /deltas.lengths/);
    refuses(valid[1], { page: -1 }, /fault.page/);
  });
});

describe("the comparison", () => {
  const row = (technique: CompareRow["technique"], x: number, totalMs: number, downtimeMs: number): CompareRow => ({
    setting: `dirty-rate=${x}M`,
    x,
    technique,
    status: "completed",
    totalMs,
    downtimeMs,
    dataBytes: 5 * MiB,
    rounds: 2,
    faults: technique === "postcopy" ? 12 : 0,
    blockedMs: 0,
    throttlePercent: 0,
    predicted: { totalMs: totalMs * 0.9, downtimeMs, dataBytes: 5 * MiB },
    digestEqual: technique !== "hybrid",
  });
  const rows = [row("precopy", 0, 900, 40), row("postcopy", 0, 600, 5), row("precopy", 1, 3000, 250), row("postcopy", 1, 650, 6), row("hybrid", 1, 1200, 7)];

  it("prints one aligned line per run with the model beside the measurement", () => {
    const lines = formatComparison(rows).split("\n");
    expect(lines).toHaveLength(6);
    expect(lines[0]).toMatch(/^setting\s+technique\s+total\s+downtime\s+data\s+rounds/);
    expect(new Set(lines.map((l) => l.length)).size).toBe(1);
    expect(lines[2]).toMatch(/dirty-rate=0M\s+postcopy\s+600 ms\s+5\.00 ms\s+5\.00 MiB\s+2 .* 12 .* 540 ms .* equal$/);
    expect(lines[5]).toMatch(/DIFFERS$/);
  });

  it("charts a line of total time and one of downtime per technique", () => {
    const svg = comparisonChartSvg(rows, { xLabel: "dirty rate", formatX: (x) => `${x}M`, fixed: "8.00 MiB guest", downtimeLimitMs: 300 });
    expect(svg.match(/<polyline /g)).toHaveLength(6);
    expect(svg.match(/<polyline [^>]*stroke-dasharray/g)).toHaveLength(3);
    expect(svg).toContain("postcopy, dirty-rate=1M: total 650 ms");
    expect(svg).toContain(">1M</text>");
  });
});
