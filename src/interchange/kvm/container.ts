// A directory of KVM structs as the ioctls return them, one file each, and a manifest.json with
// the board and clock they need beside them: the layout `blmv state export --format kvm` writes
// and `blmv state import` reads. docs/interchange.md, "The directory".

import { mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { MAX_CLOCK_HZ, MAX_CPUS, type MachineConfig } from "../../core/machine.js";
import {
  KvmLayoutError, decodeIoapicState, decodeLapicState, decodeMpState, decodeMsrs, decodePicState, decodePitState2,
  decodeSregs, decodeVcpuEvents, encodeIoapicState, encodeLapicState, encodeMpState, encodeMsrs, encodePicState,
  encodePitState2, encodeSregs, encodeVcpuEvents,
} from "./layout.js";
import { KvmStateError, X2APIC_ID_FORMATS, type KvmState, type X2apicIdFormat } from "./state.js";

export const MANIFEST = "manifest.json";
export const KVM_STATE_FORMAT = "blmv-kvm-state";
export const KVM_STATE_VERSION = 1;

/** The files of the VM-wide structs, and of each vCPU's (K = 0, 1, …). */
export const VM_FILES = { picMaster: "pic-master.bin", picSlave: "pic-slave.bin", pit: "pit2.bin", ioapic: "ioapic.bin" } as const;
export const cpuFiles = (k: number) => ({
  lapic: `lapic-cpu${k}.bin`,
  sregs: `sregs-cpu${k}.bin`,
  mpState: `mp-state-cpu${k}.bin`,
  events: `vcpu-events-cpu${k}.bin`,
  msrs: `msrs-cpu${k}.bin`,
});

interface Manifest {
  format: typeof KVM_STATE_FORMAT;
  version: number;
  board: MachineConfig;
  clock: { kvmNowNs: string; modelTimeNs: number };
  x2apicIds: X2apicIdFormat;
}

/** A container that cannot be read: which file, and what is wrong with it. */
export class KvmContainerError extends Error {
  override name = "KvmContainerError";
}

/** Writes `s` into directory `dir` (created if need be); returns the files written. */
export function writeKvmDirectory(dir: string, s: KvmState): string[] {
  mkdirSync(dir, { recursive: true });
  const manifest: Manifest = {
    format: KVM_STATE_FORMAT,
    version: KVM_STATE_VERSION,
    board: s.board,
    clock: { kvmNowNs: s.clock.kvmNowNs.toString(), modelTimeNs: s.clock.modelTimeNs },
    x2apicIds: s.x2apicIds,
  };
  const files: [string, Uint8Array | string][] = [
    [MANIFEST, JSON.stringify(manifest, null, 2) + "\n"],
    [VM_FILES.picMaster, encodePicState(s.picMaster)],
    [VM_FILES.picSlave, encodePicState(s.picSlave)],
    [VM_FILES.pit, encodePitState2(s.pit)],
    [VM_FILES.ioapic, encodeIoapicState(s.ioapic)],
    ...s.cpus.flatMap((c, k): [string, Uint8Array][] => {
      const f = cpuFiles(k);
      return [
        [f.lapic, encodeLapicState(c.lapic)],
        [f.sregs, encodeSregs(c.sregs)],
        [f.mpState, encodeMpState(c.mpState)],
        [f.events, encodeVcpuEvents(c.events)],
        [f.msrs, encodeMsrs(c.msrs)],
      ];
    }),
  ];
  for (const [name, data] of files) writeFileSync(join(dir, name), data);
  return files.map(([name]) => name);
}

/** Reads the directory `dir`: every struct checked for its size, the manifest for its fields. */
export function readKvmDirectory(dir: string): KvmState {
  const read = (name: string): Buffer => {
    const path = join(dir, name);
    try {
      return readFileSync(path);
    } catch (e) {
      const code = (e as NodeJS.ErrnoException).code;
      throw new KvmContainerError(`${path}: ${code === "ENOENT" ? "missing" : code === "EISDIR" ? "is a directory" : (e as Error).message}`);
    }
  };
  const manifest = readManifest(join(dir, MANIFEST), read(MANIFEST));
  const bytes = (name: string) => ({ data: read(name), source: join(dir, name) });
  const struct = <T>(name: string, decode: (b: Uint8Array, source: string) => T): T => {
    const { data, source } = bytes(name);
    return decode(data, source);
  };
  return {
    board: manifest.board,
    clock: { kvmNowNs: BigInt(manifest.clock.kvmNowNs), modelTimeNs: manifest.clock.modelTimeNs },
    x2apicIds: manifest.x2apicIds,
    picMaster: struct(VM_FILES.picMaster, decodePicState),
    picSlave: struct(VM_FILES.picSlave, decodePicState),
    pit: struct(VM_FILES.pit, decodePitState2),
    ioapic: struct(VM_FILES.ioapic, decodeIoapicState),
    cpus: Array.from({ length: manifest.board.cpus }, (_, k) => {
      const f = cpuFiles(k);
      return {
        lapic: struct(f.lapic, decodeLapicState),
        sregs: struct(f.sregs, decodeSregs),
        mpState: struct(f.mpState, decodeMpState),
        events: struct(f.events, decodeVcpuEvents),
        msrs: struct(f.msrs, decodeMsrs),
      };
    }),
  };
}

const BOARD_FLAGS = ["pic", "pit", "lapic", "ioapic", "pitIrq0", "compatQemu"] as const;

function readManifest(path: string, data: Buffer): Manifest {
  let m: unknown;
  try {
    m = JSON.parse(data.toString("utf8"));
  } catch (e) {
    throw new KvmContainerError(`${path}: not JSON: ${(e as Error).message}`);
  }
  const fail = (field: string, what: string): never => {
    throw new KvmContainerError(`${path}: ${field}: ${what}`);
  };
  if (typeof m !== "object" || m === null) return fail("(top)", "expected an object");
  const o = m as Record<string, unknown>;
  if (o.format !== KVM_STATE_FORMAT) fail("format", `expected "${KVM_STATE_FORMAT}", got ${JSON.stringify(o.format)}`);
  if (o.version !== KVM_STATE_VERSION) fail("version", `this build reads version ${KVM_STATE_VERSION}, got ${JSON.stringify(o.version)}`);
  const board = o.board as Record<string, unknown> | undefined;
  if (typeof board !== "object" || board === null) return fail("board", "expected an object");
  for (const k of BOARD_FLAGS) if (typeof board[k] !== "boolean") fail(`board.${k}`, `expected true or false, got ${JSON.stringify(board[k])}`);
  if (!Number.isInteger(board.cpus) || (board.cpus as number) < 1 || (board.cpus as number) > MAX_CPUS) fail("board.cpus", `expected 1..${MAX_CPUS}, got ${JSON.stringify(board.cpus)}`);
  for (const k of ["apicBusHz", "tscHz"] as const) {
    const hz = board[k];
    if (!Number.isInteger(hz) || (hz as number) < 1 || (hz as number) > MAX_CLOCK_HZ) fail(`board.${k}`, `expected 1..${MAX_CLOCK_HZ} Hz, got ${JSON.stringify(hz)}`);
  }
  const clock = o.clock as Record<string, unknown> | undefined;
  if (typeof clock !== "object" || clock === null) return fail("clock", "expected an object");
  if (typeof clock.kvmNowNs !== "string" || !/^-?\d+$/.test(clock.kvmNowNs)) fail("clock.kvmNowNs", `expected a decimal integer string, got ${JSON.stringify(clock.kvmNowNs)}`);
  if (!Number.isSafeInteger(clock.modelTimeNs) || (clock.modelTimeNs as number) < 0) fail("clock.modelTimeNs", `expected an integer 0..2^53, got ${JSON.stringify(clock.modelTimeNs)}`);
  if (!X2APIC_ID_FORMATS.includes(o.x2apicIds as X2apicIdFormat)) fail("x2apicIds", `expected ${X2APIC_ID_FORMATS.map((f) => JSON.stringify(f)).join(" or ")}, got ${JSON.stringify(o.x2apicIds)}`);
  const known = new Set(["format", "version", "board", "clock", "x2apicIds"]);
  for (const k of Object.keys(o)) if (!known.has(k)) fail(k, "unknown field");
  return o as unknown as Manifest;
}

/** Whether `e` is a problem with the container's contents (bad input), as opposed to a fault. */
export function isBadKvmInput(e: unknown): e is Error {
  return e instanceof KvmContainerError || e instanceof KvmLayoutError || e instanceof KvmStateError;
}
