// The SVG charts as a reader checks them: round 1-2-5 tick values, labelled axes with units,
// one unit per axis, the downtime limit drawn, every line visible, the fixed settings in the
// title; and the report's flag on a downtime over the limit.

import { describe, expect, it } from "vitest";
import { linearTicks, logTicks } from "../src/migrate/report/axis.js";
import { comparisonChartSvg } from "../src/migrate/report/compare-chart.js";
import { formatReport, roundChartSvg } from "../src/migrate/report/report.js";
import { newReport, type MigrationReport, type RoundStat } from "../src/migrate/report/metrics.js";
import type { CompareRow } from "../src/migrate/run/compare.js";

/** Whether v is 1, 2 or 5 times a power of ten (or zero). */
function roundValue(v: number): boolean {
  if (v === 0) return true;
  const mantissa = v / 10 ** Math.floor(Math.log10(v) + 1e-9);
  return [1, 2, 5].some((m) => Math.abs(mantissa - m) < 1e-9);
}

/** The tick labels of the axis whose text anchor is `anchor` (left axis: end, right axis: start). */
function tickLabels(svg: string, anchor: "end" | "start"): number[] {
  return [...svg.matchAll(new RegExp(`<text class="tick" [^>]*text-anchor="${anchor}">([^<]*)</text>`, "g"))].map((m) => Number(m[1].replace(/,/g, "")));
}

function stat(round: number, pages: number, dirtiedPages: number, expectedDowntimeMs: number, stopAndCopy = false): RoundStat {
  return { round, stopAndCopy, pages, zeroPages: 0, bytes: pages * 4096, durationMs: 10, dirtiedPages, expectedDowntimeMs, throttlePercent: 0 };
}

function report(): MigrationReport {
  const r = newReport("uniform", 64 << 20, 300, 2 ** 27);
  r.status = "completed";
  r.downtimeMs = 412;
  r.downtimeOverLimit = true;
  r.totalMs = 1234;
  r.rounds = 3;
  r.roundStats = [stat(0, 16384, 6827, 1100), stat(1, 6827, 3414, 520), stat(2, 3414, 1707, 340), stat(3, 1707, 0, 0, true)];
  return r;
}

describe("tick values", () => {
  it("linear ticks are 1-2-5 steps from 0 past the maximum", () => {
    for (const max of [1, 7, 6827, 16384, 0.37, 1e6 + 1]) {
      const ticks = linearTicks(max);
      expect(ticks[0]).toBe(0);
      expect(ticks[ticks.length - 1]).toBeGreaterThanOrEqual(max);
      const step = ticks[1] - ticks[0];
      expect(roundValue(step), `step ${step} for ${max}`).toBe(true);
      expect(ticks.every((t, i) => Math.abs(t - i * step) < step * 1e-9)).toBe(true);
    }
  });

  it("logarithmic ticks are 1, 2 and 5 in each decade", () => {
    expect(logTicks(1, 1000)).toEqual([1, 2, 5, 10, 20, 50, 100, 200, 500, 1000]);
    expect(logTicks(0.1, 1e4)).toEqual([0.1, 1, 10, 100, 1000, 10000]);
  });
});

describe("the per-round chart", () => {
  const svg = roundChartSvg(report());

  it("has round tick values on both axes, not fractions of the largest bar", () => {
    const pages = tickLabels(svg, "end");
    const ms = tickLabels(svg, "start");
    expect(pages.length).toBeGreaterThan(2);
    expect(ms.length).toBeGreaterThan(2);
    expect(pages).not.toContain(6827);
    // Evenly spaced, from 0, in a 1-2-5 step.
    expect(pages[0]).toBe(0);
    expect(new Set(pages.slice(1).map((v, i) => v - pages[i])).size).toBe(1);
    expect(new Set(ms.slice(1).map((v, i) => v - ms[i])).size).toBe(1);
    expect(roundValue(pages[1] - pages[0])).toBe(true);
    expect(roundValue(ms[1] - ms[0])).toBe(true);
  });

  it("labels its axes with their units", () => {
    expect(svg).toMatch(/class="axis-label"[^>]*>pages \(4\.00 KiB each\)</);
    expect(svg).toMatch(/class="axis-label"[^>]*>downtime \(ms\)</);
    expect(svg).toMatch(/class="axis-label"[^>]*>round \(pre-copy rounds, then stop-and-copy\)</);
  });

  it("draws the downtime limit and the measured downtime, flagged over it", () => {
    expect(svg).toMatch(/<line class="downtime-limit"/);
    expect(svg).toContain("downtime limit 300 ms");
    expect(svg).toContain("<title>measured downtime 412 ms</title>");
    expect(svg).toContain("OVER THE LIMIT");
  });
});

