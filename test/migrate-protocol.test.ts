// The migration stream's messages: what a valid message looks like on the wire, and that a
// hostile or broken peer's frame is refused with a ProtocolError naming the problem — never a
// crash, never an allocation beyond the stated bounds.

import { createHash } from "node:crypto";
import fc from "fast-check";
import { pack } from "msgpackr";
import { describe, expect, it } from "vitest";
import { ZERO_PAGE_CRC, pageChecksum } from "../src/guest/digest.js";
import { PAGE_SIZE, ZERO_PAGE } from "../src/guest/page.js";
import { BatchBuilder } from "../src/migrate/source/batch.js";
import { decode } from "../src/migrate/wire/decode.js";
import { PAGES_FRAGMENT_BYTES, framePool } from "../src/migrate/wire/frame-pool.js";
import { chunksOf } from "../src/migrate/wire/page-bytes.js";
import { cpusToRecord } from "../src/guest/cpu.js";
import { bootGuest } from "../src/migrate/run/guest-run.js";
import { rebuildRecords } from "../src/migrate/destination/rebuild.js";
import {
  MAX_BATCH_PAGES,
  MAX_PAYLOAD,
  MAX_RECORD_BYTES,
  MAX_RUNS,
  PAGES_DATA_OFFSET,
  PROTOCOL_MAGIC,
  PROTOCOL_VERSION,
  ProtocolError,
  batchChecksum,
  encode,
  encodeRecord,
  stateDigest,
  type Config,
  type Message,
} from "../src/migrate/wire/protocol.js";

const BOUNDS = { pageCount: 4096 };
const nonce = new Uint8Array(32).fill(7);
const machine = { pic: true, pit: true, lapic: true, ioapic: true, cpus: 2, pitIrq0: true, compatQemu: false, apicBusHz: 1e9, tscHz: 1e9, policy: "blmvisor" as const };

const VALID: Message[] = [
  { t: "hello", magic: PROTOCOL_MAGIC, version: PROTOCOL_VERSION, minVersion: PROTOCOL_VERSION, capabilities: ["zero-pages"], nonce },
  { t: "challenge", version: PROTOCOL_VERSION, capabilities: [], nonce },
  { t: "auth", proof: new Uint8Array(32).fill(1) },
  { t: "accepted", proof: new Uint8Array(32).fill(2) },
  { t: "config", memoryBytes: 16 << 20, pageSize: PAGE_SIZE, machine, workload: "hot", endNs: 4e9 },
  { t: "prepared" },
  { t: "pages", round: 2, seq: 9, runs: [10, 2], zeros: [0, 10, 4000, 96], data: new Uint8Array(2 * PAGE_SIZE).fill(3), crc: 0xdeadbeef },
  { t: "ack", seq: 9 },
  { t: "state", batches: 10, cpu: new Uint8Array([1, 2]), devices: new Uint8Array([3]), digest: new Uint8Array(32) },
  { t: "ready", digest: new Uint8Array(32) },
  { t: "commit", timerPhases: [11] },
  { t: "resumed", virtualNs: 123 },
  { t: "finished", virtualNs: 4e9, digest: "ab12", ticks: 4000, exits: 17 },
  { t: "error", code: "auth", message: "no" },
  { t: "query", session: nonce },
  { t: "outcome", outcome: "dropped" },
];

/** Decoding a re-encoded variant of `m` with `change` applied must fail with `pattern`. */
function refuses(m: Message, change: Record<string, unknown>, pattern: RegExp): void {
  const frame = pack({ ...m, ...change });
  expect(() => decode(frame, BOUNDS)).toThrow(ProtocolError);
  expect(() => decode(frame, BOUNDS)).toThrow(pattern);
}

const sample = <T extends Message["t"]>(t: T) => VALID.find((m) => m.t === t) as Extract<Message, { t: T }>;

