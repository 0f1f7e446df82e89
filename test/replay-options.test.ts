// `replay` refuses migration points it cannot carry out — any under policy none, a label the
// trace never marks, an event number past its end — with exit code 2 and the reason.

import { describe, expect, it } from "vitest";
import { Op } from "../src/trace/event.js";
import { readTraceFile } from "../src/trace/reader.js";
import { MigrationRequestError, replayEvents } from "../src/trace/replay.js";
import { runCli } from "./migrate-harness.js";

const PIC = "traces/scenarios/pic-priority.trace";

describe("replay migration points that cannot be carried out", () => {
  it("policy none with any migration point is refused before replaying", async () => {
    for (const points of [["--migrate-every", "1"], ["--migrate-at", "5"], ["--migrate-at", "poll"]]) {
      const run = await runCli(["replay", PIC, "--policy", "none", ...points]);
      expect({ points, code: run.code }).toEqual({ points, code: 2 });
      expect(run.stderr).toMatch(/^blmv: replay: policy "none" keeps no shadow of the write-only PIC and PIT state, so no migration can be carried out/m);
      expect(run.stdout).toBe("");
    }
    const { header, events } = await readTraceFile(PIC);
    await expect(replayEvents(header, events, { policy: "none", every: 1 })).rejects.toThrow(MigrationRequestError);
  });

  it("a label the trace never marks and an event number past its end are errors naming them", async () => {
    const { events } = await readTraceFile(PIC);
    const run = await runCli(["replay", PIC, "--migrate-at", "no-such-label", "--migrate-at", String(events.length + 1), "--migrate-at", "poll"]);
    expect(run.code).toBe(2);
    expect(run.stderr).toContain("--migrate-at no-such-label: the trace has no 'mark no-such-label'");
    expect(run.stderr).toContain(`--migrate-at ${events.length + 1}: past the end of the trace (${events.length} events)`);
    expect(run.stderr).not.toContain("--migrate-at poll");
  });

  it("points the trace reaches are carried out, including one after the last event", async () => {
    const { header, events } = await readTraceFile(PIC);
    const report = await replayEvents(header, events, { atLabels: ["poll", "cascade"], afterEvents: [events.length] });
    const inTrace = events.filter((e) => e.op === Op.Migrate).length;
    expect(report.migrationPointsMissed).toEqual([]);
    expect(report.migrations.count).toBe(inTrace + 3);
    const run = await runCli(["replay", PIC, "--migrate-at", "poll", "--migrate-at", String(events.length)]);
    expect({ code: run.code, stderr: run.stderr }).toEqual({ code: 0, stderr: "" });
    expect(run.stdout).toMatch(new RegExp(`^migrations {5}${inTrace + 2}: `, "m"));
  });

  it("a --migrate-every longer than the trace is an error too: no migration would happen", async () => {
    const { header, events } = await readTraceFile(PIC);
    const report = await replayEvents(header, events, { every: events.length + 1 });
    expect(report.migrationPointsMissed).toEqual([`--migrate-every ${events.length + 1}: the trace has only ${events.length} events, so no migration happened`]);
    const run = await runCli(["replay", PIC, "--migrate-every", String(events.length + 1)]);
    expect(run.code).toBe(2);
  });
});
