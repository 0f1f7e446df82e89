// B1: replay of a compiled trace of busy-guest device accesses under blmvisor, against a
// decode-only pass that reads and checks the same file the same way and loads every record's
// fields without executing any, and against the core's decode loop alone within that pass.
// B8: the same on four CPUs with IPIs in the mix. docs/performance.md.

import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { performance } from "node:perf_hooks";
import { Machine } from "../src/core/machine.js";
import { RecordChecker, readCompiledChunks } from "../src/trace/compiled.js";
import { replayCompiled } from "../src/trace/replay.js";
import { figure, median, type BenchResult } from "./result.js";
import { writeBenchTrace } from "./trace-gen.js";

/**
 * Rounds of replay, replay without hypervisor and decode-only pass, interleaved. This virtual
 * machine's CPU speed varies by up to 1.7× from one half-second to the next, so three rounds
 * left the ratio of two medians to chance; seven settle it.
 */
const RUNS = 7;

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

function cpuMs(used: NodeJS.CpuUsage): number {
  return (used.user + used.system) / 1000;
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
    const coreDecodeMs: number[] = [];
    const bareMs: number[] = [];
    // CPU time of the process (every thread, user and system) beside the wall time: a figure
    // that other work on a shared machine blurs less.
    const replayCpuMs: number[] = [];
    const decodeCpuMs: number[] = [];
    let last;
    for (let i = 0; i < RUNS; i++) {
      let t = performance.now();
      let cpu = process.cpuUsage();
      last = await replayCompiled(path, { policy: "blmvisor" });
      replayMs.push(performance.now() - t);
      replayCpuMs.push(cpuMs(process.cpuUsage(cpu)));
      // The same devices with no hypervisor at all: what the traps and shadows add.
      t = performance.now();
      await replayCompiled(path, { policy: "none" });
      bareMs.push(performance.now() - t);
      t = performance.now();
      cpu = process.cpuUsage();
      const decoded = await decodeOnly(path);
      decodeMs.push(performance.now() - t);
      decodeCpuMs.push(cpuMs(process.cpuUsage(cpu)));
      coreDecodeMs.push(decoded.coreDecodeMs);
      if (decoded.records !== records) throw new Error(`${id}: decode-only pass saw ${decoded.records} of ${records} records`);
    }
    const report = last!;
    if (report.events !== records || report.mismatchCount !== 0) {
      throw new Error(`${id}: replay ran ${report.events} of ${records} records with ${report.mismatchCount} mismatches`);
    }
    const replay = median(replayMs);
    const decode = median(decodeMs);
    const coreDecode = median(coreDecodeMs);
    const rate = records / replay / 1000;
    const passRatio = replay / decode;
    return {
      id,
      what: `compiled-trace replay under blmvisor, ${(records / 1e6).toFixed(1)} M accesses${cpus > 1 ? `, ${cpus} CPUs with IPIs` : ""}; decode-only pass ${figure(records / decode / 1000)} M/s, replay ${passRatio.toFixed(2)}× its time`,
      measured: rate,
      unit: "M accesses/s",
      baseline: { what: "the core's decode loop alone", value: records / coreDecode / 1000 },
      ratio: replay / coreDecode,
      ratioOf: "core decode time",
      target: "≥ 20 M/s and ≤ 3× the decode-only pass",
      met: rate >= 20 && passRatio <= 3,
      details: {
        records,
        replayMs,
        replayCpuMs,
        decodeOnlyPassMs: decodeMs,
        decodeOnlyPassCpuMs: decodeCpuMs,
        decodeOnlyPassMRecordsPerSec: records / decode / 1000,
        replayToDecodeOnlyPass: passRatio,
        coreDecodeLoopMs: coreDecodeMs,
        coreDecodeLoopMRecordsPerSec: records / coreDecode / 1000,
        replayToCoreDecodeLoop: replay / coreDecode,
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
