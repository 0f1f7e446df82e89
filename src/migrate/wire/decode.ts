// Decoding an incoming frame: everything that arrives is hostile until this module has checked
// it — its size, that it is a plain map of a known type with exactly that type's fields, and
// every field's type and range (page numbers inside guest memory, sizes, counts) — so that no
// receiver acts on, or allocates for, anything it has not validated. A frame may come as the
// WebSocket fragments it was sent in: a `pages` frame laid out as this build sends it is then
// read where its fragments arrived (page-bytes.ts), any other is joined and decoded as one.

import { Unpackr } from "msgpackr";
import { NONCE_BYTES, PROOF_BYTES } from "../transport/auth.js";
import { DEFAULT_CONFIG, MAX_CPUS, POLICIES, type Policy } from "../../core/machine.js";
import { PAGE_SIZE } from "../../guest/page.js";
import { PageFragments, type PageBytes } from "./page-bytes.js";
import {
  DIGEST_BYTES, MAX_BATCH_PAGES, MAX_DELTA_BYTES, MAX_DELTA_PAGES, MAX_PAYLOAD, MAX_RECORD_BYTES, MAX_ROUNDS, MAX_RUNS,
  PACK_OPTIONS, PAGES_DATA_OFFSET, PAGES_PREFIX, PROTOCOL_MAGIC, ProtocolError,
  type ErrorCode, type MachineSpec, type MemoryBounds, type Message, type MessageType, type SessionFate,
} from "./protocol.js";

const MAX_TEXT = 512;
const MAX_CAPABILITIES = 32;
const ERROR_CODES: readonly ErrorCode[] = ["version", "auth", "busy", "bad-message", "unexpected", "config", "checksum", "state", "digest", "timeout", "cancelled", "internal"];
const FATES: readonly SessionFate[] = ["taken", "dropped", "unknown"];
const unpackr = new Unpackr(PACK_OPTIONS);

/** Decodes and validates one frame, whole or in its fragments; `bounds` is required once memory may flow. */
export function decode(frame: Uint8Array | readonly Uint8Array[], bounds?: MemoryBounds): Message {
  if (!(frame instanceof Uint8Array)) {
    const bytes = frame.reduce((n, f) => n + f.length, 0);
    if (bytes > MAX_PAYLOAD) throw new ProtocolError("bad-message", `frame of ${bytes} bytes exceeds ${MAX_PAYLOAD}`);
    return (frame.length > 1 && fragmentedPages(frame, bounds)) || decode(frame.length === 1 ? frame[0] : Buffer.concat(frame, bytes), bounds);
  }
  if (frame.length > MAX_PAYLOAD) throw new ProtocolError("bad-message", `frame of ${frame.length} bytes exceeds ${MAX_PAYLOAD}`);
  let value: unknown;
  try {
    value = unpackr.unpack(frame);
  } catch (e) {
    throw new ProtocolError("bad-message", `frame does not decode: ${(e as Error).message}`);
  }
  return validate(value, bounds);
}

/** A decoded frame checked to be a message of a known type with exactly its fields, each valid. */
function validate(value: unknown, bounds?: MemoryBounds): Message {
  const o = object(value, "message");
  const t = o.t;
  if (typeof t !== "string" || !Object.hasOwn(VALIDATORS, t)) throw new ProtocolError("bad-message", `unknown message type ${show(t)}`);
  onlyFields(o, t, ["t", ...FIELDS[t as MessageType]]);
  return VALIDATORS[t as MessageType](o, bounds);
}

/**
 * A `pages` frame sent as this build's frame pool sends one, read from its fragments without
 * joining them: the first fragment is exactly the prefix up to the bin 32 length of `data`, the
 * next ones hold those bytes, each a whole number of pages, and the rest are the frame's other
 * five fields. Undefined when the fragments are not so (the caller then joins them and decodes
 * the whole): this reading gives what decoding the joined frame would, or nothing.
 */