describe("protocol messages", () => {
  it.each(VALID.map((m) => [m.t, m] as const))("%s survives encode → decode unchanged", (_t, m) => {
    const back = decode(encode(m), BOUNDS);
    expect(back).toEqual(Object.fromEntries(Object.entries(m).map(([k, v]) => [k, v instanceof Uint8Array ? Buffer.from(v) : v])));
  });

  it("refuses what is not a message", () => {
    expect(() => decode(new Uint8Array([0xc1]))).toThrow(/expected a map|does not decode/);
    expect(() => decode(pack([1, 2]))).toThrow(/expected a map/);
    expect(() => decode(pack({ t: "launch" }))).toThrow(/unknown message type "launch"/);
    expect(() => decode(pack({ t: "hello" }).subarray(0, 3))).toThrow(/does not decode/);
    expect(() => decode(Buffer.concat([pack({ t: "commit" }), Buffer.from([1])]))).toThrow(ProtocolError);
    expect(() => decode(new Uint8Array(MAX_PAYLOAD + 1))).toThrow(/exceeds/);
  });

  it("checks every field's type and size", () => {
    refuses(sample("hello"), { magic: "http" }, /not a blmv-migrate stream/);
    refuses(sample("hello"), { version: "1" }, /hello.version/);
    refuses(sample("hello"), { version: 2n ** 40n }, /hello.version/);
    refuses(sample("hello"), { nonce: new Uint8Array(31) }, /hello.nonce: expected 32 bytes/);
    refuses(sample("hello"), { capabilities: Array(33).fill("x") }, /capabilities/);
    refuses(sample("challenge"), { nonce: "secret" }, /challenge.nonce/);
    refuses(sample("accepted"), { proof: new Uint8Array(33) }, /accepted.proof/);
    refuses(sample("auth"), { proof: undefined }, /auth.proof/);
    refuses(sample("config"), { pageSize: 8192 }, /page size 8192 is not supported/);
    refuses(sample("config"), { memoryBytes: 4097 }, /not a positive multiple/);
    refuses(sample("config"), { machine: { ...machine, pic: 1 } }, /config.machine.pic/);
    refuses(sample("config"), { machine: { ...machine, cpus: 65 } }, /config.machine.cpus/);
    refuses(sample("config"), { machine: { ...machine, cpus: 0 } }, /config.machine.cpus/);
    refuses(sample("config"), { machine: { ...machine, policy: "root" } }, /unknown policy/);
    refuses(sample("config"), { workload: "x".repeat(513) }, /config.workload/);
    refuses(sample("state"), { cpu: new Uint8Array(0) }, /state.cpu/);
    refuses(sample("state"), { digest: new Uint8Array(16) }, /state.digest/);
    refuses(sample("finished"), { digest: "<script>" }, /hex string/);
    refuses(sample("query"), { session: new Uint8Array(8) }, /query.session: expected 32 bytes/);
    refuses(sample("outcome"), { outcome: "maybe" }, /outcome.outcome: expected taken, dropped, unknown/);
    refuses(sample("ack"), { seq: -1 }, /ack.seq: expected an integer/);
    refuses(sample("ack"), { seq: 1.5 }, /ack.seq/);
  });

  it("refuses fields a message does not have, at every level", () => {
    refuses(sample("hello"), { token: "x" }, /hello: unknown field "token"/);
    refuses(sample("commit"), { force: true }, /commit: unknown field "force"/);
    refuses(sample("ack"), { bytes: 4096 }, /ack: unknown field "bytes"/);
    refuses(sample("pages"), { __proto__x: 1 }, /pages: unknown field/);
    refuses(sample("config"), { machine: { ...machine, hpet: true } }, /config.machine: unknown field "hpet"/);
  });

  it("survives a frame nested too deep to decode", () => {
    const deep = new Uint8Array(200_000).fill(0x91);
    expect(() => decode(deep)).toThrow(ProtocolError);
  });

  it("keeps an error's message and maps an unknown code to internal", () => {
    const e = decode(pack({ t: "error", code: "solar-flare", message: "later version" }));
    expect(e).toEqual({ t: "error", code: "internal", message: "later version" });
  });

  describe("pages", () => {
    const pages = sample("pages");
    it("are refused before the memory size is known", () => {
      expect(() => decode(encode(pages))).toThrow(/before the memory size is agreed/);
    });

    it("must name pages inside guest memory, in non-empty runs", () => {
      refuses(pages, { runs: [4095, 2], data: new Uint8Array(2 * PAGE_SIZE) }, /outside guest memory/);
      refuses(pages, { zeros: [-1, 1] }, /outside guest memory/);
      refuses(pages, { zeros: [3, 0] }, /outside guest memory/);
      refuses(pages, { zeros: [1.5, 1] }, /outside guest memory/);
      refuses(pages, { runs: [10] }, /pairs/);
      refuses(pages, { zeros: new Array(2 * MAX_RUNS + 2).fill(1) }, /pairs/);
    });

    it("must carry exactly one page of bytes per page in its runs", () => {
      refuses(pages, { data: new Uint8Array(PAGE_SIZE) }, /pages.data: expected 8192 bytes/);
      refuses(pages, { data: new Uint8Array(3 * PAGE_SIZE) }, /pages.data/);
    });

    it("hold a bounded number of pages", () => {
      const big = { pageCount: 1 << 20 };
      const frame = pack({ ...pages, runs: [], data: new Uint8Array(0), zeros: [0, MAX_BATCH_PAGES + 1] });
      expect(() => decode(frame, big)).toThrow(/more than 65536 pages/);
    });
  });

  it("never fails other than with a ProtocolError, whatever the bytes", () => {
    const anyMessage = fc.oneof(
      fc.uint8Array({ maxLength: 200 }),
      fc.anything().map((v) => pack(v)),
      fc.record({ t: fc.constantFrom(...VALID.map((m) => m.t)), runs: fc.array(fc.integer()), zeros: fc.array(fc.double()), data: fc.uint8Array({ maxLength: 64 }) }).map((v) => pack(v)),
    );
    fc.assert(
      fc.property(anyMessage, (frame) => {
        try {
          decode(frame, BOUNDS);
        } catch (e) {
          // vitest's matcher only for an error of another kind: its verdict, not its cost per case.
          if (!(e instanceof ProtocolError)) expect(e).toBeInstanceOf(ProtocolError);
        }
      }),
      { numRuns: 2000 },
    );
  });
});

