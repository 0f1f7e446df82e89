// The a-priori model's arithmetic (src/migrate/report/forecast.ts): its limits, the working
// set's saturation, the source's stop and throttle rules played forward, the kernel link's rate.

import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { distinctPagesDirtied, forecast, tcpPayloadBytesPerSecond, type ForecastInput } from "../src/migrate/report/forecast.js";

const MiB = 2 ** 20;
const PAGE = 4096;

/** 64 MiB of data pages and 64 MiB of zero pages over a 100 MiB/s link, 16 MiB working set. */
function input(over: { dirty?: number; ws?: number; link?: number; cost?: Partial<ForecastInput["cost"]>; stop?: Partial<ForecastInput["stop"]> } = {}): ForecastInput {
  return {
    dataPages: (64 * MiB) / PAGE,
    zeroPages: (64 * MiB) / PAGE,
    pageSize: PAGE,
    workload: { dirtyBytesPerSecond: over.dirty ?? 0, workingSetBytes: over.ws ?? 16 * MiB, pattern: "uniform" },
    link: { bytesPerSecond: over.link ?? 100 * MiB, denseBytesPerPage: PAGE, sparseBytesPerPage: PAGE },
    cost: { fixedMs: 50, fixedDowntimeMs: 10, zeroPageMs: 0, dataPageMs: 0, resentPageMs: 0, ...over.cost },
    stop: { downtimeLimitMs: 300, maxRounds: 30, maxDataBytes: Infinity, minDirtyPages: 0, autoConverge: true, ...over.stop },
  };
}