function fragmentedPages(fragments: readonly Uint8Array[], bounds?: MemoryBounds): Message | undefined {
  const head = fragments[0];
  if (head.length !== PAGES_DATA_OFFSET || PAGES_PREFIX.some((b, i) => head[i] !== b)) return undefined;
  const dataBytes = new DataView(head.buffer, head.byteOffset).getUint32(PAGES_PREFIX.length);
  let k = 1;
  for (let got = 0; got < dataBytes; got += fragments[k++].length) {
    if (k === fragments.length || fragments[k].length % PAGE_SIZE !== 0 || got + fragments[k].length > dataBytes) return undefined;
  }
  if (k === fragments.length) return undefined;
  // The other fields, as the map of five they are once the prefix's two are taken away.
  const rest = Buffer.concat([FIVE_FIELD_MAP, ...fragments.slice(k)]);
  let fields: Fields;
  try {
    fields = object(unpackr.unpack(rest), "message");
  } catch {
    return undefined;
  }
  if (Object.keys(fields).length !== 5 || Object.hasOwn(fields, "t") || Object.hasOwn(fields, "data")) return undefined;
  return validate({ t: "pages", data: new PageFragments(fragments.slice(1, k), dataBytes), ...fields }, bounds);
}

/** A msgpack map header for five fields. */
const FIVE_FIELD_MAP = Uint8Array.of(0x85);

/** The fields each message may carry besides `t`: anything else is refused, not ignored. */
const FIELDS: Record<MessageType, readonly string[]> = {
  hello: ["magic", "version", "minVersion", "capabilities", "nonce"],
  challenge: ["version", "capabilities", "nonce"],
  auth: ["proof"],
  accepted: ["proof"],
  config: ["memoryBytes", "pageSize", "machine", "workload", "endNs"],
  prepared: [],
  pages: ["round", "seq", "runs", "zeros", "data", "crc"],
  deltas: ["round", "seq", "pages", "lengths", "data", "crc"],
  ack: ["seq"],
  state: ["batches", "cpu", "devices", "digest"],
  handoff: ["batches", "missing", "cpu", "devices", "digest"],
  ready: ["digest"],
  commit: ["timerPhases"],
  resumed: ["virtualNs"],
  fault: ["page"],
  complete: ["batches", "memoryDigest"],
  received: ["faults", "blockedUs", "latencyMedianUs", "latencyP99Us"],
  finished: ["virtualNs", "digest", "ticks", "exits"],
  error: ["code", "message"],
  query: ["session"],
  outcome: ["outcome"],
};
const MACHINE_FIELDS = [...Object.keys(DEFAULT_CONFIG), "policy"];

function onlyFields(o: Fields, path: string, allowed: readonly string[]): void {
  for (const key of Object.keys(o)) {
    if (!allowed.includes(key)) throw new ProtocolError("bad-message", `${path}: unknown field ${show(key)}`);
  }
}

type Fields = Record<string, unknown>;

