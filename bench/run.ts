// `npm run bench [-- --quick] [-- --only B1,B5] [-- --json FILE] [-- --peer qemu]`: runs the
// benchmarks, prints the machine and a table (measured, same-run baseline, ratio, target, met),
// writes the JSON. With --peer, QEMU's figures beside B2 and B3 (bench/peer.ts).

import { mkdirSync, writeFileSync } from "node:fs";
import { dirname } from "node:path";
import { loadavg } from "node:os";
import { parseArgs } from "node:util";
import { performance } from "node:perf_hooks";
import { benchDeviceMigration, benchDeviceMigrationSmp, benchPropertyThroughput } from "./devices.js";
import { benchFootprint, benchHotSet, benchIdle, benchIncompressible } from "./migration.js";
import { benchModel } from "./model-sweep.js";
import { PEER_COMPARES, parsePeer, peerUnavailable, qemuPeerRows, type Peer } from "./peer.js";
import { benchReplay, benchReplaySmp } from "./replay.js";
import { machineInfo, table, type BenchResult } from "./result.js";

type Bench = (quick: boolean) => BenchResult | Promise<BenchResult>;
const BENCHES: Record<string, Bench> = {
  B1: benchReplay,
  B2: benchIncompressible,
  B3: benchIdle,
  B4: benchHotSet,
  B5: benchDeviceMigration,
  B6: benchPropertyThroughput,
  B7: benchModel,
  B8: benchReplaySmp,
  B9: benchDeviceMigrationSmp,
  B10: benchFootprint,
};

const USAGE = "usage: npm run bench [-- --quick] [--only B1,B2,...] [--json FILE] [--peer qemu]";

function options(): { quick: boolean; only: string[]; json: string; peer: Peer | undefined } {
  try {
    const { values } = parseArgs({
      options: { quick: { type: "boolean", default: false }, only: { type: "string" }, json: { type: "string" }, peer: { type: "string" }, help: { type: "boolean", default: false } },
      strict: true,
    });
    if (values.help) {
      process.stdout.write(`${USAGE}\n`);
      process.exit(0);
    }
    const peer = parsePeer(values.peer);
    // A peer run alone measures what the peer is compared with; named benchmarks get those added.
    const named = values.only ? values.only.split(",").map((s) => s.trim().toUpperCase()) : peer ? [] : Object.keys(BENCHES);
    const only = peer ? [...named, ...PEER_COMPARES.filter((id) => !named.includes(id))] : named;
    const unknown = only.filter((id) => !(id in BENCHES));
    if (unknown.length > 0) throw new Error(`--only: unknown benchmark ${unknown.join(", ")} (known: ${Object.keys(BENCHES).join(", ")})`);
    const json = values.json ?? (values.quick ? "bench-results/quick.json" : "bench-results/results.json");
    return { quick: values.quick, only, json, peer };
  } catch (e) {
    process.stderr.write(`bench: ${e instanceof Error ? e.message : String(e)}\n${USAGE}\n`);
    process.exit(2);
  }
}

const { quick, only, json, peer } = options();
const missing = peer && peerUnavailable(peer);
if (missing) {
  process.stderr.write(`bench: ${missing}\n`);
  process.exit(2);
}
const machine = machineInfo();
process.stdout.write(`machine: ${machine.cpu}, ${machine.cores} cores, ${machine.memoryGiB} GiB, Node ${machine.node}, ${machine.platform}, load average ${machine.loadAverage}${quick ? " — quick mode (small sizes)" : ""}\n`);
const results: BenchResult[] = [];
const failures: { id: string; error: string }[] = [];
const started = performance.now();
for (const id of only) {
  const t = performance.now();
  try {
    const r = await BENCHES[id](quick);
    results.push(r);
    process.stdout.write(`${id} ${r.met ? "met" : "NOT met"}: ${r.what} (${((performance.now() - t) / 1000).toFixed(1)} s)\n`);
  } catch (e) {
    failures.push({ id, error: e instanceof Error ? e.message : String(e) });
    process.stdout.write(`${id} FAILED: ${failures[failures.length - 1].error}\n`);
  }
}
if (peer) {
  const t = performance.now();
  try {
    const rows = await qemuPeerRows(quick, results);
    results.push(...rows);
    for (const r of rows) process.stdout.write(`${r.id} ${r.met ? "met" : "NOT met"}: ${r.what}\n`);
    process.stdout.write(`peer ${peer} measured in ${((performance.now() - t) / 1000).toFixed(1)} s\n`);
  } catch (e) {
    failures.push({ id: `peer ${peer}`, error: e instanceof Error ? e.message : String(e) });
    process.stdout.write(`peer ${peer} FAILED: ${failures[failures.length - 1].error}\n`);
  }
}
process.stdout.write(`\n${table(results)}\n`);
mkdirSync(dirname(json), { recursive: true });
const loadAfter = Math.round(loadavg()[0] * 100) / 100;
process.stdout.write(`load average at the end: ${loadAfter}\n`);
writeFileSync(json, `${JSON.stringify({ date: new Date().toISOString(), quick, machine, loadAverageAtEnd: loadAfter, seconds: (performance.now() - started) / 1000, results, failures }, null, 2)}\n`);
process.stdout.write(`\nwritten to ${json}\n`);
process.exit(failures.length > 0 ? 1 : 0);
