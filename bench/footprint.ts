// Resident memory of the benchmark's processes, for B10: the peak (VmHWM) and current (VmRSS)
// resident set from /proc/self/status, and resetting the peak so a phase can be measured alone;
// and what the resident set is made of. docs/performance.md.

import { readFileSync, writeFileSync } from "node:fs";

/** Bytes of a /proc/self/status field given in kB, or undefined where there is no such file. */
function statusBytes(field: "VmHWM" | "VmRSS" | "RssAnon" | "RssFile"): number | undefined {
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

/** What this process's memory is now, in bytes: resident anonymous and file-backed pages (mostly the `node` binary's code), and Node's own account of its heap and of the buffers outside it. */
export interface MemoryMakeup {
  residentAnon?: number;
  residentFile?: number;
  /** The JavaScript heap in use. */
  heapUsed: number;
  /** Memory outside the JavaScript heap that JavaScript objects hold: ArrayBuffers (guest memory included), WebAssembly memories, native buffers. */
  external: number;
  /** Of `external`, ArrayBuffers and Node buffers. */
  arrayBuffers: number;
}

export function memoryMakeup(): MemoryMakeup {
  const { heapUsed, external, arrayBuffers } = process.memoryUsage();
  return { residentAnon: statusBytes("RssAnon"), residentFile: statusBytes("RssFile"), heapUsed, external, arrayBuffers };
}
