// What a workload is: the few numbers that decide a guest's run, and the named workloads.
// docs/migration.md describes them.

import type { InterruptSetup } from "./drivers.js";

export type DirtyPattern = "uniform" | "hot" | "scan";

export interface WorkloadConfig {
  /** "idle" | "uniform" | "hot" | "scan" for the WORKLOADS, anything (≤ 32 bytes) otherwise. */
  name: string;
  interrupts: InterruptSetup;
  /** Page writes per virtual second × PAGE_SIZE. */
  dirtyBytesPerSecond: number;
  /** The pages the workload writes (for "hot": the hot set), from 1 MiB up. */
  workingSetBytes: number;
  pattern: DirtyPattern;
  seed: number;
  /** CPU 0's timer rate; each other CPU's own APIC timer runs a little slower (workload.ts). */
  timerHz: number;
  /** vCPUs, 1 .. MAX_CPUS: CPU 0 boots the others with INIT and start-up IPIs. */
  cpus: number;
}

const MiB = 1024 * 1024;

export const WORKLOADS: Record<string, Omit<WorkloadConfig, "seed" | "interrupts" | "cpus">> = {
  /** Background activity: a slow trickle of writes, a 100 Hz tick. */
  idle: { name: "idle", dirtyBytesPerSecond: 1 * MiB, workingSetBytes: 16 * MiB, pattern: "uniform", timerHz: 100 },
  /** Random pages of a large working set. */
  uniform: { name: "uniform", dirtyBytesPerSecond: 64 * MiB, workingSetBytes: 128 * MiB, pattern: "uniform", timerHz: 1000 },
  /** A fast writer whose writes mostly fall in a small hot set (1 in 16 go anywhere above it). */
  hot: { name: "hot", dirtyBytesPerSecond: 256 * MiB, workingSetBytes: 8 * MiB, pattern: "hot", timerHz: 1000 },
  /** Sweeps a large buffer page after page: the hardest case for pre-copy. */
  scan: { name: "scan", dirtyBytesPerSecond: 128 * MiB, workingSetBytes: 192 * MiB, pattern: "scan", timerHz: 1000 },
};
