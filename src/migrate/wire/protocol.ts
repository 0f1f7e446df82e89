// The migration stream: its messages, version constants and bounds, msgpackr encoding, and the
// digests both sides agree on. Everything that arrives is hostile until decode.ts has validated
// it against the types and bounds set here.
//
// Order of messages (S = source, D = destination):
//   S hello → D challenge → S auth → D accepted → S config → D prepared →
//   S pages* → S state → D ready → S commit → D resumed [→ D finished]
// With XBZRLE, `deltas` frames travel among the `pages` frames, numbered in the same sequence.
// With `acks`, the destination answers every batch it has checked and stored (`pages` and
// `deltas`, post-copy batches included) with `ack`, which the source paces itself by.
// Post-copy (and hybrid) hand the guest over before its memory has all arrived:
//   S pages* → S handoff → D ready → S commit → D resumed →
//   (D fault | S pages)* → S complete → D received [→ D finished]
// Either side may send `error` instead of its next message and close. A source whose link
// failed after it sent `commit` connects again and, authenticated, sends `query` in place of
// `config`: the destination answers `outcome`, which decides where the guest runs.

import { createHash } from "node:crypto";
import { Packr, Unpackr } from "msgpackr";
import { NONCE_BYTES, PROOF_BYTES } from "../transport/auth.js";
import { DEFAULT_CONFIG, POLICIES, type Machine, type MachineConfig, type Policy } from "../../core/machine.js";
import { pageChecksum } from "../../guest/digest.js";
import { PAGE_SIZE } from "../../guest/page.js";
import type { PageBytes } from "./page-bytes.js";

/** The state of a paused guest, ready to go: the record of all its CPUs and the device record. */
export interface CapturedState {
  cpu: Uint8Array;
  devices: Uint8Array;
}

export const PROTOCOL_MAGIC = "blmv-migrate";
/**
 * The version this build speaks: 2 carries every CPU's record in `state` and `handoff`; 3 has the
 * memory digest kept page by page (guest/digest.ts), which a version-2 peer computes otherwise.
 */
export const PROTOCOL_VERSION = 3;
/** The oldest peer version this build still accepts; a newer build raises it to drop one. */
export const MIN_PROTOCOL_VERSION = 3;
/** Optional features: each side announces what it can do and uses the common ones. */
export const CAPABILITIES = ["zero-pages", "xbzrle", "postcopy", "outcome-query", "acks"] as const;

/** Largest frame either side accepts (a 1 MiB batch plus its headers fits with room). */
export const MAX_PAYLOAD = 4 * 1024 * 1024;
/** Largest frame accepted before the peer has authenticated. */
export const MAX_UNAUTHENTICATED_PAYLOAD = 1024;
/**
 * How this build lays out a `pages` frame: a map whose first fields are `t` ("pages") and `data`
 * as bin 32, so that the page bytes start at PAGES_DATA_OFFSET (after this prefix and their
 * 4-byte big-endian length), then the other fields. Any other valid encoding decodes the same.
 */
export const PAGES_PREFIX = Uint8Array.from([0x87, 0xa1, ...Buffer.from("t"), 0xa5, ...Buffer.from("pages"), 0xa4, ...Buffer.from("data"), 0xc6]);
export const PAGES_DATA_OFFSET = PAGES_PREFIX.length + 4;
/** Target size of the page data in one `pages` frame. */
export const BATCH_DATA_BYTES = 1024 * 1024;
/** Pages (sent and elided zero pages together) in one `pages` frame. */
export const MAX_BATCH_PAGES = 1 << 16;
/** Runs per list in one `pages` frame. */
export const MAX_RUNS = 4096;
export const MAX_ROUNDS = 1000;
export const DIGEST_BYTES = 32;
/** Largest encoded CPU or device record (64 CPUs' records take about 80 KiB). */
export const MAX_RECORD_BYTES = 256 * 1024;
/** Pages in one `deltas` frame, and the largest delta sent for one page (else the page goes whole). */
export const MAX_DELTA_PAGES = 4096;
export const MAX_DELTA_BYTES = PAGE_SIZE / 2;

