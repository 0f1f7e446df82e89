// What one benchmark reports, how the table shows it, and the machine it ran on.

import { cpus, loadavg, totalmem } from "node:os";

export interface BenchResult {
  id: string;
  what: string;
  /** The figure the target is about, in `unit`. */
  measured: number;
  unit: string;
  /** A reference measured in the same run, in `unit`, or absent where the target has none. */
  baseline?: { what: string; value: number };
  /** measured ÷ baseline (or what the target's ratio is about, see `ratioOf`). */
  ratio?: number;
  ratioOf?: string;
  target: string;
  met: boolean;
  /** Everything else it measured, for the JSON file. */
  details: Record<string, unknown>;
}

export interface MachineInfo {
  cpu: string;
  cores: number;
  memoryGiB: number;
  node: string;
  platform: string;
  /** 1-minute load average when the run started: other work on the machine skews timings. */
  loadAverage: number;
}

export function machineInfo(): MachineInfo {
  const list = cpus();
  return {
    cpu: list[0]?.model.trim() ?? "unknown",
    cores: list.length,
    memoryGiB: Math.round((totalmem() / 2 ** 30) * 10) / 10,
    node: process.version,
    platform: `${process.platform} ${process.arch}`,
    loadAverage: Math.round(loadavg()[0] * 100) / 100,
  };
}

export function median(values: readonly number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  const mid = sorted.length >> 1;
  return sorted.length % 2 === 1 ? sorted[mid] : (sorted[mid - 1] + sorted[mid]) / 2;
}

/** A figure with three significant digits, grouped. */
export function figure(v: number): string {
  if (!Number.isFinite(v)) return String(v);
  const digits = Math.abs(v) >= 100 ? 0 : Math.abs(v) >= 10 ? 1 : Math.abs(v) >= 1 ? 2 : 3;
  return v.toLocaleString("en-US", { maximumFractionDigits: digits, minimumFractionDigits: 0 });
}

const COLUMNS = ["id", "what", "measured", "baseline (same run)", "ratio", "target", "met?"] as const;

/** The results as a Markdown table (it reads as plain text on a terminal too). */
export function table(results: readonly BenchResult[]): string {
  const rows = results.map((r) => [
    r.id,
    r.what,
    `${figure(r.measured)} ${r.unit}`,
    r.baseline ? `${figure(r.baseline.value)} ${r.unit} (${r.baseline.what})` : "—",
    r.ratio === undefined ? "—" : `${r.ratio.toFixed(2)}×${r.ratioOf ? ` ${r.ratioOf}` : ""}`,
    r.target,
    r.met ? "yes" : "**no**",
  ]);
  const line = (cells: readonly string[]): string => `| ${cells.join(" | ")} |`;
  return [line(COLUMNS), line(COLUMNS.map(() => "---")), ...rows.map(line)].join("\n");
}