describe("the comparison chart", () => {
  const row = (technique: CompareRow["technique"], x: number, totalMs: number, downtimeMs: number): CompareRow => ({
    setting: `working-set=${x}`,
    x,
    technique,
    status: "completed",
    totalMs,
    downtimeMs,
    dataBytes: 1,
    rounds: 1,
    faults: 0,
    blockedMs: 0,
    throttlePercent: 0,
    digestEqual: true,
  });
  // Post-copy and hybrid take the same time here: their lines coincide.
  const rows = [0, 1, 2].flatMap((x) => [row("precopy", x, 900 + x * 4000, 40), row("postcopy", x, 700, 5), row("hybrid", x, 700, 5)]);
  const svg = comparisonChartSvg(rows, { xLabel: "working-set", formatX: (x) => ["8.00 MiB", "16.0 MiB", "32.0 MiB"][x], fixed: "64.0 MiB guest, uniform workload, apic interrupts", downtimeLimitMs: 300 });

  it("uses one time unit, named on the axis, with 1-2-5 ticks", () => {
    expect(svg).toMatch(/class="axis-label"[^>]*>time \(ms, logarithmic\)</);
    const ticks = tickLabels(svg, "end");
    expect(ticks.every(roundValue)).toBe(true);
    expect(svg).not.toMatch(/class="tick"[^>]*>[^<]*\b(ms|s)</);
  });

  it("switches the whole axis to seconds when times run past 10 s", () => {
    const slow = comparisonChartSvg([row("precopy", 0, 42_000, 50)], { xLabel: "memory", formatX: () => "1 GiB", fixed: "", downtimeLimitMs: 300 });
    expect(slow).toMatch(/time \(s, logarithmic\)/);
    expect(tickLabels(slow, "end")).toContain(100);
  });

  it("puts the fixed settings in the title and draws the downtime limit", () => {
    expect(svg).toContain("Total migration time and downtime against working-set");
    expect(svg).toContain("64.0 MiB guest, uniform workload, apic interrupts");
    expect(svg).toMatch(/<line class="downtime-limit"/);
    expect(svg).toContain("downtime limit 300 ms");
  });

  it("keeps coinciding lines apart: each technique has its own points and marker", () => {
    const points = (t: string) => [...svg.matchAll(new RegExp(`<path transform="translate\\(([\\d.]+) ([\\d.]+)\\)" d="([^"]+)"[^>]*><title>${t},`, "g"))].map((m) => ({ x: m[1], y: m[2], d: m[3] }));
    const post = points("postcopy");
    const hybrid = points("hybrid");
    expect(post).toHaveLength(6);
    expect(hybrid).toHaveLength(6);
    for (let i = 0; i < post.length; i++) expect(post[i].x).not.toBe(hybrid[i].x);
    expect(post[0].d).not.toBe(hybrid[0].d);
  });
});

describe("the text report", () => {
  it("flags a downtime over the limit", () => {
    expect(formatReport(report())).toMatch(/downtime +412 ms {2}\(expected [^)]*, limit 300 ms\) {2}OVER THE LIMIT by 112 ms/);
    const within = { ...report(), downtimeMs: 200, downtimeOverLimit: false };
    expect(formatReport(within)).not.toMatch(/OVER THE LIMIT/);
  });
});
