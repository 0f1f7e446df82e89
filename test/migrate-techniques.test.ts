// Every migration technique between two real processes: the source is this test process, the
// destination a `blmv migrate listen` process. Each run must end, on the destination, with the
// digest of a run that was never migrated — post-copy included, whose guest runs on before its
// memory has arrived and faults on what is missing. And the post-copy failure rule: a link lost
// after the resume loses the guest on both sides, and neither resumes it.

import { existsSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import { referenceDigest, type GuestRunSpec } from "../src/migrate/run/guest-run.js";
import { bootAndMigrate, type LiveMigrationOptions } from "../src/migrate/run/run.js";
import type { CompareRow } from "../src/migrate/run/compare.js";
import { Destination, FaultProxy, killChildren, runCli, testToken } from "./migrate-harness.js";

const MiB = 2 ** 20;
const MS = 1_000_000;
const SPEC: GuestRunSpec = { workload: "uniform", interrupts: "apic", memoryBytes: 8 * MiB, workingSetBytes: 4 * MiB, seed: 5, endNs: 1200 * MS };

/** The digest of SPEC's run never migrated, computed the first time it is needed. */
const referenceOnce = ((): (() => string) => {
  let digest: string | undefined;
  return () => (digest ??= referenceDigest(SPEC));
})();

let proxy: FaultProxy | undefined;
afterEach(async () => {
  killChildren();
  await proxy?.close();
  proxy = undefined;
});

const link = (d: { url: string; token: string }, more: Partial<LiveMigrationOptions>): LiveMigrationOptions => ({ url: d.url, token: d.token, migrateAtNs: 100 * MS, ...more });

describe("migration techniques between two processes", () => {
  it("post-copy: the guest resumes at once, faults on pages not yet pushed, and ends as if never moved", async () => {
    const dest = await Destination.start();
    // 8 MiB over a 4 MiB/s link: the guest writes into pages for two seconds before the push reaches them.
    const { report, guest } = await bootAndMigrate(SPEC, link(dest, { technique: "postcopy", bandwidth: 4 * MiB }));
    expect(report.error).toBeUndefined();
    expect(report.status).toBe("completed");
    expect(report.destination?.digest).toBe(referenceOnce());
    expect(report.memoryDigest).toBe(guest.memory.digest());
    const p = report.postcopy!;
    expect(p.faults).toBeGreaterThan(5);
    expect(p.demandPages).toBeGreaterThan(0);
    expect(p.demandPages + p.prepagedPages + p.pushedPages).toBe(SPEC.memoryBytes / 4096);
    expect(p.blockedMs).toBeGreaterThan(0);
    expect(p.faultLatencyP99Ms).toBeGreaterThanOrEqual(p.faultLatencyMedianMs);
    expect(p.faultLatencyMedianMs).toBeGreaterThan(0);
    expect(report.rounds).toBe(0);
    // The guest stopped only for its CPU and device state: far less than the memory's transfer time.
    expect(report.downtimeMs).toBeLessThan(report.totalMs / 4);
    expect(report.model?.prediction.downtimeMs).toBe(0);
  });

  it("hybrid: a fixed number of pre-copy rounds, then post-copy for what they left", async () => {
    const dest = await Destination.start();
    const spec = { ...SPEC, dirtyBytesPerSecond: 16 * MiB };
    const { report } = await bootAndMigrate(spec, link(dest, { technique: "hybrid", hybridRounds: 2, bandwidth: 32 * MiB }));
    expect(report.status).toBe("completed");
    expect(report.rounds).toBe(2);
    expect(report.stopReason).toBe("max-rounds");
    expect(report.roundStats.map((s) => Boolean(s.postcopy))).toEqual([false, false, true]);
    expect(report.postcopy!.demandPages + report.postcopy!.prepagedPages + report.postcopy!.pushedPages).toBe(report.roundStats[2].pages + report.roundStats[2].zeroPages);
    expect(report.destination?.digest).toBe(referenceDigest(spec));
  });

  it("stop-and-copy: the guest is paused for the whole transfer", async () => {
    const dest = await Destination.start();
    const { report } = await bootAndMigrate(SPEC, link(dest, { technique: "stop-and-copy", bandwidth: 16 * MiB }));
    expect(report.status).toBe("completed");
    expect(report.rounds).toBe(0);
    expect(report.roundStats).toHaveLength(1);
    expect(report.roundStats[0].stopAndCopy).toBe(true);
    expect(report.downtimeMs).toBeGreaterThan((report.totalMs - report.setupMs) * 0.8);
    expect(report.destination?.digest).toBe(referenceOnce());
  });

  it("pre-copy with XBZRLE sends re-dirtied pages as deltas and without zero-page elision sends every byte", async () => {
    const dest = await Destination.start();
    const { report } = await bootAndMigrate(SPEC, link(dest, { xbzrle: true, zeroPages: false, bandwidth: 32 * MiB, downtimeLimitMs: 20 }));
    expect(report.status).toBe("completed");
    expect(report.rounds).toBeGreaterThanOrEqual(2);
    expect(report.xbzrle!.deltaPages).toBeGreaterThan(0);
    expect(report.xbzrle!.hitRate).toBeGreaterThan(0.5);
    expect(report.xbzrle!.bytesSaved).toBeGreaterThan(report.xbzrle!.deltaPages * 2048);
    expect(report.pages.zero).toBe(0);
    expect(report.destination?.digest).toBe(referenceOnce());
  });

  it("pre-copy stops on the data cap and says so", async () => {
    const dest = await Destination.start();
    const spec = { ...SPEC, memoryBytes: 4 * MiB, workingSetBytes: 2 * MiB, dirtyBytesPerSecond: 32 * MiB };
    // Every page with its bytes, so that round 0 alone is all 4 MiB (half a second on this link).
    const { report } = await bootAndMigrate(spec, link(dest, { bandwidth: 8 * MiB, downtimeLimitMs: 1, autoConverge: false, maxDataFactor: 1.5, zeroPages: false }));
    expect(report.status).toBe("completed");
    expect(report.stopReason).toBe("max-data");
    expect(report.bytes.memory - report.roundStats.at(-1)!.bytes).toBeGreaterThanOrEqual(1.5 * spec.memoryBytes * 0.5);
    expect(report.destination?.digest).toBe(referenceDigest(spec));
  });

  it("post-copy over a link with latency: a page fetched on demand waits at least a round trip", async () => {
    const dest = await Destination.start();
    const { report } = await bootAndMigrate(SPEC, link(dest, { technique: "postcopy", bandwidth: 16 * MiB, latencyMs: 15 }));
    expect(report.status).toBe("completed");
    const p = report.postcopy!;
    expect(p.faults).toBeGreaterThan(0);
    // The guest's first fault (on its data page, as it resumes) can only be answered after the
    // source has heard of the resume: two one-way latencies at least. Later faults may find
    // their page already on its way.
    expect(p.faultLatencyP99Ms).toBeGreaterThanOrEqual(30);
    expect(p.blockedMs).toBeGreaterThanOrEqual(30);
    // commit → resumed crosses the link twice as well.
    expect(report.downtimeMs).toBeGreaterThanOrEqual(30);
    expect(report.destination?.digest).toBe(referenceOnce());
  });
});

describe("the post-copy failure rule", () => {
  it("a link lost after the resume: the destination stops the guest for good, the source keeps its paused copy and never resumes it", async () => {
    const dest = await Destination.start();
    const cut = (proxy = await FaultProxy.start(dest.url, { from: "source", type: "pages", nth: 20 }));
    const spec = { ...SPEC, endNs: 5000 * MS };
    const result = await bootAndMigrate(spec, link({ url: cut.url, token: dest.token }, { technique: "postcopy", bandwidth: 4 * MiB }));
    expect(cut.fired).toBe(true);
    expect(result.report.status).toBe("lost");
    expect(result.report.error?.code).toBe("connection");
    expect(result.report.failedAt).toBe("post-copy");
    expect(result.source).toBeUndefined();
    const pausedAt = result.guest.now();
    const digest = result.guest.digest();
    await new Promise((r) => setTimeout(r, 100));
    expect(result.guest.now()).toBe(pausedAt);
    expect(result.guest.digest()).toBe(digest);
    const lost = await dest.waitFor((e) => e.event === "lost");
    expect(lost).toMatchObject({ code: "connection" });
    expect((lost as { missingPages: number }).missingPages).toBeGreaterThan(0);
    expect(dest.events.some((e) => e.event === "finished")).toBe(false);
    // The destination is free for the next guest.
    const again = await bootAndMigrate(SPEC, link(dest, { technique: "postcopy" }));
    expect(again.report.error).toBeUndefined();
    expect(again.report.status).toBe("completed");
    expect(again.report.destination?.digest).toBe(referenceOnce());
  });
});

describe("blmv compare", () => {
  it("a guest dirtying memory faster than the link: post-copy and throttled pre-copy both complete, and the table shows how differently", async () => {
    const svg = join(tmpdir(), `blmv-compare-test-${process.pid}.svg`);
    rmSync(svg, { force: true });
    const { code, stdout, stderr } = await runCli([
      "compare", "--techniques", "precopy,postcopy", "--memory", "4M", "--working-set", "2M", "--dirty-rate", "4M,32M",
      "--bandwidth", "8M", "--duration", "2.5", "--migrate-after", "0.1", "--downtime-limit", "50", "--json", "--svg", svg,
    ]);
    expect(stderr).toBe("");
    expect(code).toBe(0);
    const out = JSON.parse(stdout) as { rows: CompareRow[] };
    expect(out.rows.map((r) => `${r.setting} ${r.technique}`)).toEqual(["dirty-rate=4M precopy", "dirty-rate=4M postcopy", "dirty-rate=32M precopy", "dirty-rate=32M postcopy"]);
    for (const r of out.rows) {
      expect(r.status).toBe("completed");
      expect(r.digestEqual).toBe(true);
      expect(r.predicted).toBeDefined();
    }
    const [, , pre, post] = out.rows;
    // 32M/s dirtied over an 8M/s link: pre-copy converges only by slowing the guest down and
    // sends the memory several times; post-copy sends it once, and the guest faults instead.
    expect(pre.throttlePercent).toBeGreaterThan(0);
    expect(pre.rounds).toBeGreaterThan(1);
    expect(pre.dataBytes).toBeGreaterThan(2 * post.dataBytes);
    expect(pre.totalMs).toBeGreaterThan(post.totalMs);
    expect(post.faults).toBeGreaterThan(0);
    expect(post.downtimeMs).toBeLessThan(pre.downtimeMs);
    expect(existsSync(svg)).toBe(true);
    expect(readFileSync(svg, "utf8").match(/<polyline /g)).toHaveLength(4);
    rmSync(svg);
  });

  it("refuses unknown techniques and bad lists with exit code 2", async () => {
    const bad = await runCli(["compare", "--techniques", "precopy,teleport"]);
    expect(bad.code).toBe(2);
    expect(bad.stderr).toMatch(/unknown technique "teleport"/);
    const list = await runCli(["compare", "--bandwidth", "8M,fast"]);
    expect(list.code).toBe(2);
    expect(list.stderr).toMatch(/--bandwidth expects a rate/);
    const cap = await runCli(["migrate", "send", "--to", "ws://127.0.0.1:1", "--max-data", "0.5"], { BLMV_TOKEN: testToken("t") });
    expect(cap.code).toBe(2);
    expect(cap.stderr).toMatch(/--max-data/);
  });
});
