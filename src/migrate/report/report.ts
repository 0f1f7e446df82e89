// Showing a migration: the live progress line (terminals only), the final report, the
// per-round sparklines, and the per-round chart as an SVG file.

import type { MigrationReport, RoundStat } from "./metrics.js";
import type { Progress } from "../source/progress.js";
import type { Technique } from "../source/techniques.js";
import { formatBytes, formatMs, formatRate } from "./units.js";

const SPARKS = "▁▂▃▄▅▆▇█";

/** One character per value, scaled to the largest; zero is a blank-looking lowest bar. */
export function sparkline(values: readonly number[]): string {
  const max = Math.max(0, ...values);
  return values.map((v) => (max === 0 ? SPARKS[0] : SPARKS[Math.min(SPARKS.length - 1, Math.floor((v / max) * (SPARKS.length - 1) + 0.5))])).join("");
}

/** Redraws one status line on a terminal, at most ten times a second; silent elsewhere. */
export class ProgressLine {
  private lastDraw = 0;
  private drawn = false;

  constructor(private readonly out: NodeJS.WriteStream = process.stderr) {}

  get enabled(): boolean {
    return this.out.isTTY === true;
  }

  update(p: Progress): void {
    if (!this.enabled) return;
    const now = Date.now();
    if (now - this.lastDraw < 100 && p.phase === "pre-copy") return;
    this.lastDraw = now;
    const total = p.sentBytes + p.remainingBytes;
    const width = 20;
    const filled = total > 0 ? Math.round((p.sentBytes / total) * width) : 0;
    const bar = "█".repeat(filled) + "░".repeat(width - filled);
    const round = p.phase === "pre-copy" ? `round ${p.round}` : p.phase;
    const line = `${bar} ${round}  sent ${formatBytes(p.sentBytes)}  remaining ${formatBytes(p.remainingBytes)}  ${formatRate(p.bytesPerSec)}  exp. downtime ${Number.isFinite(p.expectedDowntimeMs) ? formatMs(p.expectedDowntimeMs) : "–"}${p.throttlePercent ? `  throttle ${p.throttlePercent}%` : ""}`;
    this.out.write(`\r\x1b[2K${line.slice(0, Math.max(20, (this.out.columns || 120) - 1))}`);
    this.drawn = true;
  }

  clear(): void {
    if (this.drawn) this.out.write("\r\x1b[2K");
    this.drawn = false;
  }
}

const STATUS_TEXT: Record<MigrationReport["status"], string> = {
  completed: "completed: the guest runs on the destination",
  failed: "FAILED before the commit: the guest keeps running on the source, unchanged",
  cancelled: "cancelled before the commit: the guest keeps running on the source, unchanged",
  unconfirmed: "commit sent, confirmation lost and the destination unreachable: the guest stays paused on the source, never run on a guess",
  lost: "LOST in post-copy: the link failed before all memory arrived; the destination stopped the guest, the source keeps its paused copy and never resumes it",
};

const TITLE: Record<Technique, string> = {
  precopy: "Live migration",
  postcopy: "Live migration (post-copy)",
  hybrid: "Live migration (hybrid pre-/post-copy)",
  "stop-and-copy": "Non-live migration (stop-and-copy)",
};

const RESOLUTION_TEXT: Record<NonNullable<MigrationReport["resolution"]>, string> = {
  taken: "the destination, asked again, took the guest: the commit had reached it",
  dropped: "the destination, asked again, dropped the guest: the source runs it on",
  unknown: "the destination, asked again, has no record of the session",
  unreachable: "the destination could not be asked again",
};

