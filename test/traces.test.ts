// Every trace in traces/ replays with zero mismatches: the hand-written scenarios under each
// policy and migrated after every single event, the real boots migrated at fifty or more evenly
// spaced points, and the compiled form gives the same report as the text.

import { mkdtemp, readdir, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { POLICIES } from "../src/core/machine.js";
import { compileTrace } from "../src/trace/compiled.js";
import { Check, Op, type TraceEvent } from "../src/trace/event.js";
import { readTraceFile } from "../src/trace/reader.js";
import { replayCompiled, replayEvents, type Mismatch } from "../src/trace/replay.js";

const SCENARIOS = join(import.meta.dirname, "..", "traces", "scenarios");
const QEMU = join(import.meta.dirname, "..", "traces", "qemu");
const MIGRATION_POINTS = 50;
const APIC_SCENARIO = "apic-timer-ioapic.trace";
const LAPIC_CURRENT_COUNT = 0xfee00390;
const LAPIC_ISR_1 = 0xfee00110;
const LAPIC_LVT_TIMER = 0xfee00320;

let dir: string;
beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), "blmv-traces-"));
});
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

async function traces(folder: string, suffix: string): Promise<string[]> {
  return (await readdir(folder)).filter((n) => n.endsWith(suffix)).map((n) => join(folder, n));
}

describe("hand-written scenarios", async () => {
  const files = await traces(SCENARIOS, ".trace");

  it("exist for each device family", () => {
    expect(files.length).toBeGreaterThanOrEqual(3);
  });

  it.each(POLICIES)("replay with zero mismatches and every expectation checked (policy %s)", async (policy) => {
    for (const file of files) {
      const { header, events } = await readTraceFile(file);
      const report = await replayEvents(header, events, { policy });
      expect({ file, mismatches: report.mismatches }).toEqual({ file, mismatches: [] });
      expect(report.checked).toBeGreaterThan(10);
      const migrations = events.filter((e) => e.op === Op.Migrate).length;
      expect(report.migrations.length + report.migrationsRefused).toBe(migrations);
    }
  });

  it("replay with zero mismatches when migrated after every event", async () => {
    for (const file of files.filter((f) => !f.endsWith(APIC_SCENARIO))) {
      const { header, events } = await readTraceFile(file);
      const report = await replayEvents(header, events, { policy: "blmvisor", every: 1 });
      expect({ file, mismatches: report.mismatches }).toEqual({ file, mismatches: [] });
      expect(report.migrations.length).toBeGreaterThanOrEqual(events.length);
    }
  });

  it("the APIC scenario, migrated after every event, differs only where the timer-phase exception allows", async () => {
    // Exception (assembly/hypervisor/apic-state.ts): the divided clock's phase within a period
    // cannot be read, so a timer rebuilt mid-period (divide 16: a 16 ns period) runs up to one
    // period late. Only the timer's own outcomes may differ: its current count, its interrupt
    // (and the ISR bit it sets). Everything else must still match.
    const { header, events } = await readTraceFile(join(SCENARIOS, APIC_SCENARIO));
    const report = await replayEvents(header, events, { policy: "blmvisor", every: 1, keepMismatches: Infinity });
    const timerLines = new Set(events.filter((e) => e.op === Op.Inta || (e.op === Op.Readl && (e.a === LAPIC_CURRENT_COUNT || e.a === LAPIC_ISR_1))).map((e) => e.line));
    expect(report.mismatches.filter((m) => !timerLines.has(m.line))).toEqual([]);
    expect(report.mismatchCount).toBeLessThan(timerLines.size);
  });
});

describe("real boots", async () => {
  const files = await traces(QEMU, ".trace.gz");

  it.each(["blmvisor", "full"] as const)(`migrated at ${MIGRATION_POINTS}+ evenly spaced points, differ only where the APIC timer-phase exception allows (policy %s)`, async (policy) => {
    // One documented exception (README, "What cannot be rebuilt exactly") remains for these
    // traces: the local APIC timer's phase inside a divided period, so a timer interrupt may
    // come one acknowledge later. Nothing else may differ — every PIT count included.
    expect(files.length).toBe(6);
    for (const file of files) {
      const { header, events } = await readTraceFile(file);
      const every = Math.max(1, Math.floor(events.length / (MIGRATION_POINTS + 1)));
      const report = await replayEvents(header, events, { policy, every, keepMismatches: Infinity });
      const timerVectors = new Set(events.filter((e) => e.op === Op.Writel && e.a === LAPIC_LVT_TIMER).map((e) => `0x${(e.b & 0xff).toString(16)}`));
      const allowed = (m: Mismatch) => m.op === "inta" && (timerVectors.has(m.expected) || timerVectors.has(m.actual));
      expect({ file, unexplained: report.mismatches.filter((m) => !allowed(m)).slice(0, 3) }).toEqual({ file, unexplained: [] });
      expect(report.migrations.length).toBeGreaterThanOrEqual(MIGRATION_POINTS);
    }
  });

  it("timed traces check nearly every read", async () => {
    for (const file of files.filter((f) => f.endsWith(".timed.trace.gz"))) {
      const { header, events } = await readTraceFile(file);
      const report = await replayEvents(header, events, { policy: "blmvisor" });
      expect(report.checked - countIntas(events)).toBeGreaterThanOrEqual(0.99 * report.reads);
    }
  });

  it("compiled traces replay inside the core with the same report as the text", async () => {
    for (const file of files) {
      const compiled = join(dir, file.split("/").pop()!.replace(".trace.gz", ".btrace"));
      await compileTrace(file, compiled);
      const { header, events } = await readTraceFile(file);
      const every = Math.floor(events.length / 7);
      const text = await replayEvents(header, events, { policy: "blmvisor", every });
      const fast = await replayCompiled(compiled, { policy: "blmvisor", every });
      const summary = (r: typeof text) => ({ events: r.events, reads: r.reads, checked: r.checked, mismatches: r.mismatchCount, interrupts: r.interrupts, exits: r.exits.byReason, migrations: r.migrations.length });
      expect(summary(fast)).toEqual(summary(text));
    }
  });
});

function countIntas(events: TraceEvent[]): number {
  return events.filter((e) => e.op === Op.Inta && e.check !== Check.None).length;
}