describe("batches", () => {
  it("coalesce consecutive pages into runs and checksum (page, CRC) pairs", () => {
    const b = new BatchBuilder();
    const page = (fill: number) => new Uint8Array(PAGE_SIZE).fill(fill);
    for (const p of [5, 6, 7, 9]) b.add(p, page(p), pageChecksum(page(p)), false);
    for (const p of [1, 2, 8]) b.add(p, ZERO_PAGE, ZERO_PAGE_CRC, true);
    const m = b.take(3, 4);
    expect(m.runs).toEqual([5, 3, 9, 1]);
    expect(m.zeros).toEqual([1, 2, 8, 1]);
    expect(m.data.length).toBe(4 * PAGE_SIZE);
    expect(m.data[3 * PAGE_SIZE]).toBe(9);
    const pairs = new Uint32Array([5, 6, 7, 9, 1, 2, 8].flatMap((p) => [p, p === 1 || p === 2 || p === 8 ? ZERO_PAGE_CRC : pageChecksum(page(p))]));
    expect(m.crc).toBe(batchChecksum(pairs, 7));
    // The same pages in another place give another checksum.
    pairs[0] = 4;
    expect(batchChecksum(pairs, 7)).not.toBe(m.crc);
    expect(b.empty).toBe(true);
    expect(b.take(3, 5).runs).toEqual([]);
  });

  it("fill up at 1 MiB of page data", () => {
    const b = new BatchBuilder();
    for (let p = 0; p < 256; p++) {
      expect(b.full).toBe(false);
      b.add(2 * p, ZERO_PAGE, 0, false);
    }
    expect(b.full).toBe(true);
    expect(encode(b.take(0, 0)).length).toBeLessThan(MAX_PAYLOAD);
  });
});