export function formatReport(r: MigrationReport): string {
  const lines: string[] = [];
  const row = (label: string, value: string): number => lines.push(`  ${label.padEnd(18)}${value}`);
  lines.push(`${TITLE[r.technique]} ${STATUS_TEXT[r.status]}`);
  if (r.error) row("error", `${r.error.code}${r.error.byPeer ? " (reported by the destination)" : ""} at ${r.failedAt}: ${r.error.message}`);
  if (r.resolution) row("after the commit", RESOLUTION_TEXT[r.resolution]);
  row("workload", `${r.workload}, ${formatBytes(r.memoryBytes)} of guest memory in ${formatBytes(r.pageSize)} pages`);
  row("total time", `${formatMs(r.totalMs)}  (setup ${formatMs(r.setupMs)})`);
  if (r.status === "completed") row("downtime", `${formatMs(r.downtimeMs)}  (expected ${formatMs(r.expectedDowntimeMs)}, limit ${formatMs(r.downtimeLimitMs)})`);
  // The expected-downtime rule is the usual end of pre-copy; the other thresholds are named.
  const stopped = r.stopReason && r.stopReason !== "downtime" ? `  (pre-copy stopped on ${r.stopReason})` : "";
  row("rounds", `${r.rounds} pre-copy + ${r.technique === "postcopy" || r.technique === "hybrid" ? "post-copy" : "stop-and-copy"}${stopped}`);
  if (r.postcopy) {
    const p = r.postcopy;
    row("post-copy", `${p.faults} faults, guest blocked ${formatMs(p.blockedMs)}, fault latency median ${formatMs(p.faultLatencyMedianMs)} p99 ${formatMs(p.faultLatencyP99Ms)}; pages: ${p.demandPages} on demand, ${p.prepagedPages} prepaged, ${p.pushedPages} pushed`);
  }
  if (r.xbzrle) {
    const x = r.xbzrle;
    row("XBZRLE", `${x.deltaPages} pages as deltas (hit rate ${(x.hitRate * 100).toFixed(1)}%), ${x.cacheMisses} cache misses, ${x.overflows} too large; ${formatBytes(x.bytesSaved)} saved`);
  }
  row("transferred", `${formatBytes(r.bytes.total)} on the wire: ${r.pages.normal} pages with data, ${r.pages.zero} zero pages elided, state ${formatBytes(r.bytes.state)}`);
  row("dirty rate", formatRate(r.dirtyRateBytesPerSec));
  row("throughput", `${formatRate(r.throughputBytesPerSec)}${r.bandwidthLimitBytesPerSec ? `  (limit ${formatRate(r.bandwidthLimitBytesPerSec)})` : ""}`);
  if (r.acks) {
    const a = r.acks;
    row("acknowledged", `${formatBytes(a.ackedBytes)}; in flight at most ${formatBytes(a.maxInFlightBytes)} (window up to ${formatBytes(a.maxWindowBytes)}), quickest ack ${formatMs(a.minRttMs)}`);
  }
  row("throttle", r.throttleSteps ? `${r.throttlePercent}% after ${r.throttleSteps} auto-converge step(s)` : "none");
  const reasons = Object.entries(r.exits.byReason).filter(([, n]) => n > 0).map(([k, n]) => `${k} ${n}`);
  row("VM exits (source)", `${r.exits.total}${reasons.length ? `  (${reasons.join(", ")})` : ""}`);
  if (r.destination) {
    const d = r.destination;
    row("on destination", `ran to ${(d.virtualNs / 1e9).toFixed(3)} s virtual, ${d.ticks} timer ticks, ${d.exits} VM exits`);
    row("final digest", d.digest);
  }
  if (r.roundStats.length > 0) lines.push("", ...roundTable(r.roundStats));
  if (r.model) {
    const { input: i, prediction: p } = r.model;
    lines.push("", `  model (M = ${formatBytes(i.memoryBytes)}, B = ${formatRate(i.bandwidth)}, d = ${formatRate(i.dirtyRate)}, d/B = ${p.ratio.toFixed(3)}):`);
    lines.push(`    predicted  ${plural(p.rounds, "round")}, downtime ${formatMs(p.downtimeMs)}, total ${formatMs(p.totalMs)}; M/(B−d) = ${formatMs(p.closedFormTotalMs)}${p.meetsLimit ? "" : "; the limit is not met before the round cap"}`);
    lines.push(`    measured   ${plural(r.rounds, "round")}, downtime ${formatMs(r.downtimeMs)}, total ${formatMs(r.totalMs)} (memory rounds ${formatMs(r.roundStats.reduce((a, s) => a + s.durationMs, 0))})`);
    lines.push(`    per round  predicted ${volumes(p.roundBytes)}`);
    lines.push(`               measured  ${volumes(r.roundStats.map((s) => s.pages * r.pageSize))}`);
  }
  return lines.join("\n");
}

/** Round volumes, the first few and the last when there are many. */
function volumes(bytes: readonly number[]): string {
  const shown = bytes.length > 10 ? [...bytes.slice(0, 8).map(formatBytes), "…", formatBytes(bytes[bytes.length - 1])] : bytes.map(formatBytes);
  return shown.join(" → ");
}

function plural(n: number, word: string): string {
  return `${n} ${word}${n === 1 ? "" : "s"}`;
}

