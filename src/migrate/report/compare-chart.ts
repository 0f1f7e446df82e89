// The comparison as an SVG line chart: total migration time (solid) and downtime (dashed)
// against the varied setting, one colour and marker per technique, on a shared logarithmic
// time axis in one unit, with the downtime limit drawn. Coinciding points are set a few pixels
// apart so that every line stays visible.

import type { CompareRow } from "../run/compare.js";
import { escapeXml } from "./report.js";
import { formatMs } from "./units.js";
import { logTicks, tickText, timeUnit, verticalAxis, type Plot } from "./axis.js";

const COLOURS = ["#3b6fb6", "#e08a2c", "#2e7d4f", "#8e3b9e", "#6d4c2f"];
/** Marker shapes, one per technique, as SVG path data centred on 0,0. */
const MARKERS = ["M-4 -4 h8 v8 h-8 z", "M0 -5 l5 5 l-5 5 l-5 -5 z", "M0 -5 l5 9 h-10 z", "M-4 -4 l8 8 m0 -8 l-8 8", "M-4.5 0 a4.5 4.5 0 1 0 9 0 a4.5 4.5 0 1 0 -9 0"];
/** Distance between techniques' points at the same place: across, and a little up or down so that equal lines lie side by side. */
const SPREAD_PX = 5;
const LIFT_PX = 2;
/** Room between the axes and the first and last setting. */
const INSET_PX = 30;

export interface ComparisonChartOptions {
  /** The varied setting (x axis). */
  xLabel: string;
  formatX: (x: number) => string;
  /** The settings every run shares, for the title. */
  fixed: string;
  downtimeLimitMs: number;
}

export function comparisonChartSvg(rows: readonly CompareRow[], options: ComparisonChartOptions): string {
  const { xLabel, formatX, fixed, downtimeLimitMs } = options;
  const [width, height] = [780, 440];
  const plot: Plot = { left: 80, top: 56, width: width - 80 - 180, height: height - 56 - 56 };
  const xs = [...new Set(rows.map((r) => r.x))].sort((a, b) => a - b);
  const times = [...rows.flatMap((r) => [r.totalMs, r.downtimeMs]), downtimeLimitMs].filter((v) => v > 0 && Number.isFinite(v));
  const lo = 10 ** Math.floor(Math.log10(Math.max(0.01, Math.min(...times))));
  const hi = 10 ** Math.ceil(Math.log10(Math.max(lo * 10, ...times)));
  const unit = timeUnit(hi);
  const ticks = logTicks(lo, hi);
  const x = (v: number): number => plot.left + (xs.length === 1 ? plot.width / 2 : INSET_PX + (xs.indexOf(v) / (xs.length - 1)) * (plot.width - 2 * INSET_PX));
  const y = (ms: number): number => plot.top + plot.height - ((Math.log10(Math.max(ms, lo)) - Math.log10(lo)) / (Math.log10(hi) - Math.log10(lo))) * plot.height;
  const parts: string[] = verticalAxis(plot, "left", ticks, y, `time (${unit.name}, logarithmic)`, (ms) => tickText(ms * unit.perMs));
  for (const v of xs) parts.push(`<text class="tick" x="${x(v).toFixed(1)}" y="${plot.top + plot.height + 16}" text-anchor="middle">${escapeXml(formatX(v))}</text>`);
  const limitY = y(downtimeLimitMs).toFixed(1);
  parts.push(`<line class="downtime-limit" x1="${plot.left}" x2="${plot.left + plot.width}" y1="${limitY}" y2="${limitY}" stroke="#c62828" stroke-width="1.5" stroke-dasharray="2 3"/>`);
  parts.push(`<text x="${plot.left + 4}" y="${Number(limitY) - 4}" fill="#c62828">downtime limit ${escapeXml(formatMs(downtimeLimitMs))}</text>`);
  const techniques = [...new Set(rows.map((r) => r.technique))];
  techniques.forEach((t, i) => {
    const colour = COLOURS[i % COLOURS.length];
    const marker = MARKERS[i % MARKERS.length];
    const spread = i - (techniques.length - 1) / 2;
    const offset = spread * SPREAD_PX;
    const at = (r: CompareRow, key: "totalMs" | "downtimeMs"): string => `${(x(r.x) + offset).toFixed(1)} ${(y(r[key]) - spread * LIFT_PX).toFixed(1)}`;
    const mine = rows.filter((r) => r.technique === t).sort((a, b) => a.x - b.x);
    for (const [key, dash] of [["totalMs", ""], ["downtimeMs", ` stroke-dasharray="6 4"`]] as const) {
      const points = mine.map((r) => at(r, key).replace(" ", ",")).join(" ");
      parts.push(`<polyline points="${points}" fill="none" stroke="${colour}" stroke-width="2"${dash}/>`);
      for (const r of mine) {
        const what = `${t}, ${r.setting || "run"}: ${key === "totalMs" ? "total" : "downtime"} ${formatMs(r[key])}`;
        const fill = key === "totalMs" ? colour : "white";
        parts.push(`<path transform="translate(${at(r, key)})" d="${marker}" fill="${fill}" stroke="${colour}" stroke-width="1.5"><title>${escapeXml(what)}</title></path>`);
      }
    }
    const ly = plot.top + 10 + i * 20;
    const lx = plot.left + plot.width + 20;
    parts.push(`<line x1="${lx}" x2="${lx + 30}" y1="${ly}" y2="${ly}" stroke="${colour}" stroke-width="2"/><path transform="translate(${lx + 15} ${ly})" d="${marker}" fill="${colour}" stroke="${colour}"/><text x="${lx + 38}" y="${ly + 4}">${escapeXml(t)}</text>`);
  });
  const ly = plot.top + 20 + techniques.length * 20;
  const lx = plot.left + plot.width + 20;
  parts.push(`<text x="${lx}" y="${ly}">solid, filled: total time</text><text x="${lx}" y="${ly + 16}">dashed, hollow: downtime</text>`);
  return [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" viewBox="0 0 ${width} ${height}" font-family="sans-serif" font-size="11">`,
    `<rect width="100%" height="100%" fill="white"/>`,
    `<text x="${width / 2}" y="20" text-anchor="middle" font-size="13">Total migration time and downtime against ${escapeXml(xLabel)}</text>`,
    `<text x="${width / 2}" y="38" text-anchor="middle">${escapeXml(fixed)}</text>`,
    ...parts,
    `<line x1="${plot.left}" x2="${plot.left + plot.width}" y1="${plot.top + plot.height}" y2="${plot.top + plot.height}" stroke="#333"/>`,
    `<text class="axis-label" x="${plot.left + plot.width / 2}" y="${height - 14}" text-anchor="middle">${escapeXml(xLabel)}</text>`,
    `</svg>`,
    "",
  ].join("\n");
}