describe("frames built in place", () => {
  // One builder for every batch here: take() empties it.
  const b = new BatchBuilder();
  const batchOf = (pages: number[], zeros: number[]) => {
    for (const p of pages) {
      const page = new Uint8Array(PAGE_SIZE).fill(p);
      b.add(p, page, pageChecksum(page), false);
    }
    for (const p of zeros) b.add(p, ZERO_PAGE, ZERO_PAGE_CRC, true);
    return b.take(2, 9);
  };
  /** A message with a batch's page bytes as their SHA-256, to compare messages whatever buffers they view (and fast). */
  const plain = (m: Message) => (m.t === "pages" ? { ...m, data: createHash("sha256").update(Buffer.concat(chunksOf(m.data))).digest("hex") } : m);
  /** What decoding gives: the message, or that it was refused with a ProtocolError. */
  const outcome = (frame: Uint8Array | Uint8Array[]) => {
    try {
      return plain(decode(frame, BOUNDS));
    } catch (e) {
      expect(e).toBeInstanceOf(ProtocolError);
      return "refused";
    }
  };

  it("carry the page bytes where the batch builder copied them, in fragments the destination reads in place", () => {
    const m = batchOf([1, 2, 3, 7, 300, ...Array.from({ length: 20 }, (_, i) => 1000 + i)], [4, 5, 9]);
    const { fragments, bytes, release } = framePool.encode(m);
    const joined = Buffer.concat(fragments);
    expect(joined.length).toBe(bytes);
    // The page fragments are the buffer the pages were copied into: no copy on encoding.
    const data = fragments.slice(1, -1);
    expect(data.every((f) => f.buffer === m.data.buffer && f.length % PAGE_SIZE === 0 && f.length <= PAGES_FRAGMENT_BYTES)).toBe(true);
    expect(Buffer.concat(data).equals(m.data)).toBe(true);
    // Read from its fragments, the batch's pages are those fragments.
    const received = decode(fragments, BOUNDS);
    const chunks = received.t === "pages" ? chunksOf(received.data) : [];
    expect(chunks.length === data.length && chunks.every((c, i) => c === data[i])).toBe(true);
    expect(plain(received)).toEqual(plain(m));
    // The frame joined, and the same batch encoded by msgpackr alone, decode to the same message.
    expect(plain(decode(joined, BOUNDS))).toEqual(plain(m));
    expect(plain(decode(encode(m), BOUNDS))).toEqual(plain(m));
    release();
  });

  it("decode from any fragments as from the frame they join into, whatever their bytes", () => {
    // Up to 12 pages: two fragments of pages besides the prefix and the other fields.
    const pages = fc.uniqueArray(fc.integer({ min: 0, max: 4095 }), { maxLength: 12 });
    // Changed bytes land mostly in the prefix and in the fields after the pages, where the reading differs.
    const place = fc.oneof(fc.nat(2 * PAGES_DATA_OFFSET).map((at) => (f: Buffer) => at % f.length), fc.nat(300).map((back) => (f: Buffer) => Math.max(0, f.length - 1 - back)), fc.nat().map((at) => (f: Buffer) => at % f.length));
    fc.assert(
      fc.property(pages, pages, fc.array(fc.nat(), { maxLength: 12 }), fc.array(fc.tuple(place, fc.nat(255)), { maxLength: 3 }), (data, zeros, cuts, changes) => {
        const { fragments: sent, release } = framePool.encode(batchOf(data, zeros.filter((p) => !data.includes(p))));
        const frame = Buffer.concat(sent);
        const sizes = sent.map((f) => f.length);
        release();
        for (const [at, byte] of changes) frame[at(frame)] = byte;
        // Fragments as the source sends them, or cut anywhere, as an intermediary may.
        let at = 0;
        const asSent = sizes.map((n) => frame.subarray(at, (at += n)));
        const bounds = [...new Set([0, ...cuts.map((c) => c % frame.length), frame.length])].sort((a, b) => a - b);
        const anywhere = bounds.slice(1).map((end, i) => frame.subarray(bounds[i], end));
        const whole = outcome(frame);
        expect(outcome(asSent)).toEqual(whole);
        expect(outcome(anywhere)).toEqual(whole);
      }),
      { numRuns: 300 },
    );
  });

  it("leave msgpackr writing other messages elsewhere than into a pool buffer a batch fills next", () => {
    const deltas: Message = { t: "deltas", round: 1, seq: 0, pages: [3], lengths: [4], data: new Uint8Array(4), crc: 0 };
    const { release } = framePool.encode(deltas);
    // Its buffer goes back to the pool, and the next batch's pages are copied into it.
    release();
    const page = new Uint8Array(PAGE_SIZE).fill(0xab);
    b.add(7, page, pageChecksum(page), false);
    for (let seq = 0; seq < 100; seq++) encode({ t: "ack", seq });
    const m = b.take(0, 1);
    expect(Buffer.from(m.data).equals(Buffer.from(page))).toBe(true);
  });

  it("round-trip whatever the batch holds: full, zero pages only, up to the run limit", () => {
    fc.assert(
      fc.property(fc.uniqueArray(fc.integer({ min: 0, max: 4095 }), { maxLength: 256 }), fc.uniqueArray(fc.integer({ min: 0, max: 4095 }), { maxLength: 300 }), (data, zeros) => {
        const m = batchOf(data, zeros.filter((p) => !data.includes(p)));
        const { fragments, release } = framePool.encode(m);
        expect(plain(decode(fragments, BOUNDS))).toEqual(plain(m));
        release();
      }),
      { numRuns: 200 },
    );
    // About the largest frame: 1 MiB of data but a page in 255 runs, then zero pages in runs up to the run limit.
    for (let p = 1; p < 510; p += 2) b.add(p, new Uint8Array(PAGE_SIZE).fill(p), 0, false);
    for (let p = 1024; !b.full; p += 2) b.add(p, ZERO_PAGE, ZERO_PAGE_CRC, true);
    const m = b.take(0, 0);
    expect([m.runs.length, m.zeros.length]).toEqual([2 * 255, 2 * MAX_RUNS]);
    const { fragments, bytes, release } = framePool.encode(m);
    expect(bytes).toBeLessThan(MAX_PAYLOAD);
    expect(plain(decode(fragments, { pageCount: 1 << 20 }))).toEqual(plain(m));
    release();
  });
});

