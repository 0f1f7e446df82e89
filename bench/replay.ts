// B1: replay of a compiled trace of busy-guest device accesses under blmvisor, against a
// decode-only pass that reads the same file the same way and loads every record's fields
// without executing any. B8: the same on four CPUs with IPIs in the mix.

import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { performance } from "node:perf_hooks";
import { Machine } from "../src/core/machine.js";
import { RecordChecker, readCompiledChunks } from "../src/trace/compiled.js";
import { replayCompiled } from "../src/trace/replay.js";
import { median, type BenchResult } from "./result.js";
import { writeBenchTrace } from "./trace-gen.js";

const RUNS = 3;

/** What the decode-only pass took: the whole pass, and the core's decode loop alone within it. */
interface DecodePass {
  records: number;
  checksum: number;
  coreDecodeMs: number;
}

/**
 * The replay's reading without its executing: reads the trace chunk by chunk straight into a
 * core, checks every record there as the replay does, and decodes every field of each.
 */
async function decodeOnly(path: string): Promise<DecodePass> {
  const trace = await readCompiledChunks(path);
  const machine = Machine.create({ ...trace.header.machine, cpus: trace.header.cpus, policy: "blmvisor" });
  const core = machine.core;
  const checker = new RecordChecker(trace);
  let records = 0;
  let checksum = 0;
  let coreDecodeMs = 0;
  let at = 0;
  const place = (bytes: number): Uint8Array => {
    at = core.replayScratch(bytes); // may grow the memory: take the buffer after
    return new Uint8Array(core.memory.buffer, at, bytes);
  };
  for (let n; (n = await trace.readRecords(place)) > 0; records += n) {
    checker.check(core, at, n);
    const t = performance.now();
    checksum += core.decodeRecords(0, n);
    coreDecodeMs += performance.now() - t;
  }
  machine.release();
  return { records, checksum, coreDecodeMs };
}

export function benchReplay(quick: boolean): Promise<BenchResult> {
  return replayBench(quick, { id: "B1", cpus: 1 });
}

/** B8: the same on four CPUs, each with its own APIC timer, every step sending an IPI. */
export function benchReplaySmp(quick: boolean): Promise<BenchResult> {
  return replayBench(quick, { id: "B8", cpus: 4 });
}

async function replayBench(quick: boolean, bench: { id: string; cpus: number }): Promise<BenchResult> {
  const { id, cpus } = bench;
  const dir = mkdtempSync(join(tmpdir(), "blmv-bench-"));
  try {
    const path = join(dir, "busy.btrace");
    const records = await writeBenchTrace(path, quick ? 200_000 : 10_000_000, cpus);
    const replayMs: number[] = [];
    const decodeMs: number[] = [];
    const bareMs: number[] = [];
    let last;
    for (let i = 0; i < RUNS; i++) {
      let t = performance.now();
      last = await replayCompiled(path, { policy: "blmvisor" });
      replayMs.push(performance.now() - t);
      // The same devices with no hypervisor at all: what the traps and shadows add.
      t = performance.now();
      await replayCompiled(path, { policy: "none" });
      bareMs.push(performance.now() - t);
      t = performance.now();
      const decoded = await decodeOnly(path);
      decodeMs.push(performance.now() - t);
      if (decoded.records !== records) throw new Error(`${id}: decode-only pass saw ${decoded.records} of ${records} records`);
    }
    const report = last!;
    if (report.events !== records || report.mismatchCount !== 0) {
      throw new Error(`${id}: replay ran ${report.events} of ${records} records with ${report.mismatchCount} mismatches`);
    }
    const replay = median(replayMs);
    const decode = median(decodeMs);
    const rate = records / replay / 1000;
    const ratio = replay / decode;
    return {
      id,
      what: `compiled-trace replay under blmvisor, ${(records / 1e6).toFixed(1)} M accesses${cpus > 1 ? `, ${cpus} CPUs with IPIs` : ""}`,
      measured: rate,
      unit: "M accesses/s",
      baseline: { what: "decode-only pass", value: records / decode / 1000 },
      ratio,
      ratioOf: "decode time",
      target: "≥ 20 M/s and ≤ 3× decode",
      met: rate >= 20 && ratio <= 3,
      details: {
        records,
        replayMs,
        decodeMs,
        noHypervisorMs: bareMs,
        noHypervisorMAccessesPerSec: records / median(bareMs) / 1000,
        checkedExpectations: report.checked,
        mismatches: report.mismatchCount,
        interrupts: report.interrupts,
        vmExits: report.exits.total,
        exitsByReason: report.exits.byReason,
      },
    };
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}
