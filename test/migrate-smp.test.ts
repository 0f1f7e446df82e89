// Live migration of guests with several CPUs between two processes: every CPU's registers, its
// local APIC (timer, IPIs in service, logical ID) and its activity state move, and the guest ends
// on the destination with the digest of a run that was never migrated — with pre-copy and
// post-copy, with application processors still waiting for their start-up IPI (a snapshot taken
// then, resumed and sent again), and from the command line, whose --cpus is checked.

import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { PAGE_SIZE } from "../src/guest/page.js";
import { cpusToRecord } from "../src/guest/cpu.js";
import { bootGuest, referenceDigest, type GuestRunSpec } from "../src/migrate/run/guest-run.js";
import { bootAndMigrate } from "../src/migrate/run/run.js";
import { loadSnapshot, saveSnapshot } from "../src/migrate/run/snapshot.js";
import { encodeRecord, machineSpecOf } from "../src/migrate/wire/protocol.js";
import type { Technique } from "../src/migrate/source/techniques.js";
import { Destination, killChildren, runCli, testToken } from "./migrate-harness.js";

const MiB = 2 ** 20;
const MS = 1_000_000;
const dir = mkdtempSync(join(tmpdir(), "blmv-smp-"));

// After all: the migrations run at once, and each needs its destination to the end.
afterAll(() => {
  killChildren();
  rmSync(dir, { recursive: true, force: true });
});

describe.concurrent("a guest with several CPUs, migrated live", () => {
  const cases: [number, "pic" | "apic", Technique][] = [
    [1, "apic", "precopy"],
    [2, "apic", "precopy"],
    [4, "pic", "precopy"],
    [4, "apic", "postcopy"],
  ];
  it.each(cases)("%i CPUs (%s interrupts, %s) end as if never moved", async (cpus, interrupts, technique) => {
    // It runs long enough to be still running when it pauses, even with the four migrations at once on a loaded machine.
    const spec: GuestRunSpec = { workload: "uniform", interrupts, memoryBytes: 8 * MiB, seed: 19, cpus, endNs: 1000 * MS };
    const dest = await Destination.start();
    const { report, guest } = await bootAndMigrate(spec, { url: dest.url, token: dest.token, migrateAtNs: 100 * MS, technique });
    expect(report.error).toBeUndefined();
    expect(report.status).toBe("completed");
    expect(report.cpus).toBe(cpus);
    expect(report.exits.byCpu).toHaveLength(cpus);
    expect(report.exits.byReason.sipi).toBe(cpus - 1);
    // Every CPU was running when the guest left: each took IPIs from the others.
    if (cpus > 1) expect(guest.perCpuCounters().every((c) => c.online && c.ipis > 0)).toBe(true);
    expect(report.destination?.digest).toBe(referenceDigest(spec));
  }, 60_000);
});

describe("application processors still waiting for their start-up IPI", () => {
  const spec: GuestRunSpec = { workload: "hot", interrupts: "apic", memoryBytes: 4 * MiB, seed: 23, cpus: 4, endNs: 500 * MS };
  const reference = referenceDigest(spec);
  const snapshot = join(dir, "smp.snapshot");

  it("are saved as waiting and rebuilt so: CPU 0 starts them later on the snapshot's machine", () => {
    const guest = bootGuest(spec);
    guest.runUntil(3 * MS); // CPU 1 started at 2 ms; CPUs 2 and 3 start at 4 and 6 ms
    const devices = encodeRecord(guest.machine.capture());
    const timerPhases = guest.machine.probeTimerPhases();
    const cpu = encodeRecord(cpusToRecord(guest.pause()));
    const config = { t: "config" as const, memoryBytes: spec.memoryBytes, pageSize: PAGE_SIZE, machine: machineSpecOf(guest.machine), workload: spec.workload, endNs: spec.endNs };
    saveSnapshot(snapshot, { config, cpu, devices, timerPhases, memory: guest.memory });

    const saved = loadSnapshot(snapshot).guest;
    expect(saved.perCpuCounters().map((c) => c.online)).toEqual([true, true, false, false]);
    saved.machine.selectCpu(3);
    expect(saved.machine.sipiState()).toBe("waiting");
    saved.machine.selectCpu(0);
    saved.runUntil(spec.endNs);
    expect(saved.perCpuCounters().every((c) => c.online && c.ipis > 0)).toBe(true);
    expect(saved.digest()).toBe(reference);
  });

  it("blmv resume and migrate send --from carry them to the digest of a run never interrupted", async () => {
    const resumed = await runCli(["resume", snapshot, "--json"]);
    expect(resumed.code).toBe(0);
    expect(JSON.parse(resumed.stdout)).toMatchObject({ virtualNs: spec.endNs, digest: reference });
    const dest = await Destination.start("smp");
    const sent = await runCli(["migrate", "send", "--to", dest.url, "--from", snapshot, "--verify", "--json", "--progress", "none"], { BLMV_TOKEN: dest.token });
    expect(sent.code).toBe(0);
    expect(JSON.parse(sent.stdout)).toMatchObject({ status: "completed", cpus: 4, verification: { made: true, identical: true } });
  }, 60_000);
});

describe("--cpus on the command line", () => {
  it("migrate send --cpus 3 moves three CPUs and verifies the digest; the report names them and their exits", async () => {
    const dest = await Destination.start("cli-smp");
    const run = await runCli(
      ["migrate", "send", "--to", dest.url, "--cpus", "3", "--memory", "4M", "--workload", "idle", "--duration", "0.4", "--migrate-after", "0.1", "--verify", "--progress", "none"],
      { BLMV_TOKEN: dest.token },
    );
    expect(run.stderr).toBe("");
    expect(run.code).toBe(0);
    expect(run.stdout).toMatch(/workload {10}idle, 3 CPUs, 4\.00 MiB of guest memory/);
    expect(run.stdout).toMatch(/by CPU {12}cpu 0: \d+; cpu 1: \d+; cpu 2: \d+/);
    expect(run.stdout).toMatch(/verification {6}identical to the run that was never migrated/);
  }, 60_000);

  it("refuses a CPU count outside 1..64 naming the option, exit 2, on demo, migrate send and compare", async () => {
    const commands = [["demo"], ["migrate", "send", "--to", "ws://127.0.0.1:1"], ["compare"]];
    const values: [string, RegExp][] = [
      ["0", /--cpus must be at least 1, got 0/],
      ["65", /--cpus must be at most 64, got 65/],
      ["two", /--cpus expects a whole number, got "two"/],
    ];
    const runs = commands.flatMap((command) => values.map(([value, message]) => ({ args: [...command, "--cpus", value], message })));
    const results = await Promise.all(runs.map((r) => runCli(r.args, { BLMV_TOKEN: testToken("t") })));
    results.forEach((result, i) => {
      expect({ args: runs[i].args, code: result.code }).toEqual({ args: runs[i].args, code: 2 });
      expect(result.stderr).toMatch(runs[i].message);
      expect(result.stdout).toBe("");
    });
  });
});