describe("state digest", () => {
  it("changes with the memory digest, the CPU record and the device record", () => {
    const a = new Uint8Array([1, 2, 3]);
    const d = stateDigest("00", a, a);
    expect(d.length).toBe(32);
    expect(stateDigest("00", a, a).equals(d)).toBe(true);
    expect(stateDigest("01", a, a).equals(d)).toBe(false);
    expect(stateDigest("00", new Uint8Array([1, 2]), new Uint8Array([3, 1, 2, 3])).equals(d)).toBe(false);
    expect(stateDigest("00", a, new Uint8Array([1, 2, 4])).equals(d)).toBe(false);
  });
});

describe("state records", () => {
  const guest = bootGuest({ workload: "idle", interrupts: "apic", memoryBytes: 2 << 20, seed: 3, cpus: 2, endNs: 0 });
  guest.runUntil(5 * 1_000_000);
  const cpus = cpusToRecord(guest.pause());
  const devices = encodeRecord(guest.machine.capture());
  const config = (more: Partial<typeof machine> = {}): Config => ({ t: "config", memoryBytes: 2 << 20, pageSize: PAGE_SIZE, machine: { ...machine, ...more }, workload: "idle", endNs: 1e9 });
  const refused = (c: Config, cpuRecord: unknown, pattern: RegExp): void => {
    const rebuild = () => rebuildRecords(c, encodeRecord(cpuRecord), devices);
    expect(rebuild).toThrow(ProtocolError);
    expect(rebuild).toThrow(pattern);
    try {
      rebuild();
    } catch (e) {
      expect((e as ProtocolError).code).toBe("state");
    }
  };

  it("carry every CPU: as many records as the board agreed, each checked, the devices' CPU count the same", () => {
    const { cpus: rebuilt, machine: m } = rebuildRecords(config(), encodeRecord(cpus), devices);
    expect(rebuilt.map((c) => c.toRecord())).toEqual(cpus.cpus);
    expect(m.config.cpus).toBe(2);
    refused(config(), { ...cpus, cpus: [...cpus.cpus, cpus.cpus[1]] }, /cpus\.cpus: 3 CPU records for a board of 2 CPUs/);
    refused(config(), { ...cpus, cpus: [] }, /cpus\.cpus: expected a list of 1\.\.64 CPU records, got 0 records/);
    refused(config({ cpus: 3 }), { ...cpus, cpus: [...cpus.cpus, cpus.cpus[1]] }, /device record: cpus is 2, the configuration said 3/);
    refused(config(), { ...cpus, cpus: [cpus.cpus[0], { ...cpus.cpus[1], rip: 1n << 63n }] }, /cpus\[1\] cpu\.rip: 0x8000000000000000 is not a canonical 48-bit address/);
    // A lone CPU record, as a build that knew one CPU would have sent it.
    refused(config(), cpus.cpus[0], /cpus\.cpus: missing/);
  });

  it("fit the state message's bound: a 64-CPU guest's records do, a larger record is refused", () => {
    const big = bootGuest({ workload: "idle", interrupts: "apic", memoryBytes: 2 << 20, seed: 3, cpus: 64, endNs: 0 });
    big.runUntil(200 * 1_000_000);
    const cpu = encodeRecord(cpusToRecord(big.pause()));
    expect(cpu.length).toBeGreaterThan(64 * 1024);
    expect(cpu.length).toBeLessThanOrEqual(MAX_RECORD_BYTES);
    const state = { ...sample("state"), cpu };
    expect(decode(encode(state), BOUNDS)).toMatchObject({ t: "state", cpu });
    refuses(state, { cpu: new Uint8Array(MAX_RECORD_BYTES + 1) }, /state\.cpu: expected 1\.\.262144 bytes/);
  });
});
