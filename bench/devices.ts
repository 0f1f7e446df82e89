// B5: capture → msgpack → reconstruct of all four chips in a busy state (B9: the same on eight
// CPUs, every local APIC busy), and B6: how many cases per second the reconstruction and the
// migration property tests check (the tests themselves, run by vitest). docs/performance.md.

import { spawnSync } from "node:child_process";
import { existsSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, relative } from "node:path";
import { fileURLToPath } from "node:url";
import { performance } from "node:perf_hooks";
import { pack, unpack } from "msgpackr";
import { Machine } from "../src/core/machine.js";
import {
  DELIVERY_EXTINT, IOAPIC_SELECT, IOAPIC_WINDOW, LAPIC_DIVIDE, LAPIC_ICR_HIGH, LAPIC_ICR_LOW, LAPIC_INITIAL_COUNT, LAPIC_LVT_LINT0, LAPIC_LVT_TIMER, LAPIC_SVR,
  LVT_PERIODIC, SVR_ENABLE,
} from "../src/guest/drivers.js";
import { figure, median, type BenchResult } from "./result.js";

/**
 * All four chips mid-flight: both PICs initialised with interrupts in service, PIT channel 0
 * ticking into IRQ0, channel 2 half way through a count write with a latch outstanding, the
 * APIC timer periodic, an I/O APIC level line asserted and delivered, a pending ExtINT.
 */
export function busyMachine(cpus = 1): Machine {
  const m = Machine.create({ policy: "blmvisor", cpus });
  startCpus(m);
  for (const [port, value] of [[0x20, 0x11], [0x21, 0x20], [0x21, 0x04], [0x21, 0x01], [0xa0, 0x11], [0xa1, 0x28], [0xa1, 0x02], [0xa1, 0x01], [0x21, 0xf8], [0xa1, 0xfe]]) {
    m.outb(port, value);
  }
  m.outb(0x43, 0x34);
  m.outb(0x40, 0xa9);
  m.outb(0x40, 0x04);
  m.writel(LAPIC_SVR, SVR_ENABLE | 0xff);
  m.writel(LAPIC_LVT_LINT0, DELIVERY_EXTINT);
  m.writel(LAPIC_DIVIDE, 0x3);
  m.writel(LAPIC_LVT_TIMER, LVT_PERIODIC | 0xec);
  m.writel(LAPIC_INITIAL_COUNT, 250_000);
  m.writel(IOAPIC_SELECT, 0x10 + 2 * 9);
  m.writel(IOAPIC_WINDOW, 0x8000 | 0x49);
  m.advanceTo(3_300_000);
  m.inta();
  m.setGsi(9, 1);
  m.inta();
  m.inta();
  m.outb(0x61, 0x01);
  m.outb(0x43, 0xb6);
  m.outb(0x42, 0x34);
  m.outb(0x43, 0x80);
  m.advanceTo(4_700_123);
  m.setIrq(1, 1);
  busyAps(m);
  return m;
}

/** Starts every AP (INIT, start-up) from CPU 0. */
function startCpus(m: Machine): void {
  for (let k = 1; k < m.config.cpus; k++) {
    m.writel(LAPIC_ICR_HIGH, k << 24);
    m.writel(LAPIC_ICR_LOW, 0xc500);
    m.writel(LAPIC_ICR_LOW, 0x0610);
  }
}

/** Each AP: its own periodic timer, a vector in service and an IPI from it pending on the next CPU. */
function busyAps(m: Machine): void {
  const n = m.config.cpus;
  for (let k = 1; k < n; k++) {
    m.selectCpu(k);
    m.writel(LAPIC_SVR, SVR_ENABLE | 0xff);
    m.writel(LAPIC_DIVIDE, 0x3);
    m.writel(LAPIC_LVT_TIMER, LVT_PERIODIC | 0xe0);
    m.writel(LAPIC_INITIAL_COUNT, 100_000 + 1000 * k);
    m.writel(LAPIC_ICR_LOW, 0x40060); // self IPI, then taken: in service
    m.inta();
    m.writel(LAPIC_ICR_HIGH, ((k + 1) % n) << 24);
    m.writel(LAPIC_ICR_LOW, 0x70 + k); // fixed IPI to the next CPU, left pending
  }
  m.selectCpu(0);
}

