// The guest's CPU and machine rebuilt from the records a source captured, checked against the
// configuration it announced: what a destination does at `state` or `handoff`, and what loading
// a snapshot does (run/snapshot.ts); and a rehearsal of a pause's work on both sides, so that a
// migration's downtime does not run cold code. docs/migration.md.

import { performance } from "node:perf_hooks";
import { DEFAULT_CONFIG, DeviceStateError, Machine, type MachineConfig } from "../../core/machine.js";
import { FieldError } from "../../core/fields.js";
import { CpuStateError, cpusFromRecord, cpusToRecord, type CpuState } from "../../guest/cpu.js";
import { PageChecksums } from "../../guest/digest.js";
import { PAGE_SIZE } from "../../guest/page.js";
import { Guest } from "../../guest/workload.js";
import { ProtocolError, decodeRecord, encode, encodeRecord, machineSpecOf, stateDigest, type Commit, type Config, type State } from "../wire/protocol.js";
import { decode } from "../wire/decode.js";
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
/** A listener's rehearsals at start-up: run this often, the pause's code is optimized, not only compiled. */
export const LISTENER_REHEARSALS = 10;

/**
 * Gets a process ready before any downtime: the core (Machine.prepare), then `rounds` times a
 * pause's work on a small guest, both sides' — capture, record encoding, the timer probe, the
 * pause's messages (state, ready, commit, resumed) encoded and decoded, the digest, the rebuild,
 * the timer phases applied and the guest resumed — so that a migration's pause does not run cold
 * code. Returns the milliseconds the pause's work took in the fastest round (the others were
 * slower for running colder, or for sharing the machine).
 */
export function prepareRebuild(rounds = 1): number {
  Machine.prepare();
  let pauseMs = Infinity;
  for (let i = 0; i < rounds; i++) pauseMs = Math.min(pauseMs, rehearsePause());
  return pauseMs;
}

function rehearsePause(): number {
  const guest = bootGuest({ workload: "idle", interrupts: "apic", memoryBytes: REHEARSAL_MEMORY_BYTES, seed: 1, endNs: REHEARSAL_NS });
  guest.runUntil(REHEARSAL_NS);
  const start = performance.now();
  const bounds = { pageCount: guest.memory.pageCount };
  const cpu = encodeRecord(cpusToRecord(guest.pause()));
  const devices = encodeRecord(guest.machine.capture());
  const timerPhases = guest.machine.probeTimerPhases();
  const digest = stateDigest(new PageChecksums(bounds.pageCount).digest(), cpu, devices);
  const state = decode(encode({ t: "state", batches: 0, cpu, devices, digest }), bounds) as State;
  const config: Config = { t: "config", memoryBytes: REHEARSAL_MEMORY_BYTES, pageSize: PAGE_SIZE, machine: machineSpecOf(guest.machine), workload: "idle", endNs: REHEARSAL_NS };
  const { cpus, machine } = rebuildRecords(config, state.cpu, state.devices);
  decode(encode({ t: "ready", digest: stateDigest(new PageChecksums(bounds.pageCount).digest(), state.cpu, state.devices) }), bounds);
  machine.applyTimerPhases((decode(encode({ t: "commit", timerPhases }), bounds) as Commit).timerPhases);
  decode(encode({ t: "resumed", virtualNs: Guest.resume(guest.memory, cpus, machine).now() }), bounds);
  const pauseMs = performance.now() - start;
  machine.release();
  guest.machine.release();
  return pauseMs;
}
