// A QEMU 7.2 migration stream (optionally gzipped) to a machine rebuilt through the register
// interface: read the stream, convert its device sections to KVM's structs, rebuild those with
// the KVM import, and read the rebuilt registers back the same way. docs/qemu-state.md.

import { gunzipSync } from "node:zlib";
import type { Machine, Policy } from "../../core/machine.js";
import { kvmStateFromRecord } from "../kvm/from-capture.js";
import type { DeviceRecordBody, KvmException, KvmState } from "../kvm/state.js";
import { machineFromKvm } from "../kvm/to-machine.js";
import { QemuStreamError } from "./cursor.js";
import { readQemuStream, type QemuStream } from "./stream.js";
import { kvmStateFromQemu, type SkippedSection } from "./to-kvm.js";

export interface QemuImport {
  stream: QemuStream;
  /** The KVM structs the stream converts to. */
  state: KvmState;
  skipped: SkippedSection[];
  /** Fields named by the conversion (QEMU → KVM), then by the rebuild (KVM → model). */
  exceptions: KvmException[];
  machine: Machine;
  /** The bootstrap processor's timer phase the machine resumed with (0: none), ns after its start. */
  timerPhase: number;
}

const GZIP_MAGIC = [0x1f, 0x8b];

/** The stream's bytes, gunzipped if they are gzip; a broken gzip is a QemuStreamError. */
export function streamBytes(file: Uint8Array): Uint8Array {
  if (file[0] !== GZIP_MAGIC[0] || file[1] !== GZIP_MAGIC[1]) return file;
  try {
    return gunzipSync(file);
  } catch (e) {
    throw new QemuStreamError(0, `the gzip wrapper is broken (${(e as Error).message})`);
  }
}

/** Reads, converts and rebuilds; throws before any machine exists if the stream or its values are bad. */
export function importQemuState(bytes: Uint8Array, options: { policy?: Policy } = {}): QemuImport {
  const stream = readQemuStream(streamBytes(bytes));
  const conversion = kvmStateFromQemu(stream);
  // The model restarts one local APIC timer at a given phase, the bootstrap processor's: the
  // machine resumes as a migration's destination would, its first decrement where QEMU's falls.
  const [bspPhase = 0, ...apPhases] = conversion.timerPhases;
  const { machine, exceptions } = machineFromKvm(conversion.state, { ...options, timerPhase: bspPhase });
  const named = [...conversion.exceptions, ...exceptions];
  apPhases.forEach((phase, i) => {
    if (phase > 0) named.push({ kind: "inexpressible", field: `apic(${i + 1}).initial_count_load_time`, reason: `the timer's phase (next decrement ${phase} ns after the stop): the model restarts only the bootstrap processor's timer at a phase, so this one may run up to one divided period late` });
  });
  return { stream, state: conversion.state, skipped: conversion.skipped, exceptions: named, machine, timerPhase: bspPhase };
}

/** The rebuilt machine's registers as KVM's structs, read through the hypervisor's capture. */
export function readBack(machine: Machine): KvmState {
  return kvmStateFromRecord(machine.capture() as unknown as DeviceRecordBody);
}
