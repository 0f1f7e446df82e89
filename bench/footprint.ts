// Resident memory of the benchmark's processes, for B10: the peak (VmHWM) and current (VmRSS)
// resident set from /proc/self/status, and resetting the peak so a phase can be measured alone.
// docs/performance.md.

import { readFileSync, writeFileSync } from "node:fs";

/** Bytes of a /proc/self/status field given in kB, or undefined where there is no such file. */
function statusBytes(field: "VmHWM" | "VmRSS"): number | undefined {
  try {
    const line = readFileSync("/proc/self/status", "utf8").split("\n").find((l) => l.startsWith(`${field}:`));
    return line === undefined ? undefined : Number(/(\d+)/.exec(line)![1]) * 1024;
  } catch {
    return undefined;
  }
}

/** This process's peak resident set so far (since the last resetPeakRss), in bytes. */
export function peakRssBytes(): number {
  return statusBytes("VmHWM") ?? process.resourceUsage().maxRSS * 1024;
}

/** This process's resident set now, in bytes. */
export function rssBytes(): number {
  return statusBytes("VmRSS") ?? process.memoryUsage.rss();
}

/** Sets the peak back to the current resident set (Linux: clear_refs 5); false where it cannot. */
export function resetPeakRss(): boolean {
  try {
    writeFileSync("/proc/self/clear_refs", "5");
    return true;
  } catch {
    return false;
  }
}
