// The guest's CPU and machine rebuilt from the records a source captured, checked against the
// configuration it announced: what a destination does at `state` or `handoff`, and what loading
// a snapshot does (run/snapshot.ts). docs/migration.md.

import { DEFAULT_CONFIG, DeviceStateError, Machine, type MachineConfig } from "../../core/machine.js";
import { FieldError } from "../../core/fields.js";
import { CpuStateError, cpusFromRecord, type CpuState } from "../../guest/cpu.js";
import { ProtocolError, decodeRecord, type Config } from "../wire/protocol.js";

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
