// Sizes and rates as people type and read them. Byte units are binary (1K = 1024 bytes, as
// memory is sized and as QEMU reads its bandwidth limit); bit units are decimal, as links are
// sold (1Gbit = 10⁹ bits per second).

const BINARY: Record<string, number> = { "": 1, k: 2 ** 10, m: 2 ** 20, g: 2 ** 30, t: 2 ** 40 };
const DECIMAL: Record<string, number> = { "": 1, k: 1e3, m: 1e6, g: 1e9, t: 1e12 };

/** "256M", "1G", "64KiB", "4096" → bytes; undefined when the text is not a size. */
export function parseSize(text: string): number | undefined {
  const m = /^(\d+(?:\.\d+)?)\s*([kmgt]?)(?:i?b)?$/i.exec(text.trim());
  if (!m) return undefined;
  const bytes = Number(m[1]) * BINARY[m[2].toLowerCase()];
  return Number.isSafeInteger(bytes) ? bytes : undefined;
}

/** "100M" or "100MB/s" (bytes per second), "1Gbit" or "1Gbps" (bits per second) → bytes per second. */
export function parseRate(text: string): number | undefined {
  const m = /^(\d+(?:\.\d+)?)\s*([kmgt]?)(bit|bps|b|ib|)(?:\/s)?$/i.exec(text.trim());
  if (!m) return undefined;
  const unit = m[3];
  // "bit", or a lowercase b (Mb, Mbps), means bits; B, Bps or iB means bytes.
  const bits = /^bit$/i.test(unit) || unit.startsWith("b");
  const rate = bits ? (Number(m[1]) * DECIMAL[m[2].toLowerCase()]) / 8 : Number(m[1]) * BINARY[m[2].toLowerCase()];
  return Number.isFinite(rate) ? rate : undefined;
}

export function formatBytes(n: number): string {
  if (n < 1024) return `${Math.round(n)} B`;
  const units = ["KiB", "MiB", "GiB", "TiB"];
  let v = n / 1024;
  let i = 0;
  while (v >= 1024 && i < units.length - 1) {
    v /= 1024;
    i++;
  }
  return `${v < 10 ? v.toFixed(2) : v < 100 ? v.toFixed(1) : v.toFixed(0)} ${units[i]}`;
}

export function formatRate(bytesPerSec: number): string {
  if (!Number.isFinite(bytesPerSec)) return "∞";
  return `${formatBytes(bytesPerSec)}/s (${((bytesPerSec * 8) / 1e6).toFixed(bytesPerSec * 8 < 1e8 ? 1 : 0)} Mbit/s)`;
}

export function formatMs(ms: number): string {
  if (!Number.isFinite(ms)) return "∞";
  if (ms < 10) return `${ms.toFixed(2)} ms`;
  if (ms < 10_000) return `${ms.toFixed(0)} ms`;
  return `${(ms / 1000).toFixed(1)} s`;
}
