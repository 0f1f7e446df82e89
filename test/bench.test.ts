// The benchmark suite in quick mode, so that it never rots: it must run every benchmark to the
// end and report each with finite numbers and a verdict. Timings are not checked here.

import { spawnSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { afterAll, describe, expect, it } from "vitest";

const RUN = resolve("dist/bench/run.js");
const IDS = ["B1", "B2", "B3", "B4", "B5", "B6", "B7", "B8", "B9", "B10"];
const dir = mkdtempSync(join(tmpdir(), "blmv-bench-test-"));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

function bench(args: string[]) {
  return spawnSync(process.execPath, [RUN, ...args], { encoding: "utf8", timeout: 120_000 });
}

describe("npm run bench -- --quick", () => {
  it("runs all ten benchmarks and reports each with finite numbers", () => {
    const out = join(dir, "quick.json");
    const run = bench(["--quick", "--json", out]);
    expect(run.stderr).toBe("");
    expect(run.status, run.stdout).toBe(0);
    const report = JSON.parse(readFileSync(out, "utf8"));
    expect(report.quick).toBe(true);
    expect(report.failures).toEqual([]);
    expect(typeof report.machine.cpu).toBe("string");
    expect(report.machine.cores).toBeGreaterThan(0);
    expect(report.machine.node).toBe(process.version);
    expect(report.results.map((r: { id: string }) => r.id)).toEqual(IDS);
    for (const r of report.results) {
      expect(Number.isFinite(r.measured), `${r.id} measured`).toBe(true);
      expect(r.measured, `${r.id} measured`).toBeGreaterThan(0);
      if (r.baseline) expect(Number.isFinite(r.baseline.value) && r.baseline.value > 0, `${r.id} baseline`).toBe(true);
      if (r.ratio !== undefined) expect(Number.isFinite(r.ratio), `${r.id} ratio`).toBe(true);
      expect(typeof r.met).toBe("boolean");
      expect(r.target).not.toBe("");
    }
    // The table on stdout has a row per benchmark with its verdict.
    for (const id of IDS) expect(run.stdout).toMatch(new RegExp(`^\\| ${id} \\|.*\\| (yes|\\*\\*no\\*\\*) \\|$`, "m"));
    // B1's replay checked every expectation of its trace and found none broken.
    const b1 = report.results[0];
    expect(b1.details.mismatches).toBe(0);
    expect(b1.details.checkedExpectations).toBeGreaterThan(0);
  }, 120_000);

  it("rejects an unknown benchmark or option with exit code 2", () => {
    const unknown = bench(["--only", "B99"]);
    expect(unknown.status).toBe(2);
    expect(unknown.stderr).toMatch(/--only: unknown benchmark B99/);
    const option = bench(["--fast"]);
    expect(option.status).toBe(2);
    expect(option.stderr).toMatch(/bench: .*--fast/);
  });
});
