// The guest's CPU and machine rebuilt from the records a source captured, checked against the
// configuration it announced: what a destination does at `state` or `handoff`, and what loading
// a snapshot does (run/snapshot.ts); and a rehearsal of all of it, so that a migration's first
// rebuild, inside its downtime, does not run cold code. docs/migration.md.

import { DEFAULT_CONFIG, DeviceStateError, Machine, type MachineConfig } from "../../core/machine.js";
import { FieldError } from "../../core/fields.js";
import { CpuStateError, cpusFromRecord, cpusToRecord, type CpuState } from "../../guest/cpu.js";
import { PAGE_SIZE } from "../../guest/page.js";
import { Guest } from "../../guest/workload.js";
import { ProtocolError, decodeRecord, encodeRecord, machineSpecOf, type Config } from "../wire/protocol.js";
import { bootGuest } from "../run/guest-run.js";

const RECORD_ERRORS = [CpuStateError, DeviceStateError, FieldError, RangeError];

/** Runs `f`; an impossible record (any error of the record readers) becomes a "state" ProtocolError. */
export function asState<T>(f: () => T): T {
  try {
    return f();
  } catch (e) {
    if (RECORD_ERRORS.some((E) => e instanceof E)) throw new ProtocolError("state", (e as Error).message);
    throw e;
  }
}

/**
 * Every CPU's state and a reconstructed machine from their records; the machine must be the one
 * `config` announced, with as many CPUs as the CPU record holds.
 */
export function rebuildRecords(config: Config, cpuRecord: Uint8Array, devices: Uint8Array): { cpus: CpuState[]; machine: Machine } {
  return asState(() => {
    const cpus = cpusFromRecord(decodeRecord(cpuRecord, "CPU"), config.machine.cpus);
    const machine = Machine.reconstruct(decodeRecord(devices, "device"), { policy: config.machine.policy });
    for (const k of Object.keys(DEFAULT_CONFIG) as (keyof MachineConfig)[]) {
      if (machine.config[k] !== config.machine[k]) {
        machine.release();
        throw new ProtocolError("state", `device record: ${k} is ${machine.config[k]}, the configuration said ${config.machine[k]}`);
      }
    }
    return { cpus, machine };
  });
}

/** The rehearsal's guest: the smallest memory a workload fits in, run for a millisecond. */
const REHEARSAL_MEMORY_BYTES = 2 * 1024 * 1024;
const REHEARSAL_NS = 1_000_000;

/**
 * Gets a destination ready before any downtime: the core (Machine.prepare), then one capture,
 * record encoding, rebuild and guest resumption of a small guest, so that the code a migration
 * runs while its guest is paused has run once already.
 */
export function prepareRebuild(): void {
  Machine.prepare();
  const guest = bootGuest({ workload: "idle", interrupts: "apic", memoryBytes: REHEARSAL_MEMORY_BYTES, seed: 1, endNs: REHEARSAL_NS });
  guest.runUntil(REHEARSAL_NS);
  const cpu = encodeRecord(cpusToRecord(guest.pause()));
  const devices = encodeRecord(guest.machine.capture());
  const config: Config = { t: "config", memoryBytes: REHEARSAL_MEMORY_BYTES, pageSize: PAGE_SIZE, machine: machineSpecOf(guest.machine), workload: "idle", endNs: REHEARSAL_NS };
  const { cpus, machine } = rebuildRecords(config, cpu, devices);
  Guest.resume(guest.memory, cpus, machine);
  machine.release();
  guest.machine.release();
}
