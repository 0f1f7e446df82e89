// One destination process receiving eight different guests at once from eight live sources:
// each guest must end on the destination with its own digest (nothing mixed up between
// sessions), and the destination's memory stays within what the guests need. A guest beyond the
// memory budget is refused until room is given back.

import { readFileSync } from "node:fs";
import { afterEach, describe, expect, it } from "vitest";
import { referenceDigest, type GuestRunSpec } from "../src/migrate/run/guest-run.js";
import { bootAndMigrate } from "../src/migrate/run/run.js";
import { Destination, killChildren } from "./migrate-harness.js";

const MiB = 2 ** 20;
const MS = 1_000_000;

afterEach(killChildren);

/** Peak resident memory of a process, from /proc. */
function peakRss(pid: number): number {
  const line = readFileSync(`/proc/${pid}/status`, "utf8").split("\n").find((l) => l.startsWith("VmHWM:"))!;
  return Number(line.split(/\s+/)[1]) * 1024;
}

describe("several migrations into one destination", () => {
  it("eight guests at once each end with their own digest", async () => {
    const specs: GuestRunSpec[] = ["idle", "uniform", "hot", "scan"].flatMap((workload, i) =>
      (["pic", "apic"] as const).map((interrupts, j) => ({ workload, interrupts, memoryBytes: (4 + 2 * j) * MiB, seed: 100 + 2 * i + j, endNs: 400 * MS })),
    );
    const totalBytes = specs.reduce((a, s) => a + s.memoryBytes, 0);
    const dest = await Destination.start("t", ["--memory-budget", `${totalBytes / MiB}M`]);
    const idleRss = peakRss(dest.child.pid!);
    const results = await Promise.all(specs.map((s) => bootAndMigrate(s, { url: dest.url, token: dest.token, migrateAtNs: 100 * MS })));
    const references = specs.map(referenceDigest);
    expect(new Set(references).size).toBe(specs.length);
    results.forEach(({ report }, i) => {
      expect(report.status).toBe("completed");
      expect(report.destination?.digest).toBe(references[i]);
    });
    // The destination reports each finished guest under its own workload with its own digest.
    for (let i = 0; i < specs.length; i++) await dest.waitFor((e) => e.event === "finished" && e.digest === references[i] && e.workload === specs[i].workload);
    // All eight were under way at the same time: every session began before the first guest finished.
    const firstFinished = dest.events.findIndex((e) => e.event === "finished");
    expect(dest.events.slice(0, firstFinished).filter((e) => e.event === "session")).toHaveLength(specs.length);
    const grew = peakRss(dest.child.pid!) - idleRss;
    console.log(`8 concurrent migrations: ${totalBytes / MiB} MiB of guests; destination peak RSS grew by ${(grew / MiB).toFixed(1)} MiB`);
    // Bounded by what the guests need: their memory, plus a fixed cost per session (staging, a core instance).
    expect(grew).toBeLessThan(2 * totalBytes + specs.length * 8 * MiB);
  }, 60_000);

  it("a guest that does not fit the memory budget is refused as busy, and fits once the other is gone", async () => {
    const spec: GuestRunSpec = { workload: "idle", interrupts: "apic", memoryBytes: 8 * MiB, seed: 3, endNs: 300 * MS };
    const dest = await Destination.start("t", ["--memory-budget", "12M"]);
    // The first guest runs on at the destination for seconds, so it still holds its memory
    // when the second arrives, however slowly the machine boots that one.
    const first = bootAndMigrate({ ...spec, endNs: 3000 * MS }, { url: dest.url, token: dest.token, migrateAtNs: 100 * MS });
    await dest.waitFor((e) => e.event === "ready");
    const second = await bootAndMigrate({ ...spec, seed: 4 }, { url: dest.url, token: dest.token, migrateAtNs: 100 * MS });
    expect(second.report).toMatchObject({ status: "failed", failedAt: "prepared", error: { code: "busy", message: expect.stringMatching(/does not fit: 8388608 of 12582912 bytes are held/) } });
    expect((await first).report.status).toBe("completed");
    await dest.waitFor((e) => e.event === "finished");
    const third = await bootAndMigrate({ ...spec, seed: 5 }, { url: dest.url, token: dest.token, migrateAtNs: 100 * MS });
    expect(third.report.status).toBe("completed");
    expect(third.report.destination?.digest).toBe(referenceDigest({ ...spec, seed: 5 }));
  }, 30_000);
});