const VALIDATORS: Record<MessageType, (o: Fields, bounds?: MemoryBounds) => Message> = {
  hello: (o) => {
    if (o.magic !== PROTOCOL_MAGIC) throw new ProtocolError("bad-message", `hello.magic: not a ${PROTOCOL_MAGIC} stream`);
    return {
      t: "hello",
      magic: PROTOCOL_MAGIC,
      version: uint(o.version, "hello.version", 0xffff),
      minVersion: uint(o.minVersion, "hello.minVersion", 0xffff),
      capabilities: names(o.capabilities, "hello.capabilities"),
      nonce: bytes(o.nonce, "hello.nonce", NONCE_BYTES, NONCE_BYTES),
    };
  },
  challenge: (o) => ({
    t: "challenge",
    version: uint(o.version, "challenge.version", 0xffff),
    capabilities: names(o.capabilities, "challenge.capabilities"),
    nonce: bytes(o.nonce, "challenge.nonce", NONCE_BYTES, NONCE_BYTES),
  }),
  auth: (o) => ({ t: "auth", proof: bytes(o.proof, "auth.proof", PROOF_BYTES, PROOF_BYTES) }),
  accepted: (o) => ({ t: "accepted", proof: bytes(o.proof, "accepted.proof", PROOF_BYTES, PROOF_BYTES) }),
  config: (o) => {
    const pageSize = uint(o.pageSize, "config.pageSize", 1 << 30);
    const memoryBytes = uint(o.memoryBytes, "config.memoryBytes", Number.MAX_SAFE_INTEGER);
    if (pageSize !== PAGE_SIZE) throw new ProtocolError("config", `page size ${pageSize} is not supported (only ${PAGE_SIZE})`);
    if (memoryBytes === 0 || memoryBytes % pageSize !== 0) throw new ProtocolError("config", `memory size ${memoryBytes} is not a positive multiple of the page size`);
    return {
      t: "config",
      memoryBytes,
      pageSize,
      machine: machineSpec(o.machine),
      workload: text(o.workload, "config.workload"),
      endNs: uint(o.endNs, "config.endNs", Number.MAX_SAFE_INTEGER),
    };
  },
  prepared: () => ({ t: "prepared" }),
  pages: (o, bounds) => {
    if (!bounds) throw new ProtocolError("unexpected", "pages before the memory size is agreed");
    const runs = pageRuns(o.runs, "pages.runs", bounds);
    const zeros = pageRuns(o.zeros, "pages.zeros", bounds);
    const dataPages = countPages(runs);
    if (dataPages + countPages(zeros) > MAX_BATCH_PAGES) throw new ProtocolError("bad-message", `pages: more than ${MAX_BATCH_PAGES} pages in one batch`);
    return {
      t: "pages",
      round: uint(o.round, "pages.round", MAX_ROUNDS),
      seq: uint(o.seq, "pages.seq", Number.MAX_SAFE_INTEGER),
      runs,
      zeros,
      data: pageBytes(o.data, "pages.data", dataPages * PAGE_SIZE),
      crc: uint(o.crc, "pages.crc", 0xffff_ffff),
    };
  },
  state: (o) => ({
    t: "state",
    batches: uint(o.batches, "state.batches", Number.MAX_SAFE_INTEGER),
    cpu: bytes(o.cpu, "state.cpu", 1, MAX_RECORD_BYTES),
    devices: bytes(o.devices, "state.devices", 1, MAX_RECORD_BYTES),
    digest: bytes(o.digest, "state.digest", DIGEST_BYTES, DIGEST_BYTES),
  }),
  deltas: (o, bounds) => {
    if (!bounds) throw new ProtocolError("unexpected", "deltas before the memory size is agreed");
    const pages = pageList(o.pages, "deltas.pages", bounds);
    const lengths = uintList(o.lengths, "deltas.lengths", pages.length, MAX_DELTA_BYTES);
    const data = bytes(o.data, "deltas.data", 0, pages.length * MAX_DELTA_BYTES);
    if (lengths.reduce((a, n) => a + n, 0) !== data.length) throw new ProtocolError("bad-message", "deltas.data: its length is not the sum of deltas.lengths");
    return {
      t: "deltas",
      round: uint(o.round, "deltas.round", MAX_ROUNDS),
      seq: uint(o.seq, "deltas.seq", Number.MAX_SAFE_INTEGER),
      pages,
      lengths,
      data,
      crc: uint(o.crc, "deltas.crc", 0xffff_ffff),
    };
  },
  ack: (o) => ({ t: "ack", seq: uint(o.seq, "ack.seq", Number.MAX_SAFE_INTEGER) }),
  handoff: (o, bounds) => {
    if (!bounds) throw new ProtocolError("unexpected", "handoff before the memory size is agreed");
    const bitmapBytes = Math.ceil(bounds.pageCount / 8);
    return {
      t: "handoff",
      batches: uint(o.batches, "handoff.batches", Number.MAX_SAFE_INTEGER),
      missing: bytes(o.missing, "handoff.missing", bitmapBytes, bitmapBytes),
      cpu: bytes(o.cpu, "handoff.cpu", 1, MAX_RECORD_BYTES),
      devices: bytes(o.devices, "handoff.devices", 1, MAX_RECORD_BYTES),
      digest: bytes(o.digest, "handoff.digest", DIGEST_BYTES, DIGEST_BYTES),
    };
  },
  fault: (o) => ({ t: "fault", page: uint(o.page, "fault.page", Number.MAX_SAFE_INTEGER) }),
  complete: (o) => ({
    t: "complete",
    batches: uint(o.batches, "complete.batches", Number.MAX_SAFE_INTEGER),
    memoryDigest: bytes(o.memoryDigest, "complete.memoryDigest", DIGEST_BYTES, DIGEST_BYTES),
  }),
  received: (o) => ({
    t: "received",
    faults: uint(o.faults, "received.faults", Number.MAX_SAFE_INTEGER),
    blockedUs: uint(o.blockedUs, "received.blockedUs", Number.MAX_SAFE_INTEGER),
    latencyMedianUs: uint(o.latencyMedianUs, "received.latencyMedianUs", Number.MAX_SAFE_INTEGER),
    latencyP99Us: uint(o.latencyP99Us, "received.latencyP99Us", Number.MAX_SAFE_INTEGER),
  }),
  ready: (o) => ({ t: "ready", digest: bytes(o.digest, "ready.digest", DIGEST_BYTES, DIGEST_BYTES) }),
  commit: (o) => ({ t: "commit", timerPhases: timerPhases(o.timerPhases, "commit.timerPhases") }),
  resumed: (o) => ({ t: "resumed", virtualNs: uint(o.virtualNs, "resumed.virtualNs", Number.MAX_SAFE_INTEGER) }),
  finished: (o) => {
    const digest = text(o.digest, "finished.digest");
    if (!/^[0-9a-f]{1,128}$/.test(digest)) throw new ProtocolError("bad-message", "finished.digest: expected a hex string");
    return {
      t: "finished",
      virtualNs: uint(o.virtualNs, "finished.virtualNs", Number.MAX_SAFE_INTEGER),
      digest,
      ticks: uint(o.ticks, "finished.ticks", Number.MAX_SAFE_INTEGER),
      exits: uint(o.exits, "finished.exits", Number.MAX_SAFE_INTEGER),
    };
  },
  error: (o) => {
    const code = text(o.code, "error.code");
    // An error from a newer peer may carry a code this build does not know: keep its message.
    return { t: "error", code: (ERROR_CODES as readonly string[]).includes(code) ? (code as ErrorCode) : "internal", message: text(o.message, "error.message") };
  },
  query: (o) => ({ t: "query", session: bytes(o.session, "query.session", NONCE_BYTES, NONCE_BYTES) }),
  outcome: (o) => {
    const outcome = text(o.outcome, "outcome.outcome");
    if (!(FATES as readonly string[]).includes(outcome)) throw new ProtocolError("bad-message", `outcome.outcome: expected ${FATES.join(", ")}, got ${show(outcome)}`);
    return { t: "outcome", outcome: outcome as SessionFate };
  },
};