function roundTable(stats: readonly RoundStat[]): string[] {
  const head = "  round      pages    zero   on wire      time   dirtied  exp. downtime  throttle";
  const rows = stats.map((s) =>
    [
      `  ${(s.stopAndCopy ? "stop" : s.postcopy ? "post" : String(s.round)).padEnd(6)}`,
      String(s.pages).padStart(10),
      String(s.zeroPages).padStart(8),
      formatBytes(s.bytes).padStart(10),
      formatMs(s.durationMs).padStart(10),
      (s.stopAndCopy ? "–" : String(s.dirtiedPages)).padStart(10),
      (s.stopAndCopy ? "–" : formatMs(s.expectedDowntimeMs)).padStart(15),
      `${s.throttlePercent}%`.padStart(10),
    ].join(""),
  );
  return [
    head,
    ...rows,
    `  pages sent     ${sparkline(stats.map((s) => s.pages))}`,
    `  pages dirtied  ${sparkline(stats.filter((s) => !s.stopAndCopy).map((s) => s.dirtiedPages))}`,
  ];
}

/** A bar chart of pages sent and pages dirtied per round, as a standalone SVG document. */
export function roundChartSvg(r: MigrationReport): string {
  const stats = r.roundStats;
  const width = 720;
  const height = 360;
  const left = 70;
  const bottom = 50;
  const top = 50;
  const plotW = width - left - 20;
  const plotH = height - top - bottom;
  const max = Math.max(1, ...stats.map((s) => Math.max(s.pages, s.dirtiedPages)));
  const slot = plotW / Math.max(1, stats.length);
  const barW = Math.max(2, slot * 0.38);
  const y = (v: number): number => top + plotH - (v / max) * plotH;
  const parts: string[] = [];
  for (let k = 0; k <= 4; k++) {
    const v = (max * k) / 4;
    parts.push(`<line x1="${left}" x2="${left + plotW}" y1="${y(v).toFixed(1)}" y2="${y(v).toFixed(1)}" stroke="#ddd"/>`);
    parts.push(`<text x="${left - 6}" y="${(y(v) + 4).toFixed(1)}" text-anchor="end">${Math.round(v)}</text>`);
  }
  stats.forEach((s, i) => {
    const x = left + i * slot + slot / 2;
    parts.push(bar(x - barW, y(s.pages), barW, top + plotH - y(s.pages), "#3b6fb6", `round ${s.round}: ${s.pages} pages sent`));
    if (!s.stopAndCopy) parts.push(bar(x, y(s.dirtiedPages), barW, top + plotH - y(s.dirtiedPages), "#e08a2c", `round ${s.round}: ${s.dirtiedPages} pages dirtied`));
    parts.push(`<text x="${x.toFixed(1)}" y="${top + plotH + 16}" text-anchor="middle">${s.stopAndCopy ? "stop" : s.round}</text>`);
  });
  const title = `Live migration (${r.workload}, ${formatBytes(r.memoryBytes)}): ${r.status}, downtime ${formatMs(r.downtimeMs)}, total ${formatMs(r.totalMs)}`;
  return [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" viewBox="0 0 ${width} ${height}" font-family="sans-serif" font-size="11">`,
    `<rect width="100%" height="100%" fill="white"/>`,
    `<text x="${width / 2}" y="20" text-anchor="middle" font-size="13">${escapeXml(title)}</text>`,
    `<rect x="${left}" y="30" width="10" height="10" fill="#3b6fb6"/><text x="${left + 14}" y="39">pages sent</text>`,
    `<rect x="${left + 100}" y="30" width="10" height="10" fill="#e08a2c"/><text x="${left + 114}" y="39">pages dirtied during the round</text>`,
    ...parts,
    `<line x1="${left}" x2="${left + plotW}" y1="${top + plotH}" y2="${top + plotH}" stroke="#333"/>`,
    `<text x="${left + plotW / 2}" y="${height - 12}" text-anchor="middle">round</text>`,
    `</svg>`,
    "",
  ].join("\n");
}

function bar(x: number, y: number, w: number, h: number, fill: string, title: string): string {
  return `<rect x="${x.toFixed(1)}" y="${y.toFixed(1)}" width="${w.toFixed(1)}" height="${Math.max(0, h).toFixed(1)}" fill="${fill}"><title>${escapeXml(title)}</title></rect>`;
}

export function escapeXml(s: string): string {
  return s.replace(/[<>&"']/g, (c) => `&#${c.charCodeAt(0)};`);
}
