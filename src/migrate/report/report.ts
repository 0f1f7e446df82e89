// Showing a migration: the final report, the per-round sparklines, and the per-round chart as
// an SVG file (the live progress is in progress.ts).

import type { MigrationReport, RoundStat } from "./metrics.js";
import type { Technique } from "../source/techniques.js";
import { formatBytes, formatMs, formatRate } from "./units.js";
import { linearTicks, timeUnit, verticalAxis, type Plot } from "./axis.js";

const SPARKS = "▁▂▃▄▅▆▇█";

/** One character per value, scaled to the largest; zero is a blank-looking lowest bar. */
export function sparkline(values: readonly number[]): string {
  const max = Math.max(0, ...values);
  return values.map((v) => (max === 0 ? SPARKS[0] : SPARKS[Math.min(SPARKS.length - 1, Math.floor((v / max) * (SPARKS.length - 1) + 0.5))])).join("");
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
  if (r.snapshot && "path" in r.snapshot) row("paused guest saved", `${r.snapshot.path}  (continue it: blmv resume ${r.snapshot.path}; or send it again: blmv migrate send --from ${r.snapshot.path} --to URL)`);
  if (r.snapshot && "error" in r.snapshot) row("paused guest", `NOT SAVED: ${r.snapshot.error}`);
  row("workload", `${r.workload}, ${r.cpus} ${r.cpus === 1 ? "CPU" : "CPUs"}, ${formatBytes(r.memoryBytes)} of guest memory in ${formatBytes(r.pageSize)} pages`);
  row("total time", `${formatMs(r.totalMs)}  (setup ${formatMs(r.setupMs)})`);
  if (r.status === "completed") {
    const over = r.downtimeOverLimit ? `  OVER THE LIMIT by ${formatMs(r.downtimeMs - r.downtimeLimitMs)}` : "";
    row("downtime", `${formatMs(r.downtimeMs)}  (expected ${formatMs(r.expectedDowntimeMs)}, limit ${formatMs(r.downtimeLimitMs)})${over}`);
  } else if (r.downtimeMs > 0) {
    row("downtime", `${formatMs(r.downtimeMs)}  (from the pause${r.status === "unconfirmed" ? "; the guest is still paused" : " until the guest ran again here"})`);
  }
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
  if (r.exits.byCpu.length > 1) row("by CPU", r.exits.byCpu.map((n, k) => `cpu ${k}: ${n}`).join("; "));
  if (r.destination) {
    const d = r.destination;
    row("on destination", `ran to ${(d.virtualNs / 1e9).toFixed(3)} s virtual, ${d.ticks} timer ticks, ${d.exits} VM exits`);
    row("final digest", d.digest);
  }
  if (r.roundStats.length > 0) lines.push("", ...roundTable(r.roundStats));
  if (r.model) {
    const { input: i, prediction: p } = r.model;
    lines.push("", `  post-hoc model (measured M = ${formatBytes(i.memoryBytes)}, B = ${formatRate(i.bandwidth)}, d = ${formatRate(i.dirtyRate)}, d/B = ${p.ratio.toFixed(3)}):`);
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

/**
 * The per-round chart as a standalone SVG document: pages sent and pages dirtied in each round
 * as bars (left axis), the downtime expected after each pre-copy round as a line (right axis)
 * against the downtime limit, and the measured downtime at the stop.
 */
export function roundChartSvg(r: MigrationReport): string {
  const stats = r.roundStats;
  const [width, height] = [760, 400];
  const plot: Plot = { left: 80, top: 62, width: width - 80 - 90, height: height - 62 - 56 };
  const pageTicks = linearTicks(Math.max(1, ...stats.map((s) => Math.max(s.pages, s.dirtiedPages))));
  const pageMax = pageTicks[pageTicks.length - 1];
  const yPages = (v: number): number => plot.top + plot.height - (v / pageMax) * plot.height;
  const expected = stats.map((s) => (s.stopAndCopy || s.postcopy || !Number.isFinite(s.expectedDowntimeMs) ? undefined : s.expectedDowntimeMs));
  const downtime = r.status === "completed" ? r.downtimeMs : undefined;
  const msMax = Math.max(r.downtimeLimitMs, downtime ?? 0, ...expected.map((e) => e ?? 0));
  const unit = timeUnit(msMax);
  const msTicks = linearTicks(msMax * unit.perMs);
  const msTop = msTicks[msTicks.length - 1] / unit.perMs;
  const yMs = (ms: number): number => plot.top + plot.height - (ms / msTop) * plot.height;
  const slot = plot.width / Math.max(1, stats.length);
  const barW = Math.max(2, slot * 0.36);
  const xOf = (i: number): number => plot.left + i * slot + slot / 2;
  const parts: string[] = [
    ...verticalAxis(plot, "left", pageTicks, yPages, `pages (${formatBytes(r.pageSize)} each)`),
    ...verticalAxis(plot, "right", msTicks, (v) => yMs(v / unit.perMs), `downtime (${unit.name})`),
  ];
  const labelEvery = Math.ceil(stats.length / 20);
  stats.forEach((s, i) => {
    const x = xOf(i);
    const name = s.stopAndCopy ? "stop" : s.postcopy ? "post" : String(s.round);
    parts.push(bar(x - barW, yPages(s.pages), barW, plot.top + plot.height - yPages(s.pages), "#3b6fb6", `round ${name}: ${s.pages} pages sent`));
    if (!s.stopAndCopy && !s.postcopy) parts.push(bar(x, yPages(s.dirtiedPages), barW, plot.top + plot.height - yPages(s.dirtiedPages), "#e08a2c", `round ${name}: ${s.dirtiedPages} pages dirtied`));
    if (i % labelEvery === 0 || s.stopAndCopy || s.postcopy) parts.push(`<text class="tick" x="${x.toFixed(1)}" y="${plot.top + plot.height + 16}" text-anchor="middle">${name}</text>`);
  });
  const points = expected.flatMap((e, i) => (e === undefined ? [] : [[xOf(i), yMs(e), e] as const]));
  if (points.length > 1) parts.push(`<polyline points="${points.map(([x, y]) => `${x.toFixed(1)},${y.toFixed(1)}`).join(" ")}" fill="none" stroke="#2e7d4f" stroke-width="2"/>`);
  for (const [x, y, e] of points) parts.push(`<circle cx="${x.toFixed(1)}" cy="${y.toFixed(1)}" r="3.5" fill="#2e7d4f"><title>expected downtime ${escapeXml(formatMs(e))}</title></circle>`);
  const limitY = yMs(r.downtimeLimitMs).toFixed(1);
  parts.push(`<line class="downtime-limit" x1="${plot.left}" x2="${plot.left + plot.width}" y1="${limitY}" y2="${limitY}" stroke="#c62828" stroke-width="1.5" stroke-dasharray="6 4"/>`);
  parts.push(`<text x="${plot.left + plot.width - 4}" y="${Number(limitY) - 4}" text-anchor="end" fill="#c62828">downtime limit ${escapeXml(formatMs(r.downtimeLimitMs))}</text>`);
  const stop = stats.findIndex((s) => s.stopAndCopy || s.postcopy);
  if (downtime !== undefined && stop >= 0) {
    const [x, y] = [xOf(stop), yMs(downtime)];
    parts.push(`<path d="M${x.toFixed(1)} ${(y - 6).toFixed(1)} l6 6 l-6 6 l-6 -6 z" fill="#c62828"><title>measured downtime ${escapeXml(formatMs(downtime))}</title></path>`);
  }
  const over = r.downtimeOverLimit ? " OVER THE LIMIT" : "";
  const title = `${TITLE[r.technique]} of a ${r.workload} guest (${formatBytes(r.memoryBytes)}${r.bandwidthLimitBytesPerSec ? `, link ${formatRate(r.bandwidthLimitBytesPerSec)}` : ""}): ${r.status}`;
  const subtitle = `downtime ${formatMs(r.downtimeMs)}${over} (limit ${formatMs(r.downtimeLimitMs)}), total ${formatMs(r.totalMs)}, ${r.rounds} pre-copy rounds`;
  const legend = [
    `<rect x="${plot.left}" y="44" width="10" height="10" fill="#3b6fb6"/><text x="${plot.left + 14}" y="53">pages sent</text>`,
    `<rect x="${plot.left + 90}" y="44" width="10" height="10" fill="#e08a2c"/><text x="${plot.left + 104}" y="53">pages dirtied during the round</text>`,
    `<line x1="${plot.left + 290}" x2="${plot.left + 310}" y1="49" y2="49" stroke="#2e7d4f" stroke-width="2"/><text x="${plot.left + 314}" y="53">expected downtime</text>`,
    `<path d="M${plot.left + 450} 43 l6 6 l-6 6 l-6 -6 z" fill="#c62828"/><text x="${plot.left + 460}" y="53">measured downtime</text>`,
  ];
  return [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" viewBox="0 0 ${width} ${height}" font-family="sans-serif" font-size="11">`,
    `<rect width="100%" height="100%" fill="white"/>`,
    `<text x="${width / 2}" y="18" text-anchor="middle" font-size="13">${escapeXml(title)}</text>`,
    `<text x="${width / 2}" y="34" text-anchor="middle">${escapeXml(subtitle)}</text>`,
    ...legend,
    ...parts,
    `<line x1="${plot.left}" x2="${plot.left + plot.width}" y1="${plot.top + plot.height}" y2="${plot.top + plot.height}" stroke="#333"/>`,
    `<text class="axis-label" x="${plot.left + plot.width / 2}" y="${height - 14}" text-anchor="middle">round (pre-copy rounds, then ${stats.some((s) => s.postcopy) ? "post-copy" : "stop-and-copy"})</text>`,
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
