// A paused guest saved whole — memory, every CPU's and the device records, and the APIC timer's phase — to
// a file that `blmv resume` continues and `migrate send --from` sends again. The source writes
// one when it cannot know who owns the guest (its commit unconfirmed). The records and the
// timer phase are the protocol's own messages, checked on load as a destination checks them,
// and a digest covers memory and records as in a migration. docs/migration.md.
//
// Layout: "BLMVSNAP", u32 version (3: the memory digest of guest/digest.ts), u32 0, u64 body length, the body (msgpack: config,
// state and commit frames, runs of non-zero pages and their bytes), SHA-256 of all before it.

import { createHash } from "node:crypto";
import { readFileSync, writeFileSync } from "node:fs";
import { Packr } from "msgpackr";
import { GuestMemory } from "../../guest/memory.js";
import { PageChecksums } from "../../guest/digest.js";
import { PAGE_SIZE } from "../../guest/page.js";
import { Guest } from "../../guest/workload.js";
import { ProtocolError, encode, stateDigest, type Config } from "../wire/protocol.js";
import { decode } from "../wire/decode.js";
import { asState, rebuildRecords } from "../destination/rebuild.js";

const MAGIC = "BLMVSNAP";
const VERSION = 3;
const HEAD = 24;
const DIGEST = 32;
const packr = new Packr({ useRecords: false });

/** A snapshot that cannot be loaded: which file and what is wrong. */
export class SnapshotError extends Error {
  override readonly name = "SnapshotError";
  constructor(readonly file: string, readonly reason: string) {
    super(`${file}: not a usable snapshot: ${reason}`);
  }
}

export interface SnapshotParts {
  /** The configuration the source announced (workload, memory, machine, end of the run). */
  config: Config;
  cpu: Uint8Array;
  devices: Uint8Array;
  /** The timer phases (one per CPU) the source measured for its commit. */
  timerPhases: number[];
  memory: GuestMemory;
}

/** Writes the paused guest to `path` (a new file, private to its owner). */
export function saveSnapshot(path: string, parts: SnapshotParts): void {
  const { memory } = parts;
  const runs: number[] = [];
  const pages: Uint8Array[] = [];
  for (let p = 0; p < memory.pageCount; p++) {
    if (memory.isZero(p)) continue;
    const last = runs.length - 2;
    if (last >= 0 && runs[last] + runs[last + 1] === p) runs[last + 1]++;
    else runs.push(p, 1);
    pages.push(memory.page(p).slice());
  }
  const digest = stateDigest(PageChecksums.of(memory).digest(), parts.cpu, parts.devices);
  const body = packr.pack({
    config: encode(parts.config),
    state: encode({ t: "state", batches: 0, cpu: parts.cpu, devices: parts.devices, digest }),
    commit: encode({ t: "commit", timerPhases: parts.timerPhases }),
    runs,
    data: Buffer.concat(pages),
  });
  const head = Buffer.alloc(HEAD);
  head.write(MAGIC, 0, "latin1");
  head.writeUInt32LE(VERSION, 8);
  head.writeBigUInt64LE(BigInt(body.length), 16);
  const sum = createHash("sha256").update(head).update(body).digest();
  writeFileSync(path, Buffer.concat([head, body, sum]), { mode: 0o600, flag: "wx" });
}

/** The guest a snapshot holds, paused where it was saved, and its configuration. Throws SnapshotError. */
export function loadSnapshot(path: string): { guest: Guest; config: Config } {
  const fail = (reason: string): never => {
    throw new SnapshotError(path, reason);
  };
  const file = readFileSync(path);
  if (file.length < HEAD + DIGEST || file.toString("latin1", 0, 8) !== MAGIC) fail("wrong magic");
  if (file.readUInt32LE(8) !== VERSION) fail(`unsupported version ${file.readUInt32LE(8)}`);
  if (file.readUInt32LE(12) !== 0) fail("reserved header bytes are not 0");
  if (file.readBigUInt64LE(16) !== BigInt(file.length - HEAD - DIGEST)) fail("its length does not match its header (cut short or extended)");
  const sum = createHash("sha256").update(file.subarray(0, file.length - DIGEST)).digest();
  if (!sum.equals(file.subarray(file.length - DIGEST))) fail("checksum does not match (the file is damaged)");
  try {
    return restore(file.subarray(HEAD, file.length - DIGEST));
  } catch (e) {
    if (e instanceof ProtocolError || e instanceof RangeError) return fail(e.message);
    throw e;
  }
}

function restore(bytes: Uint8Array): { guest: Guest; config: Config } {
  let body: Record<string, unknown>;
  try {
    body = packr.unpack(bytes) as Record<string, unknown>;
  } catch (e) {
    throw new ProtocolError("bad-message", `body does not decode: ${(e as Error).message}`);
  }
  const frame = (key: string): Uint8Array => {
    const v = body?.[key];
    if (!(v instanceof Uint8Array)) throw new ProtocolError("bad-message", `${key}: missing`);
    return v;
  };
  const config = decode(frame("config"));
  if (config.t !== "config") throw new ProtocolError("bad-message", `config: a ${config.t} message`);
  const memory = new GuestMemory(config.memoryBytes);
  const state = decode(frame("state"), { pageCount: memory.pageCount });
  const commit = decode(frame("commit"));
  if (state.t !== "state" || commit.t !== "commit") throw new ProtocolError("bad-message", "state or commit: wrong message");
  const runs = body.runs;
  const data = frame("data");
  if (!Array.isArray(runs) || runs.length % 2 !== 0 || !runs.every((n) => Number.isSafeInteger(n) && n >= 0)) throw new ProtocolError("bad-message", "runs: expected [first, count] pairs");
  let offset = 0;
  for (let i = 0; i < runs.length; i += 2) {
    const [first, count] = [runs[i] as number, runs[i + 1] as number];
    if (count < 1 || first + count > memory.pageCount) throw new ProtocolError("bad-message", `runs: pages ${first}+${count} outside guest memory (${memory.pageCount} pages)`);
    if (offset + count * PAGE_SIZE > data.length) throw new ProtocolError("bad-message", "data: shorter than its runs");
    memory.writePages(first, count, data, offset);
    offset += count * PAGE_SIZE;
  }
  if (offset !== data.length) throw new ProtocolError("bad-message", "data: longer than its runs");
  const digest = stateDigest(PageChecksums.of(memory).digest(), state.cpu, state.devices);
  if (!digest.equals(state.digest)) throw new ProtocolError("digest", "memory, CPU or device records differ from the digest saved with them");
  const { cpus, machine } = rebuildRecords(config, state.cpu, state.devices);
  const guest = asState(() => Guest.resume(memory, cpus, machine));
  asState(() => machine.applyTimerPhases(commit.timerPhases));
  return { guest, config };
}