function machineSpec(v: unknown): MachineSpec {
  const o = object(v, "config.machine");
  onlyFields(o, "config.machine", MACHINE_FIELDS);
  const policy = text(o.policy, "config.machine.policy");
  if (!(POLICIES as readonly string[]).includes(policy)) throw new ProtocolError("config", `config.machine.policy: unknown policy ${show(policy)}`);
  return {
    pic: flag(o.pic, "config.machine.pic"),
    pit: flag(o.pit, "config.machine.pit"),
    lapic: flag(o.lapic, "config.machine.lapic"),
    ioapic: flag(o.ioapic, "config.machine.ioapic"),
    // A peer that predates several CPUs sends no count: its machines have one.
    cpus: o.cpus === undefined ? 1 : uint(o.cpus, "config.machine.cpus", MAX_CPUS, 1),
    pitIrq0: flag(o.pitIrq0, "config.machine.pitIrq0"),
    compatQemu: flag(o.compatQemu, "config.machine.compatQemu"),
    apicBusHz: uint(o.apicBusHz, "config.machine.apicBusHz", 1e12, 1),
    tscHz: uint(o.tscHz, "config.machine.tscHz", 1e12, 1),
    policy: policy as Policy,
  };
}

/** Flat [first, count] pairs, each run non-empty and inside guest memory. */
function pageRuns(v: unknown, path: string, bounds: MemoryBounds): number[] {
  if (!Array.isArray(v) || v.length % 2 !== 0 || v.length > 2 * MAX_RUNS) {
    throw new ProtocolError("bad-message", `${path}: expected at most ${MAX_RUNS} [first, count] pairs`);
  }
  for (let i = 0; i < v.length; i += 2) {
    const first: unknown = v[i];
    const count: unknown = v[i + 1];
    if (!isUint(first) || !isUint(count) || count < 1 || first + count > bounds.pageCount) {
      throw new ProtocolError("bad-message", `${path}: run ${show(first)}+${show(count)} is outside guest memory (${bounds.pageCount} pages)`);
    }
  }
  return v as number[];
}

