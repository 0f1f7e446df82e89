// `blmv compare`: the same deterministic guest migrated with each technique under each setting,
// one migration after another to one destination process, every run checked against the
// digest of a run that was never migrated, and the table the literature prints: total time,
// downtime, data on the wire, rounds, faults — beside the model's prediction.

import { referenceDigest, type GuestRunSpec } from "./guest-run.js";
import type { MigrationReport, MigrationStatus } from "../report/metrics.js";
import { bootAndMigrate, type LiveMigrationOptions } from "./run.js";
import type { Technique } from "../source/techniques.js";
import { formatBytes, formatMs } from "../report/units.js";

/** One setting: the guest and the link, and the label of the varied value(s). */
export interface CompareSetting {
  label: string;
  /** The varied value on the chart's x axis. */
  x: number;
  spec: GuestRunSpec;
  link: Omit<LiveMigrationOptions, "url" | "token" | "signal" | "technique">;
}

export interface CompareRow {
  setting: string;
  x: number;
  technique: Technique;
  status: MigrationStatus;
  totalMs: number;
  downtimeMs: number;
  /** Bytes on the wire, memory and state and protocol. */
  dataBytes: number;
  rounds: number;
  stopReason?: string;
  faults: number;
  blockedMs: number;
  throttlePercent: number;
  /** The model's prediction for the measured M, B and d. */
  predicted?: { totalMs: number; downtimeMs: number; dataBytes: number };
  /** The guest finished on the destination with the digest of a run never migrated. */
  digestEqual: boolean;
}

export async function compareTechniques(
  target: { url: string; token: string },
  techniques: readonly Technique[],
  settings: readonly CompareSetting[],
  onRow: (row: CompareRow, report: MigrationReport) => void = () => undefined,
): Promise<CompareRow[]> {
  const rows: CompareRow[] = [];
  for (const setting of settings) {
    const reference = referenceDigest(setting.spec);
    for (const technique of techniques) {
      const { report } = await bootAndMigrate(setting.spec, { ...setting.link, ...target, technique });
      const row = rowOf(setting, technique, report, reference);
      rows.push(row);
      onRow(row, report);
    }
  }
  return rows;
}

function rowOf(setting: CompareSetting, technique: Technique, r: MigrationReport, reference: string): CompareRow {
  const p = r.model?.prediction;
  return {
    setting: setting.label,
    x: setting.x,
    technique,
    status: r.status,
    totalMs: r.totalMs,
    downtimeMs: r.downtimeMs,
    dataBytes: r.bytes.total,
    rounds: r.rounds,
    stopReason: r.stopReason,
    faults: r.postcopy?.faults ?? 0,
    blockedMs: r.postcopy?.blockedMs ?? 0,
    throttlePercent: r.throttlePercent,
    predicted: p && { totalMs: p.totalMs, downtimeMs: p.downtimeMs, dataBytes: p.dataBytes },
    digestEqual: r.destination?.digest === reference,
  };
}

const COLUMNS: [string, number, (r: CompareRow) => string][] = [
  ["setting", 0, (r) => r.setting],
  ["technique", 14, (r) => r.technique],
  ["total", 9, (r) => formatMs(r.totalMs)],
  ["downtime", 10, (r) => formatMs(r.downtimeMs)],
  ["data", 10, (r) => formatBytes(r.dataBytes)],
  ["rounds", 7, (r) => String(r.rounds)],
  ["stop", 11, (r) => r.stopReason ?? "–"],
  ["throttle", 9, (r) => `${r.throttlePercent}%`],
  ["faults", 7, (r) => String(r.faults)],
  ["blocked", 9, (r) => formatMs(r.blockedMs)],
  ["model total", 12, (r) => (r.predicted ? formatMs(r.predicted.totalMs) : "–")],
  ["model down", 11, (r) => (r.predicted ? formatMs(r.predicted.downtimeMs) : "–")],
  ["model data", 11, (r) => (r.predicted ? formatBytes(r.predicted.dataBytes) : "–")],
  ["digest", 7, (r) => (r.status !== "completed" ? r.status : r.digestEqual ? "equal" : "DIFFERS")],
];

/** The comparison as a fixed-width text table, one line per run. */
export function formatComparison(rows: readonly CompareRow[]): string {
  const first = Math.max(7, ...rows.map((r) => r.setting.length)) + 2;
  const cell = (i: number, text: string): string => (i === 0 ? text.padEnd(first) : i === 1 ? text.padEnd(COLUMNS[1][1]) : text.padStart(COLUMNS[i][1]));
  const head = COLUMNS.map(([name], i) => cell(i, name)).join(" ");
  return [head, ...rows.map((r) => COLUMNS.map(([, , f], i) => cell(i, f(r))).join(" "))].join("\n");
}
