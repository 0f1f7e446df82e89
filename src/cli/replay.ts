// `blmv replay <trace>`: run a trace against a fresh machine, check every expectation,
// migrate where asked, and report what happened and what each policy cost in VM exits.

import { open } from "node:fs/promises";
import { POLICIES, type Policy } from "../core/machine.js";
import { BTRACE_MAGIC } from "../trace/compiled.js";
import { openTrace } from "../trace/reader.js";
import { MigrationRequestError, replayCompiled, replayEvents, type ReplayOptions, type ReplayReport } from "../trace/replay.js";
import { defineCommand } from "./command.js";
import { EXIT_FAILED, EXIT_OK, UsageError, checkReadable, integerOption } from "./usage.js";

export const replay = defineCommand({
  name: "replay",
  synopsis: "<trace> [--policy blmvisor|full|none] [--migrate-at N|LABEL]... [--migrate-every N] [--json]",
  summary: "replay a trace on a fresh machine, check its expectations, migrate where asked",
  about:
    "Replays a blmv-trace text file (.trace, .trace.gz) or a compiled .btrace against a fresh machine,\n" +
    "checks every expectation and reports the VM exits each policy costs.",
  footer:
    "A migration point that cannot be carried out is an error (exit 2): any point under policy\n" +
    "none (no shadows), a label the trace never marks, an event number past its end.",
  positionals: 1,
  options: {
    policy: { type: "string", value: "P", default: "blmvisor", help: `what the hypervisor intercepts: ${POLICIES.join(" | ")}` },
    "migrate-at": { type: "string", value: "N|LABEL", multiple: true, help: "migrate after event N, or at every 'mark LABEL' (repeatable)" },
    "migrate-every": { type: "string", value: "N", help: "migrate after every N events" },
    json: { type: "boolean", help: "print the report as JSON" },
  },
  async run({ values, positionals }) {
    const path = positionals[0];
    if (!path) throw new UsageError("replay: missing <trace>");
    const policy = values.policy as Policy;
    if (!POLICIES.includes(policy)) throw new UsageError(`replay: --policy must be one of ${POLICIES.join(", ")}, got ${JSON.stringify(values.policy)}`);
    const afterEvents: number[] = [];
    const atLabels: string[] = [];
    for (const point of values["migrate-at"]) {
      if (/^\d+$/.test(point)) afterEvents.push(integerOption("replay", "migrate-at", point, 1)!);
      else if (/^\S+$/.test(point)) atLabels.push(point);
      else throw new UsageError(`replay: --migrate-at expects an event number or a mark label, got ${JSON.stringify(point)}`);
    }
    const every = integerOption("replay", "migrate-every", values["migrate-every"], 1);
    const options: ReplayOptions = { policy, afterEvents, atLabels, every };
    let report: ReplayReport;
    try {
      report = await replayFile(path, options);
    } catch (e) {
      if (e instanceof MigrationRequestError) throw new UsageError(`replay: ${e.message}`);
      throw e;
    }
    console.log(values.json ? JSON.stringify({ trace: path, ...report }, null, 2) : formatReport(path, report));
    if (report.migrationPointsMissed.length > 0) {
      throw new UsageError(`replay: ${path}: migration points never reached:\n  ${report.migrationPointsMissed.join("\n  ")}`);
    }
    return report.mismatchCount === 0 ? EXIT_OK : EXIT_FAILED;
  },
});

/** Replays a trace file, text or compiled, as `blmv replay` does. */
export async function replayFile(path: string, options: ReplayOptions): Promise<ReplayReport> {
  return (await isCompiled(path)) ? replayCompiled(path, options) : replayText(path, options);
}

async function replayText(path: string, options: ReplayOptions): Promise<ReplayReport> {
  const trace = await openTrace(path);
  return replayEvents(trace.header, trace, options);
}

async function isCompiled(path: string): Promise<boolean> {
  await checkReadable("replay", path);
  const file = await open(path, "r");
  try {
    const head = Buffer.alloc(BTRACE_MAGIC.length);
    await file.read(head, 0, head.length, 0);
    return head.toString("latin1") === BTRACE_MAGIC;
  } finally {
    await file.close();
  }
}

export function formatReport(path: string, r: ReplayReport): string {
  const n = (x: number) => x.toLocaleString("en-US");
  const lines = [
    `trace          ${path}`,
    `policy         ${r.policy}`,
    `events         ${n(r.events)}`,
    `reads          ${n(r.reads)} (${n(r.checked)} expectations checked)`,
    `mismatches     ${n(r.mismatchCount)}`,
    `interrupts     ${n(r.interrupts)} delivered`,
    `virtual time   ${(r.virtualTimeNs / 1e6).toFixed(3)} ms`,
    `wall time      ${r.wallMs.toFixed(1)} ms (${n(r.eventsPerSecond)} events/s)`,
    `VM exits       ${n(r.exits.total)}` +
      (r.exits.total ? ` — ${Object.entries(r.exits.byReason).filter(([, v]) => v).map(([k, v]) => `${k} ${n(v)}`).join(", ")}` : ""),
  ];
  const ports = [...r.exits.byPort].sort((a, b) => b.in + b.out - (a.in + a.out)).slice(0, 8);
  if (ports.length) lines.push(`  by port      ${ports.map((p) => `0x${p.port.toString(16)}: ${n(p.in)} in / ${n(p.out)} out`).join("; ")}`);
  const regs = [...r.exits.byRegister].sort((a, b) => b.read + b.write - (a.read + a.write)).slice(0, 8);
  if (regs.length) lines.push(`  by register  ${regs.map((g) => `${g.region}+0x${g.offset.toString(16)}: ${n(g.read)} r / ${n(g.write)} w`).join("; ")}`);
  if (r.exits.byCpu.length > 1) lines.push(`  by CPU       ${r.exits.byCpu.map((v, k) => `cpu ${k}: ${n(v)}`).join("; ")}`);
  const m = r.migrations;
  if (m.count) {
    lines.push(
      `migrations     ${n(m.count)}: record ${m.recordBytes.min}–${m.recordBytes.max} bytes, ` +
        `capture + reconstruct median ${m.timeUs.median} µs (max ${m.timeUs.max} µs)`,
    );
  }
  if (r.migrationsRefused) lines.push(`migrations     ${r.migrationsRefused} refused: policy "none" keeps no shadow of write-only PIC/PIT state`);
  for (const m of r.mismatches) lines.push(`MISMATCH line ${m.line}: ${m.op} ${m.operand} expected ${m.expected}, got ${m.actual}`);
  if (r.mismatchCount > r.mismatches.length) lines.push(`… and ${n(r.mismatchCount - r.mismatches.length)} more mismatches`);
  return lines.join("\n");
}

