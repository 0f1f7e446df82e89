// Live migrations between two real processes over a real socket: the source is this test
// process (its guest keeps running while memory is copied), the destination a `blmv migrate
// listen` process. A migration is right when the guest, finished on the destination, ends with
// the digest of a run that was never migrated.

import { afterEach, describe, expect, it } from "vitest";
import { WORKLOAD_NAMES, referenceDigest, type GuestRunSpec } from "../src/migrate/run/guest-run.js";
import { bootAndMigrate, type LiveMigrationOptions } from "../src/migrate/run/run.js";
import { Destination, killChildren, runCli, testToken } from "./migrate-harness.js";

const MiB = 2 ** 20;
const MS = 1_000_000;

afterEach(killChildren);

function spec(workload: string, interrupts: "pic" | "apic", more: Partial<GuestRunSpec> = {}): GuestRunSpec {
  return { workload, interrupts, memoryBytes: 16 * MiB, seed: 7, endNs: 350 * MS, ...more };
}

const link = (d: Destination, more: Partial<LiveMigrationOptions> = {}): LiveMigrationOptions => ({ url: d.url, token: d.token, migrateAtNs: 120 * MS, ...more });

describe("live migration between two processes", () => {
  for (const workload of WORKLOAD_NAMES) {
    for (const interrupts of ["pic", "apic"] as const) {
      it(`moves a running ${workload} guest (${interrupts}) and it ends as if never moved`, async () => {
        const s = spec(workload, interrupts);
        const dest = await Destination.start();
        const { report, guest } = await bootAndMigrate(s, link(dest));
        expect(report.error).toBeUndefined();
        expect(report.status).toBe("completed");
        // The per-page CRCs kept as pages went by describe the source's memory as it stopped.
        expect(report.memoryDigest).toBe(guest.memory.digest());
        const reference = referenceDigest(s);
        expect(report.destination?.digest).toBe(reference);
        const finished = await dest.waitFor((e) => e.event === "finished");
        expect(finished).toMatchObject({ digest: reference, virtualNs: s.endNs });

        // The report adds up.
        expect(report.rounds).toBeGreaterThanOrEqual(1);
        expect(report.roundStats.filter((r) => r.stopAndCopy)).toHaveLength(1);
        // Every page that holds data went at least once; never-written pages need not go at all.
        let written = 0;
        for (let p = 0; p < guest.memory.pageCount; p++) if (!guest.memory.isZero(p)) written++;
        expect(report.pages.normal).toBeGreaterThanOrEqual(written);
        expect(report.bytes.total).toBeGreaterThan(report.pages.normal * 4096);
        expect(report.downtimeMs).toBeGreaterThan(0);
        expect(report.downtimeMs).toBeLessThan(report.totalMs);
        expect(report.setupMs).toBeLessThan(report.totalMs);
        expect(report.exits.total).toBeGreaterThan(0);
        expect(report.model?.prediction.rounds).toBeGreaterThanOrEqual(1);
      });
    }
  }

  it("throttles a guest that dirties memory faster than the link carries it, until it converges", async () => {
    // A 2 MiB working set rewritten at 32 MiB/s over an 8 MiB/s link: without throttling each
    // round would carry the whole set again.
    const s = spec("uniform", "apic", { memoryBytes: 4 * MiB, workingSetBytes: 2 * MiB, dirtyBytesPerSecond: 32 * MiB, endNs: 2500 * MS });
    const dest = await Destination.start();
    const { report } = await bootAndMigrate(s, link(dest, { migrateAtNs: 100 * MS, bandwidth: 8 * MiB, downtimeLimitMs: 50 }));
    expect(report.status).toBe("completed");
    expect(report.throttleSteps).toBeGreaterThanOrEqual(1);
    expect(report.throttlePercent).toBeGreaterThanOrEqual(20);
    expect(report.roundStats[1].throttlePercent).toBe(20);
    expect(report.expectedDowntimeMs).toBeLessThanOrEqual(50);
    expect(report.throughputBytesPerSec).toBeLessThan(10 * MiB);
    expect(report.model?.input.bandwidth).toBe(8 * MiB);
    expect(report.destination?.digest).toBe(referenceDigest(s));
  });

  it("without throttling stops at the round cap with the downtime it has", async () => {
    const s = spec("uniform", "pic", { memoryBytes: 4 * MiB, workingSetBytes: 2 * MiB, dirtyBytesPerSecond: 32 * MiB, endNs: 1500 * MS });
    const dest = await Destination.start();
    const { report } = await bootAndMigrate(s, link(dest, { migrateAtNs: 100 * MS, bandwidth: 8 * MiB, downtimeLimitMs: 5, maxRounds: 3, autoConverge: false }));
    expect(report.status).toBe("completed");
    expect(report.rounds).toBe(3);
    expect(report.throttleSteps).toBe(0);
    expect(report.expectedDowntimeMs).toBeGreaterThan(5);
    expect(report.model?.prediction.meetsLimit).toBe(false);
    expect(report.destination?.digest).toBe(referenceDigest(s));
  });
});