/** Distinct page numbers in ascending order, each inside guest memory. */
function pageList(v: unknown, path: string, bounds: MemoryBounds): number[] {
  if (!Array.isArray(v) || v.length > MAX_DELTA_PAGES) throw new ProtocolError("bad-message", `${path}: expected at most ${MAX_DELTA_PAGES} page numbers`);
  let last = -1;
  for (const p of v as unknown[]) {
    if (!isUint(p) || p <= last || p >= bounds.pageCount) throw new ProtocolError("bad-message", `${path}: page ${show(p)} is out of order or outside guest memory (${bounds.pageCount} pages)`);
    last = p;
  }
  return v as number[];
}

function uintList(v: unknown, path: string, length: number, max: number): number[] {
  if (!Array.isArray(v) || v.length !== length || !v.every((n) => isUint(n) && n >= 1 && n <= max)) {
    throw new ProtocolError("bad-message", `${path}: expected ${length} integers 1..${max}`);
  }
  return v as number[];
}

/** One phase per CPU, in ns; the destination checks the count against its guest's CPUs. */
function timerPhases(v: unknown, path: string): number[] {
  if (!Array.isArray(v) || v.length < 1 || v.length > MAX_CPUS || !v.every((n) => isUint(n) && n <= 0xffff_ffff)) {
    throw new ProtocolError("bad-message", `${path}: expected 1..${MAX_CPUS} integers 0..${0xffff_ffff}`);
  }
  return v as number[];
}

export function countPages(runs: readonly number[]): number {
  let n = 0;
  for (let i = 1; i < runs.length; i += 2) n += runs[i];
  return n;
}

function isUint(v: unknown): v is number {
  return typeof v === "number" && Number.isSafeInteger(v) && v >= 0;
}

function object(v: unknown, path: string): Fields {
  if (typeof v !== "object" || v === null || Object.getPrototypeOf(v) !== Object.prototype) {
    throw new ProtocolError("bad-message", `${path}: expected a map`);
  }
  return v as Fields;
}

function uint(v: unknown, path: string, max: number, min = 0): number {
  if (!isUint(v) || v < min || v > max) throw new ProtocolError("bad-message", `${path}: expected an integer ${min}..${max}, got ${show(v)}`);
  return v;
}

function flag(v: unknown, path: string): boolean {
  if (typeof v !== "boolean") throw new ProtocolError("bad-message", `${path}: expected true or false, got ${show(v)}`);
  return v;
}

function text(v: unknown, path: string): string {
  if (typeof v !== "string" || v.length > MAX_TEXT) throw new ProtocolError("bad-message", `${path}: expected a string of at most ${MAX_TEXT} characters`);
  return v;
}

function names(v: unknown, path: string): string[] {
  if (!Array.isArray(v) || v.length > MAX_CAPABILITIES || !v.every((s) => typeof s === "string" && s.length <= 64)) {
    throw new ProtocolError("bad-message", `${path}: expected at most ${MAX_CAPABILITIES} short names`);
  }
  return v as string[];
}

function bytes(v: unknown, path: string, min: number, max: number): Uint8Array {
  if (!(v instanceof Uint8Array) || v.length < min || v.length > max) {
    const want = min === max ? `${min}` : `${min}..${max}`;
    throw new ProtocolError("bad-message", `${path}: expected ${want} bytes, got ${show(v)}`);
  }
  return v;
}

/** Page bytes, in one buffer or in fragments (read from a fragmented frame), of exactly `length` bytes. */
function pageBytes(v: unknown, path: string, length: number): PageBytes {
  return v instanceof PageFragments && v.length === length ? v : bytes(v, path, length, length);
}

function show(v: unknown): string {
  if (typeof v === "string") return JSON.stringify(v.slice(0, 40));
  if (typeof v === "bigint") return `${v}n`;
  if (v instanceof Uint8Array) return `${v.length} bytes`;
  return Array.isArray(v) ? "an array" : String(v);
}
