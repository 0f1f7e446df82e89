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
  /** Each CPU's timer phase the machine resumed with (0: none), ns after its start. */
  timerPhases: number[];
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
  // The machine resumes as a migration's destination would, each timer's next decrement where
  // QEMU's falls.
  const { machine, exceptions } = machineFromKvm(conversion.state, { ...options, timerPhases: conversion.timerPhases });
  return { stream, state: conversion.state, skipped: conversion.skipped, exceptions: [...conversion.exceptions, ...exceptions], machine, timerPhases: conversion.timerPhases };
}

/** The rebuilt machine's registers as KVM's structs, read through the hypervisor's capture. */
export function readBack(machine: Machine): KvmState {
  return kvmStateFromRecord(machine.capture() as unknown as DeviceRecordBody);
}
