// The comparison as an SVG line chart: total migration time (solid) and downtime (dashed)
// against the varied setting, one colour per technique, on a shared logarithmic time axis.

import type { CompareRow } from "../run/compare.js";
import { escapeXml } from "./report.js";
import { formatMs } from "./units.js";

const COLOURS = ["#3b6fb6", "#e08a2c", "#3a9a5b", "#b8404a", "#7b5aa6"];

export function comparisonChartSvg(rows: readonly CompareRow[], xLabel: string, formatX: (x: number) => string): string {
  const width = 760;
  const height = 420;
  const [left, right, top, bottom] = [70, 170, 40, 50];
  const plotW = width - left - right;
  const plotH = height - top - bottom;
  const xs = [...new Set(rows.map((r) => r.x))].sort((a, b) => a - b);
  const times = rows.flatMap((r) => [r.totalMs, r.downtimeMs]).filter((v) => v > 0);
  const lo = Math.pow(10, Math.floor(Math.log10(Math.max(0.1, Math.min(...times)))));
  const hi = Math.pow(10, Math.ceil(Math.log10(Math.max(lo * 10, ...times))));
  const x = (v: number): number => left + (xs.length === 1 ? plotW / 2 : (xs.indexOf(v) / (xs.length - 1)) * plotW);
  const y = (ms: number): number => top + plotH - ((Math.log10(Math.max(ms, lo)) - Math.log10(lo)) / (Math.log10(hi) - Math.log10(lo))) * plotH;
  const parts: string[] = [];
  for (let v = lo; v <= hi; v *= 10) {
    parts.push(`<line x1="${left}" x2="${left + plotW}" y1="${y(v).toFixed(1)}" y2="${y(v).toFixed(1)}" stroke="#ddd"/>`);
    parts.push(`<text x="${left - 6}" y="${(y(v) + 4).toFixed(1)}" text-anchor="end">${formatMs(v)}</text>`);
  }
  for (const v of xs) parts.push(`<text x="${x(v).toFixed(1)}" y="${top + plotH + 16}" text-anchor="middle">${escapeXml(formatX(v))}</text>`);
  const techniques = [...new Set(rows.map((r) => r.technique))];
  techniques.forEach((t, i) => {
    const colour = COLOURS[i % COLOURS.length];
    const mine = rows.filter((r) => r.technique === t).sort((a, b) => a.x - b.x);
    for (const [key, dash] of [["totalMs", ""], ["downtimeMs", ` stroke-dasharray="5 4"`]] as const) {
      const points = mine.map((r) => `${x(r.x).toFixed(1)},${y(r[key]).toFixed(1)}`).join(" ");
      parts.push(`<polyline points="${points}" fill="none" stroke="${colour}" stroke-width="2"${dash}/>`);
      for (const r of mine) parts.push(`<circle cx="${x(r.x).toFixed(1)}" cy="${y(r[key]).toFixed(1)}" r="3" fill="${colour}"><title>${escapeXml(`${t}, ${r.setting}: ${key === "totalMs" ? "total" : "downtime"} ${formatMs(r[key])}`)}</title></circle>`);
    }
    const ly = top + 10 + i * 18;
    parts.push(`<line x1="${left + plotW + 15}" x2="${left + plotW + 40}" y1="${ly}" y2="${ly}" stroke="${colour}" stroke-width="2"/><text x="${left + plotW + 46}" y="${ly + 4}">${escapeXml(t)}</text>`);
  });
  const ly = top + 20 + techniques.length * 18;
  parts.push(`<text x="${left + plotW + 15}" y="${ly}">solid: total time</text><text x="${left + plotW + 15}" y="${ly + 16}">dashed: downtime</text>`);
  return [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" viewBox="0 0 ${width} ${height}" font-family="sans-serif" font-size="11">`,
    `<rect width="100%" height="100%" fill="white"/>`,
    `<text x="${left + plotW / 2}" y="20" text-anchor="middle" font-size="13">Total migration time and downtime against ${escapeXml(xLabel)}</text>`,
    ...parts,
    `<line x1="${left}" x2="${left + plotW}" y1="${top + plotH}" y2="${top + plotH}" stroke="#333"/>`,
    `<text x="${left + plotW / 2}" y="${height - 12}" text-anchor="middle">${escapeXml(xLabel)}</text>`,
    `</svg>`,
    "",
  ].join("\n");
}