describe("a-priori model", () => {
  it("with a guest that dirties nothing: one round, M/B plus the fixed cost", () => {
    const f = forecast(input());
    expect(f.rounds).toHaveLength(1);
    expect(f.stopReason).toBe("downtime");
    expect(f.stopCopyPages).toBe(0);
    expect(f.totalMs).toBeCloseTo(50 + 640);
    expect(f.downtimeMs).toBeCloseTo(10);
    expect(f.throttleSteps).toBe(0);
    expect(f.convergesUnthrottled).toBe(true);
  });

  it("charges zero pages only their own cost, and pages the processes' own cost when that, not the link, sets the pace", () => {
    expect(forecast(input({ cost: { zeroPageMs: 0.001 } })).totalMs).toBeCloseTo(50 + 640 + 16.384);
    // 0.1 ms a page is 40 MiB/s: slower than the link, so the pages take that.
    expect(forecast(input({ cost: { dataPageMs: 0.1 } })).totalMs).toBeCloseTo(50 + 1638.4);
    // Pages sent again cost their own figure: 8 MiB/s over round 0's 640 ms leaves ~1100 pages for the stop-and-copy, at 0.2 ms each.
    const slowResend = forecast(input({ dirty: 8 * MiB, cost: { resentPageMs: 0.2 } }));
    expect(slowResend.stopCopyPages).toBeGreaterThan(1000);
    expect(slowResend.downtimeMs).toBeCloseTo(10 + slowResend.stopCopyPages * 0.2);
    // A cost below the link's is hidden under it.
    expect(forecast(input({ link: 10 * MiB, cost: { dataPageMs: 0.3 } })).totalMs).toBeCloseTo(50 + 6400);
  });

  it("counts the distinct pages of uniform writes with the saturating curve, not linearly", () => {
    const ws = 1000;
    expect(distinctPagesDirtied(0, ws, "uniform")).toBe(0);
    expect(distinctPagesDirtied(1, ws, "uniform")).toBeCloseTo(1, 2);
    expect(distinctPagesDirtied(ws, ws, "uniform")).toBeCloseTo(ws * (1 - Math.exp(-1)));
    expect(distinctPagesDirtied(100 * ws, ws, "uniform")).toBeCloseTo(ws);
    expect(distinctPagesDirtied(500, ws, "scan")).toBe(500);
    expect(distinctPagesDirtied(5000, ws, "scan")).toBe(ws);
  });

  it("sends next what the guest dirtied during the round before", () => {
    // 8 MiB/s for round 0's 640 ms: 1280 writes over 4096 pages.
    const f = forecast(input({ dirty: 8 * MiB }));
    const writes = ((8 * MiB) / PAGE) * 0.64;
    expect(f.rounds[0].dirtiedPages).toBeCloseTo(4096 * (1 - Math.exp(-writes / 4096)));
    expect(f.stopCopyPages).toBe(f.rounds[f.rounds.length - 1].dirtiedPages);
    const sent = f.rounds.reduce((a, r) => a + r.durationMs, 0) + (f.stopCopyPages * PAGE * 1000) / (100 * MiB);
    expect(f.totalMs).toBeCloseTo(50 + sent);
  });

  it("calls a dirty rate above the link non-converging without a throttle, and the throttle brings it in", () => {
    // A working set of 64 MiB takes 640 ms to send, twice the limit: above the link's rate the
    // rounds settle where V = ws·(1 − e^(−(d/B)·V/ws)), above the limit's pages.
    for (const factor of [1.5, 4]) {
      const f = forecast(input({ dirty: factor * 100 * MiB, ws: 64 * MiB }));
      expect(f.convergesUnthrottled, `${factor}× link`).toBe(false);
      expect(f.throttleSteps, `${factor}× link`).toBeGreaterThan(0);
      expect(f.stopReason).toBe("downtime");
      const unthrottled = forecast(input({ dirty: factor * 100 * MiB, ws: 64 * MiB, stop: { autoConverge: false } }));
      expect(unthrottled.stopReason).toBe("max-rounds");
      expect(unthrottled.rounds).toHaveLength(30);
      expect(unthrottled.downtimeMs).toBeGreaterThan(300);
    }
  });

  it("at exactly the link's rate, converges only through the working set's saturation: slowly, or not before the round cap", () => {
    // Vₙ₊₁ = ws·(1 − e^(−Vₙ/ws)) shrinks by about Vₙ²/2ws a round: under 30 MiB (300 ms at 100 MiB/s) from 64 MiB in two rounds…
    const fast = forecast(input({ dirty: 100 * MiB, ws: 64 * MiB, cost: { fixedDowntimeMs: 0 }, stop: { autoConverge: false } }));
    expect(fast.stopReason).toBe("downtime");
    expect(fast.rounds).toHaveLength(2);
    // …but not to 3 MiB (300 ms at 10 MiB/s) within 30 rounds.
    const slow = forecast(input({ dirty: 10 * MiB, ws: 64 * MiB, link: 10 * MiB }));
    expect(slow.convergesUnthrottled).toBe(false);
  });

  it("counts the pause's fixed part in the stop rule, as the source does", () => {
    // The second round leaves a little under 30 MiB: 300 ms of pages fit the limit alone, not beside 10 ms more.
    const bare = forecast(input({ dirty: 100 * MiB, ws: 64 * MiB, cost: { fixedDowntimeMs: 0 }, stop: { autoConverge: false } }));
    const fixed = forecast(input({ dirty: 100 * MiB, ws: 64 * MiB, cost: { fixedDowntimeMs: 10 }, stop: { autoConverge: false } }));
    const left = bare.rounds[1].dirtiedPages * PAGE;
    expect(left / (100 * MiB)).toBeGreaterThan(0.29);
    expect(left / (100 * MiB)).toBeLessThanOrEqual(0.3);
    expect(bare.rounds).toHaveLength(2);
    expect(fixed.rounds.length).toBeGreaterThan(2);
    expect(fixed.stopReason).toBe("downtime");
    expect(fixed.downtimeMs).toBeLessThanOrEqual(300);
  });

  it("converges without a throttle when the whole working set fits the downtime limit, whatever the rate", () => {
    // 16 MiB goes in 160 ms, under the 300 ms limit.
    const f = forecast(input({ dirty: 1000 * MiB, ws: 16 * MiB }));
    expect(f.convergesUnthrottled).toBe(true);
    expect(f.rounds).toHaveLength(1);
    expect(f.downtimeMs).toBeLessThanOrEqual(10 + 300);
  });

  it("never ends pre-copy over the limit before the round cap, and never predicts less than the pages at link speed", () => {
    fc.assert(
      fc.property(
        fc.double({ min: 0, max: 4, noNaN: true }),
        fc.integer({ min: 1, max: 64 }),
        fc.integer({ min: 1, max: 30 }),
        (factor, wsMiB, maxRounds) => {
          const f = forecast(input({ dirty: factor * 100 * MiB, ws: wsMiB * MiB, stop: { maxRounds } }));
          expect(f.rounds.length).toBeLessThanOrEqual(maxRounds);
          if (f.stopReason === "downtime") expect(f.downtimeMs - 10).toBeLessThanOrEqual(300 * (1 + 1e-9));
          else expect(f.rounds).toHaveLength(maxRounds);
          expect(f.totalMs).toBeGreaterThanOrEqual(50 + 640 - 1e-6);
          for (const r of f.rounds.slice(1)) expect(r.pages).toBeLessThanOrEqual((wsMiB * MiB) / PAGE + 1e-9);
        },
      ),
    );
  });

  it("refuses a meaningless input", () => {
    expect(() => forecast(input({ link: 0 }))).toThrow(/link rate/);
    expect(() => forecast(input({ stop: { maxRounds: 0 } }))).toThrow(/round cap/);
    expect(() => forecast(input({ ws: 0 }))).toThrow(/working set/);
  });

  it("carries TCP payload over a shaped Ethernet link at (MTU − 52) / (MTU + 14) of its rate", () => {
    expect(tcpPayloadBytesPerSecond(100e6)).toBeCloseTo(12.5e6 * (1448 / 1514));
    expect(tcpPayloadBytesPerSecond(8e9, 9000)).toBeCloseTo(1e9 * (8948 / 9014));
  });
});