export function benchDeviceMigration(quick: boolean): BenchResult {
  return deviceMigration(quick, 1, { id: "B5", what: "capture + msgpack + unpack + reconstruct, all four devices, busy", limitUs: 200 });
}

export function benchDeviceMigrationSmp(quick: boolean): BenchResult {
  return deviceMigration(quick, 8, { id: "B9", what: "B5 on eight CPUs, every local APIC busy", limitUs: 500 });
}

function deviceMigration(quick: boolean, cpus: number, bench: { id: string; what: string; limitUs: number }): BenchResult {
  const source = busyMachine(cpus);
  const rounds = quick ? 50 : 1000;
  const total: number[] = [];
  const sourceSide: number[] = [];
  let bytes = 0;
  for (let i = 0; i < rounds + 10; i++) {
    const t0 = performance.now();
    const wire = pack(source.capture());
    const t1 = performance.now();
    const rebuilt = Machine.reconstruct(unpack(wire));
    const t2 = performance.now();
    if (rebuilt.now() < source.now()) throw new Error(`${bench.id}: the rebuilt machine resumes before the source's time`);
    // As the replayer does when a migrated machine takes over: the old core serves the next one.
    rebuilt.release();
    // The first rounds warm the JIT and the core; they are not counted.
    if (i >= 10) {
      total.push((t2 - t0) * 1000);
      sourceSide.push((t1 - t0) * 1000);
    }
    bytes = wire.length;
  }
  const measured = median(total);
  const baseline = median(sourceSide);
  return {
    id: bench.id,
    what: bench.what,
    measured,
    unit: "µs",
    baseline: { what: "capture + msgpack alone", value: baseline },
    ratio: measured / baseline,
    target: `median < ${bench.limitUs} µs`,
    met: measured < bench.limitUs,
    details: { rounds, recordBytes: bytes, p90Us: percentile(total, 0.9), maxUs: Math.max(...total) },
  };
}

/**
 * The property tests B6 measures, by group: every fast-check property in these files (a test
 * counts as one when it ran fast-check cases, which bench/property-cases.ts counts). Quick mode
 * runs one property of each group (a file and a test name).
 */
const PROPERTY_GROUPS: readonly { name: string; files: readonly string[]; quick: { file: string; test: string } }[] = [
  {
    name: "reconstruction",
    files: ["test/pic-migration.test.ts", "test/pit-migration.test.ts", "test/apic-migration.test.ts", "test/smp-migration.test.ts"],
    quick: { file: "test/pic-migration.test.ts", test: "capture → msgpack → reconstruct reproduces the PIC state" },
  },
  {
    name: "migration",
    files: [
      "test/migrate-fuzz.test.ts", "test/migrate-protocol.test.ts", "test/migrate-model.test.ts", "test/migrate-techniques-parts.test.ts",
      "test/kvm-interchange.test.ts", "test/kvm-layout.test.ts", "test/qemu-state-import.test.ts", "test/memory-pages.test.ts", "test/guest.test.ts",
    ],
    quick: { file: "test/migrate-model.test.ts", test: "never predicts more than" },
  },
];
/** The repository (dist/bench/ is two levels below it): vitest and the tests are found from there. */
const ROOT = fileURLToPath(new URL("../../", import.meta.url));
/** B6's target, for each group. */
const MIN_CASES_PER_SECOND = 1000;

interface VitestJson {
  testResults: {
    name: string;
    assertionResults: { fullName: string; status: string; duration: number; failureMessages: string[]; meta?: { propertyCases?: number; cpuMs?: number } }[];
  }[];
}