export type ErrorCode =
  | "version" // no protocol version both sides speak
  | "auth" // authentication failed
  | "busy" // the destination has no room for another guest or connection
  | "bad-message" // undecodable, malformed or out of range
  | "unexpected" // a valid message at the wrong step
  | "config" // a configuration this side cannot host
  | "checksum" // a batch's CRC does not match its content
  | "state" // CPU or device state that cannot be rebuilt
  | "digest" // what arrived differs from what was sent
  | "timeout"
  | "cancelled"
  | "internal";

/** The board and hypervisor the guest runs on; the destination builds the same. */
export type MachineSpec = MachineConfig & { policy: Policy };

/** The spec of a running machine: its configuration and hypervisor policy. */
export function machineSpecOf(machine: Machine): MachineSpec {
  const config = Object.fromEntries(Object.keys(DEFAULT_CONFIG).map((k) => [k, machine.config[k as keyof MachineConfig]])) as unknown as MachineConfig;
  return { ...config, policy: machine.policy };
}

export interface Hello { t: "hello"; magic: string; version: number; minVersion: number; capabilities: string[]; nonce: Uint8Array }
/** The destination's choice of version and features, and its nonce. */
export interface Challenge { t: "challenge"; version: number; capabilities: string[]; nonce: Uint8Array }
/** The source's proof of the token; it goes first, so a peer that merely connects learns nothing. */
export interface Auth { t: "auth"; proof: Uint8Array }
/** The destination's proof of the token, to an authenticated source only. */
export interface Accepted { t: "accepted"; proof: Uint8Array }
export interface Config { t: "config"; memoryBytes: number; pageSize: number; machine: MachineSpec; workload: string; endNs: number }
/** Staging memory is allocated; memory may flow. */
export interface Prepared { t: "prepared" }
/**
 * One batch of a round: `runs` are [first, count] pairs of pages whose bytes follow in `data`
 * in order; `zeros` are [first, count] pairs of pages that are all zero and carry no bytes.
 * `crc` is the CRC-32 of the batch's (page, page CRC-32) list, see batchChecksum.
 */
export interface Pages { t: "pages"; round: number; seq: number; runs: number[]; zeros: number[]; data: PageBytes; crc: number }
/** Stop-and-copy is done: the CPU records (every CPU's, see guest/cpu.ts) and the device record (msgpack each), and the digest of all. */
export interface State { t: "state"; batches: number; cpu: Uint8Array; devices: Uint8Array; digest: Uint8Array }
export interface Ready { t: "ready"; digest: Uint8Array }
/** The guest is the destination's; `timerPhases` are the source's APIC timer phases, one per CPU (Machine.probeTimerPhases), in ns. */
export interface Commit { t: "commit"; timerPhases: number[] }
export interface Resumed { t: "resumed"; virtualNs: number }
/** The guest reached the end of its run on the destination. */
export interface Finished { t: "finished"; virtualNs: number; digest: string; ticks: number; exits: number }
/**
 * Post-copy: the CPU and device records go ahead of the memory. `missing` is a bitmap (bit p of
 * byte p>>3) of the pages the destination does not hold in their latest version yet; `digest`
 * is SHA-256 over the records and the bitmap (see handoffDigest).
 */
export interface Handoff { t: "handoff"; batches: number; missing: Uint8Array; cpu: Uint8Array; devices: Uint8Array; digest: Uint8Array }
/** The resumed guest touched a page that has not arrived: send it (and its neighbours) first. */
export interface Fault { t: "fault"; page: number }
/** Every missing page has been sent; `memoryDigest` is the source's memory digest at the pause. */
export interface Complete { t: "complete"; batches: number; memoryDigest: Uint8Array }
/** All memory arrived and matches the digest; what the guest went through meanwhile. */
export interface Received { t: "received"; faults: number; blockedUs: number; latencyMedianUs: number; latencyP99Us: number }
/**
 * Re-sent pages as XBZRLE deltas against the version sent before: `pages` lists the page
 * numbers, `lengths` the encoded size of each, their encodings follow each other in `data`.
 * `crc` is the batch checksum over (page, CRC-32 of the page after decoding).
 */
