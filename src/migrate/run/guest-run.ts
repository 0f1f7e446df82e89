// The guest a migration moves, from a few user-level choices: a named workload sized to the
// memory given, on a machine with every device, the CPUs asked for and the BLMVisor hypervisor policy.

import { Machine } from "../../core/machine.js";
import { GuestMemory } from "../../guest/memory.js";
import { PAGE_SIZE } from "../../guest/page.js";
import { WORK_BASE_PAGE } from "../../guest/layout.js";
import { Guest } from "../../guest/workload.js";
import { WORKLOADS, type WorkloadConfig } from "../../guest/config.js";
import type { InterruptSetup } from "../../guest/drivers.js";

export interface GuestRunSpec {
  /** A key of WORKLOADS. */
  workload: string;
  interrupts: InterruptSetup;
  memoryBytes: number;
  /** Overrides the workload's own dirty rate, bytes per virtual second. */
  dirtyBytesPerSecond?: number;
  /** Overrides the workload's working set (whole pages). */
  workingSetBytes?: number;
  seed: number;
  /** vCPUs, 1 .. MAX_CPUS (1 if not given). */
  cpus?: number;
  /** Virtual time at which the guest's run ends. */
  endNs: number;
}

export const WORKLOAD_NAMES = Object.keys(WORKLOADS);

/** The workload's configuration; a preset working set shrinks to fit the memory, a chosen one must fit. */
export function workloadConfig(spec: GuestRunSpec): WorkloadConfig {
  const preset = WORKLOADS[spec.workload];
  if (!preset) throw new RangeError(`unknown workload ${JSON.stringify(spec.workload)} (known: ${WORKLOAD_NAMES.join(", ")})`);
  const room = spec.memoryBytes - WORK_BASE_PAGE * PAGE_SIZE;
  if (room < PAGE_SIZE) throw new RangeError(`guest memory of ${spec.memoryBytes} bytes leaves no room for a working set above 1 MiB`);
  if (spec.workingSetBytes !== undefined && spec.workingSetBytes > room) {
    throw new RangeError(`a working set of ${spec.workingSetBytes} bytes does not fit above 1 MiB in ${spec.memoryBytes} bytes of memory`);
  }
  return {
    ...preset,
    workingSetBytes: spec.workingSetBytes ?? Math.min(preset.workingSetBytes, Math.floor(room / PAGE_SIZE) * PAGE_SIZE),
    dirtyBytesPerSecond: Math.round(spec.dirtyBytesPerSecond ?? preset.dirtyBytesPerSecond),
    interrupts: spec.interrupts,
    seed: spec.seed,
    cpus: spec.cpus ?? 1,
  };
}

export function bootGuest(spec: GuestRunSpec): Guest {
  const config = workloadConfig(spec);
  return Guest.boot(new GuestMemory(spec.memoryBytes), config, Machine.create({ cpus: config.cpus }));
}

/** The digest the guest ends with when it runs its whole run in one place, never migrated. */
export function referenceDigest(spec: GuestRunSpec): string {
  return referenceDigestOf(workloadConfig(spec), spec.memoryBytes, spec.endNs);
}

/** referenceDigest for a guest known by its configuration (a snapshot's, say). */
export function referenceDigestOf(config: WorkloadConfig, memoryBytes: number, endNs: number): string {
  const guest = Guest.boot(new GuestMemory(memoryBytes), config, Machine.create({ cpus: config.cpus }));
  guest.runUntil(endNs);
  return guest.digest();
}
