// A replay's report stays the same size however many migrations the trace asks for: a count,
// the extremes, a median and the first few in detail (a spread of every migration into
// Math.min overflowed the stack at ~130 000, and memory grew with each one).

import { describe, expect, it } from "vitest";
import { formatReport } from "../src/cli/replay.js";
import { defaultHeader, makeEvent, Op, type TraceEvent } from "../src/trace/event.js";
import { replayEvents } from "../src/trace/replay.js";

const MIGRATIONS = process.env.DEEP ? 140_000 : 1_000;

function* migrations(n: number): Generator<TraceEvent> {
  yield makeEvent({ op: Op.Outb, time: 0, a: 0x20, b: 0x11 });
  for (let i = 1; i <= n; i++) yield makeEvent({ op: Op.Migrate, time: i });
}

describe("replay report", () => {
  it(`summarises ${MIGRATIONS} migrations in bounded space and prints them`, async () => {
    const report = await replayEvents(defaultHeader(), migrations(MIGRATIONS), { keepMigrations: 10 });
    const m = report.migrations;
    expect(m.count).toBe(MIGRATIONS);
    expect(m.first).toHaveLength(10);
    expect(m.first.map((s) => s.timeNs)).toEqual([1, 2, 3, 4, 5, 6, 7, 8, 9, 10]);
    expect(m.recordBytes.min).toBeGreaterThan(0);
    expect(m.recordBytes.max).toBeGreaterThanOrEqual(m.recordBytes.min);
    expect(m.timeUs.median).toBeGreaterThan(0);
    expect(m.timeUs.max).toBeGreaterThanOrEqual(m.timeUs.median);
    expect(JSON.stringify(report).length).toBeLessThan(10_000);
    expect(formatReport("many.trace", report)).toMatch(new RegExp(`migrations     ${MIGRATIONS.toLocaleString("en-US")}: record \\d+–\\d+ bytes, capture \\+ reconstruct median \\d+ µs \\(max \\d+ µs\\)`));
  }, 300_000);
});