export interface Deltas { t: "deltas"; round: number; seq: number; pages: number[]; lengths: number[]; data: Uint8Array; crc: number }
/** Batches up to and including `seq` are checked and stored (acks are cumulative and in order). */
export interface Ack { t: "ack"; seq: number }
export interface ErrorMessage { t: "error"; code: ErrorCode; message: string }
/** After a link lost past the commit: what became of the session named by the destination's challenge nonce. */
export interface Query { t: "query"; session: Uint8Array }
/**
 * taken    the commit arrived: the guest is the destination's.
 * dropped  it never will: the destination discarded the guest, the source must run it.
 * unknown  no record of that session (it never got ready here, or the destination restarted).
 */
export interface Outcome { t: "outcome"; outcome: SessionFate }
export type SessionFate = "taken" | "dropped" | "unknown";

export type Message =
  | Hello | Challenge | Auth | Accepted | Config | Prepared | Pages | Deltas | Ack | State | Handoff | Ready | Commit | Resumed
  | Fault | Complete | Received | Finished | ErrorMessage | Query | Outcome;
export type MessageType = Message["t"];

/** A frame that is not a valid message; `code` is what the receiver tells its peer. */
export class ProtocolError extends Error {
  override name = "ProtocolError";
  constructor(
    readonly code: ErrorCode,
    message: string,
  ) {
    super(message);
  }
}

/** What a `pages` frame is checked against. */
export interface MemoryBounds {
  pageCount: number;
}

/** Plain maps only: a record extension could make the receiver build objects it never asked for. */
export const PACK_OPTIONS = { useRecords: false };
const packr = new Packr(PACK_OPTIONS);
const unpackr = new Unpackr(PACK_OPTIONS);

export function encode(message: Message): Uint8Array {
  return packr.pack(message);
}

/** Encodes a nested record (CPU, devices) as the bytes a `state` message carries. */
export function encodeRecord(record: unknown): Uint8Array {
  return packr.pack(record);
}

export function decodeRecord(bytes: Uint8Array, what: string): unknown {
  try {
    return unpackr.unpack(bytes);
  } catch (e) {
    throw new ProtocolError("bad-message", `${what} record does not decode: ${(e as Error).message}`);
  }
}

/**
 * A batch's checksum: the CRC-32 of its pages' (page number, page CRC-32) pairs as little-endian
 * 32-bit words, data runs first, then zero runs, each in order. Both sides compute every page's
 * CRC anyway for the memory digest, so checking a batch costs no second pass over its data.
 */
export function batchChecksum(pairs: Uint32Array, pageCount: number): number {
  return pageChecksum(new Uint8Array(pairs.buffer, pairs.byteOffset, 8 * pageCount));
}

/**
 * What both sides must agree on before the commit: SHA-256 over the memory digest (from the
 * per-page CRCs each side kept as pages went by) and the exact bytes of the CPU and device records.
 */
export function stateDigest(memoryDigest: string, cpu: Uint8Array, devices: Uint8Array): Buffer {
  const length = Buffer.alloc(8);
  length.writeUInt32BE(cpu.length, 0);
  length.writeUInt32BE(devices.length, 4);
  return createHash("sha256").update(`${PROTOCOL_MAGIC} state\0${memoryDigest}\0`).update(length).update(cpu).update(devices).digest();
}

/** What the records of a post-copy handoff are checked against: SHA-256 over them and the missing-page bitmap. */
export function handoffDigest(missing: Uint8Array, cpu: Uint8Array, devices: Uint8Array): Buffer {
  return stateDigest(createHash("sha256").update(missing).digest("hex"), cpu, devices);
}