describe("the command line", () => {
  it("`migrate send` migrates to `migrate listen` and verifies the digest (--json)", async () => {
    const dest = await Destination.start("cli-token", ["--once"]);
    const run = await runCli(
      ["migrate", "send", "--to", dest.url, "--memory", "8M", "--workload", "hot", "--interrupts", "pic", "--duration", "0.5", "--migrate-after", "0.2", "--bandwidth", "1Gbit", "--verify", "--json", "--progress", "none"],
      { BLMV_TOKEN: dest.token },
    );
    expect(run.stderr).toBe("");
    expect(run.code).toBe(0);
    const out = JSON.parse(run.stdout);
    expect(out.status).toBe("completed");
    expect(out.verification.identical).toBe(true);
    expect(out.bandwidthLimitBytesPerSec).toBe(125_000_000);
    // --once: the destination exits by itself once its guest has finished.
    await new Promise((r) => (dest.child.exitCode === null ? dest.child.once("exit", r) : r(null)));
    expect(dest.child.exitCode).toBe(0);
  });

  it("refuses wrong options with a clear message and exit code 2", async () => {
    const cases: [string[], RegExp][] = [
      [["migrate", "send", "--memory", "8M"], /--to ws:\/\/HOST:PORT is required/],
      [["migrate", "send", "--to", "ws://127.0.0.1:1", "--memory", "12X"], /--memory expects a size/],
      [["migrate", "send", "--to", "ws://127.0.0.1:1", "--bandwidth", "fast"], /--bandwidth expects a rate/],
      [["migrate", "send", "--to", "ws://127.0.0.1:1", "--memory", "8M", "--working-set", "8M"], /--working-set 8M does not fit in a guest of 8\.00 MiB/],
      [["migrate", "send", "--to", "ws://127.0.0.1:1", "--workload", "nope"], /--workload must be one of/],
      [["migrate", "send", "--to", "ws://127.0.0.1:1", "--migrate-after", "5", "--duration", "2"], /must be less than --duration/],
      [["migrate", "send", "--to", "http://x"], /--to expects ws:\/\/HOST:PORT/],
      [["migrate", "listen"], /--port is required/],
      [["migrate", "listen", "--port", "70000"], /at most 65535/],
      [["migrate", "listen", "--port", "0", "--token-file", "/nonexistent/token"], /token file \/nonexistent\/token: no such file or directory/],
      [["migrate", "fly"], /expected listen, send, status, set, postcopy or cancel/],
    ];
    const runs = await Promise.all(cases.map(([args]) => runCli(args, { BLMV_TOKEN: testToken("t") })));
    runs.forEach((run, i) => {
      expect(run.code, cases[i][0].join(" ")).toBe(2);
      expect(run.stderr).toMatch(cases[i][1]);
    });
  });

  it("the demo starts a destination process, migrates a two-CPU guest, and verifies the digest", async () => {
    const run = await runCli(["demo", "--memory", "8M", "--duration", "0.6", "--migrate-after", "0.2", "--json"]);
    expect(run.code).toBe(0);
    const out = JSON.parse(run.stdout);
    expect(out.status).toBe("completed");
    expect(out.verification.identical).toBe(true);
    expect(out.bandwidthLimitBytesPerSec).toBe(125_000_000);
    // Two CPUs unless told otherwise, so that the demo moves IPIs and start-up state.
    expect(out.cpus).toBe(2);
    expect(out.exits.byCpu).toHaveLength(2);
  });
});
