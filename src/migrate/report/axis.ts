// Chart axes shared by the SVG charts: round tick values in 1-2-5 steps (linear or
// logarithmic), one time unit per axis, and the SVG of an axis with its ticks and label.

/** A step of 1, 2 or 5 × 10^k at or above `raw`. */
function niceStep(raw: number): number {
  const power = 10 ** Math.floor(Math.log10(raw));
  const f = raw / power;
  return (f <= 1 ? 1 : f <= 2 ? 2 : f <= 5 ? 5 : 10) * power;
}

/** Round ticks from 0 to at least `max`, in 1-2-5 steps, about `count` intervals. */
export function linearTicks(max: number, count = 5): number[] {
  if (!(max > 0) || !Number.isFinite(max)) return [0, 1];
  const step = niceStep(max / count);
  const n = Math.ceil(max / step - 1e-9);
  return Array.from({ length: n + 1 }, (_, i) => Number((i * step).toPrecision(12)));
}

/** Ticks at 1, 2 and 5 × 10^k from `lo` to `hi` (both powers of ten); powers of ten alone over more than three decades. */
export function logTicks(lo: number, hi: number): number[] {
  const decades = Math.round(Math.log10(hi / lo));
  const ticks: number[] = [];
  for (let d = 0; d <= decades; d++) {
    const base = Number((lo * 10 ** d).toPrecision(12));
    for (const m of decades > 3 || d === decades ? [1] : [1, 2, 5]) ticks.push(Number((base * m).toPrecision(12)));
  }
  return ticks;
}

/** The one unit a time axis up to `maxMs` is labelled in: ms up to 10 s, else s. */
export function timeUnit(maxMs: number): { name: "ms" | "s"; perMs: number } {
  return maxMs > 10_000 ? { name: "s", perMs: 1 / 1000 } : { name: "ms", perMs: 1 };
}

/** A tick value as a short number: 0.5, 20, 1,000. */
export function tickText(v: number): string {
  return v.toLocaleString("en-US", { maximumFractionDigits: 3 });
}

export interface Plot {
  left: number;
  top: number;
  width: number;
  height: number;
}

/** A vertical axis with gridlines, tick labels and a rotated label, on the plot's left or right. */
export function verticalAxis(plot: Plot, side: "left" | "right", ticks: readonly number[], y: (v: number) => number, label: string, format: (v: number) => string = tickText): string[] {
  const x = side === "left" ? plot.left : plot.left + plot.width;
  const anchor = side === "left" ? "end" : "start";
  const dx = side === "left" ? -6 : 6;
  const parts = [`<line x1="${x}" x2="${x}" y1="${plot.top}" y2="${plot.top + plot.height}" stroke="#333"/>`];
  for (const v of ticks) {
    const ty = y(v).toFixed(1);
    if (side === "left") parts.push(`<line x1="${plot.left}" x2="${plot.left + plot.width}" y1="${ty}" y2="${ty}" stroke="#e4e4e4"/>`);
    parts.push(`<line x1="${x}" x2="${x + (side === "left" ? -4 : 4)}" y1="${ty}" y2="${ty}" stroke="#333"/>`);
    parts.push(`<text class="tick" x="${x + dx}" y="${(Number(ty) + 4).toFixed(1)}" text-anchor="${anchor}">${format(v)}</text>`);
  }
  const lx = side === "left" ? plot.left - 52 : plot.left + plot.width + 56;
  const ly = plot.top + plot.height / 2;
  parts.push(`<text class="axis-label" x="${lx}" y="${ly}" text-anchor="middle" transform="rotate(-90 ${lx} ${ly})">${label}</text>`);
  return parts;
}