interface PropertyFigure {
  group: string;
  file: string;
  name: string;
  cases: number;
  ms: number;
  casesPerSecond: number;
  /** CPU time the test took (its process, user + system). */
  cpuMs: number;
}

/** Runs the files' tests (those named `test`, if given) with the case-counting setup; every test that ran fast-check cases, timed. */
function runProperties(group: string, files: readonly string[], test?: string): PropertyFigure[] {
  const dir = mkdtempSync(join(tmpdir(), "blmv-bench-"));
  const out = join(dir, "vitest.json");
  try {
    const vitest = join(ROOT, "node_modules/vitest/vitest.mjs");
    // One file at a time: each test's duration is its own, not shared with a test of another file.
    const args = [vitest, "run", ...files, "--config", "bench/vitest-properties.config.ts", "--root", ROOT, "--no-file-parallelism", "--reporter=json", `--outputFile=${out}`, ...(test ? ["-t", test] : [])];
    const run = spawnSync(process.execPath, args, { cwd: ROOT, encoding: "utf8", env: { ...process.env, DEEP: "" }, maxBuffer: 64 * 2 ** 20 });
    const report = existsSync(out) ? (JSON.parse(readFileSync(out, "utf8")) as VitestJson) : undefined;
    if (run.status !== 0 || report === undefined) {
      const failed = report?.testResults.flatMap((f) => f.assertionResults).filter((a) => a.status === "failed") ?? [];
      const why = failed.length > 0 ? failed.map((a) => `${a.fullName}: ${a.failureMessages.join("\n").slice(0, 2000)}`).join("\n") : `${run.stdout.slice(-1500)}${run.stderr.slice(-1500)}`;
      throw new Error(`B6: the ${group} tests failed (exit ${run.status}): ${why}`);
    }
    return report.testResults.flatMap((f) =>
      f.assertionResults
        .filter((a) => a.status === "passed" && (a.meta?.propertyCases ?? 0) > 0)
        .map((a) => {
          const cases = a.meta?.propertyCases ?? 0;
          return { group, file: relative(ROOT, f.name), name: a.fullName, cases, ms: a.duration, casesPerSecond: (cases * 1000) / a.duration, cpuMs: a.meta?.cpuMs ?? Number.NaN };
        }),
    );
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

export function benchPropertyThroughput(quick: boolean): BenchResult {
  const groups = PROPERTY_GROUPS.map((g) => {
    const properties = quick ? runProperties(g.name, [g.quick.file], g.quick.test) : runProperties(g.name, g.files);
    if (properties.length === 0) throw new Error(`B6: no ${g.name} property ran`);
    const cases = properties.reduce((a, p) => a + p.cases, 0);
    const ms = properties.reduce((a, p) => a + p.ms, 0);
    const cpuMs = properties.reduce((a, p) => a + p.cpuMs, 0);
    return { name: g.name, count: properties.length, cases, ms, casesPerSecond: (cases * 1000) / ms, cpuMs, casesPerCpuSecond: (cases * 1000) / cpuMs, properties };
  });
  const slowest = groups.reduce((a, g) => (g.casesPerSecond < a.casesPerSecond ? g : a));
  const summary = groups.map((g) => `${g.count} ${g.name} at ${figure(g.casesPerSecond)} (${figure(g.casesPerCpuSecond)} per CPU second)`).join(", ");
  return {
    id: "B6",
    what: `property tests (fast-check, vitest), each at its npm test case count: ${summary} cases/s; measured: the slower group`,
    measured: slowest.casesPerSecond,
    unit: "cases/s",
    target: `≥ ${figure(MIN_CASES_PER_SECOND)} cases/s in each group`,
    met: groups.every((g) => g.casesPerSecond >= MIN_CASES_PER_SECOND),
    details: { groups },
  };
}

function percentile(values: readonly number[], p: number): number {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.floor(p * sorted.length))];
}
