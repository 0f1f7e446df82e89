// Hostile compiled traces: sizes and offsets meant to wrap or to make the reader allocate the
// whole file, records with operands no text trace may hold, invalid UTF-8, and a fuzzer that
// flips bits in and cuts compiled files. Every file is either refused with a TraceError naming
// the file and the record, or holds exactly the events its text form holds; and the core's
// record check refuses exactly the records the host's own check words a problem for.

import { open, mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import fc from "fast-check";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { HeaderField, HeaderFlag, RECORD_SIZE, RecordChecker, compileTrace, decodeRecord, readCompiledChunks, recordProblem } from "../src/trace/compiled.js";
import { Machine } from "../src/core/machine.js";
import { TraceError, readTraceFile } from "../src/trace/reader.js";
import { TraceParser } from "../src/trace/parse.js";
import { formatEvent, formatHeader } from "../src/trace/writer.js";
import { RecordField } from "../assembly/abi/codes.js";
import { Check, Op, type TraceEvent, type TraceHeader } from "../src/trace/event.js";

const CASES = process.env.DEEP ? 20_000 : 1_500;
const TRACE = `blmv-trace 1
!source a hand-written trace with every op
!machine pit=on
0 outb 0x20 0x11
+10 outw 0x4d0 0x0c00
+10 outl 0xcf8 0x80000000
+10 inb 0x21 = 0xfe
+10 inw 0x4d0 = 0x0c00/0xff00
+10 inl 0xcfc
+10 writel 0xfee000f0 0x1ff
+10 readl 0xfee00030 = 0x50014/0xff
+10 wrmsr 0x6e0 0xffffffff00000001
+10 rdmsr 0x1b = 0xfee00900/0xfffff000
+10 irq 4 1
+10 gsi 23 0
+10 inta = none
+10 inta = 0x20
+10 mark tick
+10 mark done
+10 migrate
`;

let dir: string;
let textPath: string;
let good: Buffer;
let recordsAt: number;

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), "blmv-btrace-"));
  textPath = join(dir, "all.trace");
  await writeFile(textPath, TRACE);
  await compileTrace(textPath, join(dir, "all.btrace"));
  good = await readFile(join(dir, "all.btrace"));
  recordsAt = good.readUInt32LE(HeaderField.RecordsOffset);
});
afterAll(() => rm(dir, { recursive: true, force: true }));

/** Reads a compiled file to its end: its header, labels and events. */
async function readAll(path: string): Promise<{ header: TraceHeader; events: TraceEvent[] }> {
  const compiled = await readCompiledChunks(path, 5);
  const events: TraceEvent[] = [];
  for await (const chunk of compiled.chunks) {
    const view = new DataView(chunk.buffer, chunk.byteOffset, chunk.length);
    for (let at = 0; at < chunk.length; at += RECORD_SIZE) events.push(decodeRecord(view, at, compiled.labels));
  }
  return { header: compiled.header, events };
}

let n = 0;
async function readBytes(bytes: Uint8Array): Promise<{ header: TraceHeader; events: TraceEvent[] }> {
  const path = join(dir, `case-${n++ % 4}.btrace`);
  await writeFile(path, bytes);
  return readAll(path);
}

/** The first record of `op` (its line in TRACE) patched by `patch`. */
function patched(line: number, patch: (record: Buffer) => void): Buffer {
  const bytes = Buffer.from(good);
  for (let at = recordsAt; ; at += RECORD_SIZE) {
    if (bytes.readUInt32LE(at + RecordField.Line) !== line) continue;
    patch(bytes.subarray(at, at + RECORD_SIZE));
    return bytes;
  }
}

const lineOf = (text: string): number => TRACE.split("\n").findIndex((l) => l.startsWith(text) || l.includes(` ${text}`)) + 1;

describe("compiled trace reader against hostile files", () => {
  it("a source length near 2^32 is refused, not read (it wrapped the 32-bit alignment and aborted Node)", async () => {
    const bytes = Buffer.from(good.subarray(0, 568));
    bytes.writeUInt32LE(0xffff_fff8, HeaderField.SourceLength);
    bytes.writeUInt32LE(0x40, HeaderField.RecordsOffset);
    await expect(readBytes(bytes)).rejects.toMatchObject({ name: "TraceError", reason: expect.stringMatching(/not a valid compiled trace: source text of 4294967288 bytes/) });
  });

  it("a sparse 3 GiB file is refused without reading it whole", async () => {
    const path = join(dir, "sparse.btrace");
    const head = Buffer.from(good.subarray(0, recordsAt));
    head.writeBigUInt64LE(0n, HeaderField.RecordCount);
    head.writeBigUInt64LE(BigInt(recordsAt), HeaderField.LabelsOffset);
    head.writeUInt32LE(0, HeaderField.LabelCount);
    await writeFile(path, head);
    const file = await open(path, "r+");
    await file.truncate(3 * 2 ** 30);
    await file.close();
    await expect(readAll(path)).rejects.toMatchObject({ reason: "not a valid compiled trace: bytes after the label table" });
    // A label claiming to be gigabytes long is refused by its length alone.
    const long = await open(path, "r+");
    const header = Buffer.from(head);
    header.writeUInt32LE(1, HeaderField.LabelCount);
    await long.write(header, 0, header.length, 0);
    await long.write(Buffer.from([0xf0, 0xff, 0xff, 0xbf]), 0, 4, recordsAt);
    await long.close();
    await expect(readAll(path)).rejects.toMatchObject({ reason: expect.stringMatching(/label 0 of 3221225456 bytes/) });
  });

  const cases: [string, number, (r: Buffer) => void, RegExp][] = [
    ["GSI pin 99", lineOf("gsi 23"), (r) => r.writeUInt32LE(99, RecordField.A), /I\/O APIC pin 0x63 is too large \(max 0x17\)/],
    ["IRQ line 200", lineOf("irq 4"), (r) => r.writeUInt32LE(200, RecordField.A), /ISA line 0xc8 is too large \(max 0xf\)/],
    ["port 0x12345", lineOf("inb 0x21"), (r) => r.writeUInt32LE(0x12345, RecordField.A), /port 0x12345 is too large \(max 0xffff\)/],
    ["outb value 0x1ff", lineOf("0 outb"), (r) => r.writeUInt32LE(0x1ff, RecordField.B), /outb value 0x1ff is too large \(max 0xff\)/],
    ["level 7", lineOf("irq 4"), (r) => r.writeUInt32LE(7, RecordField.B), /level 0x7 is too large \(max 0x1\)/],
    ["non-zero reserved bytes", lineOf("inl 0xcfc"), (r) => r.writeUInt16LE(0x100, RecordField.Reserved), /reserved bytes 0x100 are not 0/],
    ["an operand on inta", lineOf("inta = none"), (r) => r.writeUInt32LE(1, RecordField.A), /operand a 0x1 on an op that has none/],
    ["an expected value without a check", lineOf("inl 0xcfc"), (r) => r.writeUInt32LE(5, RecordField.Value), /without a value check/],
    ["an expected inb value above a byte", lineOf("inb 0x21"), (r) => r.writeUInt32LE(0x1fe, RecordField.Value), /expected value 0x1fe is too large/],
  ];
  for (const [what, line, patch, reason] of cases) {
    it(`refuses a record with ${what}, naming the file, the record and its line`, async () => {
      const error: TraceError = await readBytes(patched(line, patch)).then(() => { throw new Error("accepted"); }, (e: TraceError) => e);
      expect(error).toBeInstanceOf(TraceError);
      expect(error.line).toBe(line);
      expect(error.reason).toMatch(/^compiled record \d+: /);
      expect(error.reason).toMatch(reason);
      expect(error.message).toMatch(/case-\d\.btrace:\d+: compiled record/);
    });
  }

  it("refuses invalid UTF-8 in the source text and in a label", async () => {
    const source = Buffer.from(good);
    source[64] = 0xff;
    await expect(readBytes(source)).rejects.toMatchObject({ reason: "not a valid compiled trace: source text is not valid UTF-8" });
    const label = Buffer.from(good);
    const labelsAt = Number(good.readBigUInt64LE(HeaderField.LabelsOffset));
    label[labelsAt + 4] = 0xc3;
    await expect(readBytes(label)).rejects.toMatchObject({ reason: "not a valid compiled trace: label 0 is not valid UTF-8" });
  });

  it("refuses unknown header flags and non-zero padding", async () => {
    const flags = Buffer.from(good);
    flags.writeUInt32LE(flags.readUInt32LE(HeaderField.Flags) | 0x80, HeaderField.Flags);
    await expect(readBytes(flags)).rejects.toMatchObject({ reason: "not a valid compiled trace: unknown header flags 0x80" });
    const padding = Buffer.from(good);
    expect(good.readUInt32LE(HeaderField.Flags) & HeaderFlag.HasSource).not.toBe(0);
    padding[recordsAt - 1] = 1;
    await expect(readBytes(padding)).rejects.toMatchObject({ reason: "not a valid compiled trace: non-zero padding after the source text" });
  });

  it(`fuzz (${CASES} cases): every bit-flipped or cut file is refused cleanly or holds what its text form holds`, async () => {
    const expected = await readTraceFile(textPath);
    expect(await readAll(join(dir, "all.btrace"))).toEqual(expected);
    const mutation = fc.oneof(
      fc.record({ kind: fc.constant("flip" as const), bits: fc.array(fc.nat(good.length * 8 - 1), { minLength: 1, maxLength: 3 }) }),
      fc.record({ kind: fc.constant("cut" as const), length: fc.nat(good.length - 1) }),
    );
    let accepted = 0;
    await fc.assert(
      fc.asyncProperty(mutation, async (m) => {
        const bytes = m.kind === "cut" ? good.subarray(0, m.length) : Buffer.from(good);
        if (m.kind === "flip") for (const bit of m.bits) bytes[bit >> 3] ^= 1 << (bit & 7);
        let read: { header: TraceHeader; events: TraceEvent[] };
        try {
          read = await readBytes(bytes);
        } catch (e) {
          expect(e).toBeInstanceOf(TraceError);
          return;
        }
        accepted++;
        // Accepted: its text form, parsed, must hold the same header and events (lines aside).
        const parser = new TraceParser("text form");
        const lines = [...formatHeader(read.header).split("\n").filter((l) => l !== ""), ...read.events.map(formatEvent)];
        const back = lines.map((l, i) => parser.parseLine(l, i + 1)).filter((e): e is TraceEvent => e !== null);
        expect(parser.header).toEqual(read.header);
        const noLine = (events: TraceEvent[]) => events.map((e) => ({ ...e, line: 0 }));
        expect(noLine(back)).toEqual(noLine(read.events));
      }),
      { numRuns: CASES },
    );
    // Flips of the line numbers and of bits that change a value within its range are legal.
    expect(accepted).toBeGreaterThan(0);
  }, 120_000);

  it(`the core's record check refuses exactly the records the host can say something is wrong with (${CASES} cases)`, () => {
    const word = fc.constantFrom(0, 1, 2, 3, 4, 7, 15, 16, 23, 24, 63, 64, 0xff, 0x100, 0xffff, 0x1_0000, 0x7fff_ffff, 0xffff_ffff);
    const record = fc.record({
      op: fc.oneof({ weight: 9, arbitrary: fc.integer({ min: 1, max: Op.Sipi }) }, { weight: 1, arbitrary: fc.constantFrom(0, Op.Sipi + 1, 31, 32, 255) }),
      check: fc.oneof({ weight: 3, arbitrary: fc.constant(Check.None) }, { weight: 3, arbitrary: fc.integer({ min: Check.Value, max: Check.Nmi }) }, { weight: 1, arbitrary: fc.constantFrom(4, 255) }),
      reserved: fc.oneof({ weight: 19, arbitrary: fc.constant(0) }, { weight: 1, arbitrary: fc.constantFrom(1, 0x100) }),
      // Operands a and b often at or near a limit; the expectation's fields mostly 0.
      fields: fc.tuple(...[1, 2, 12, 12, 12, 12].map((zeros) => fc.oneof({ weight: zeros, arbitrary: fc.constant(0) }, { weight: 2, arbitrary: word }))),
      timeStep: fc.oneof({ weight: 19, arbitrary: fc.nat(1000) }, { weight: 1, arbitrary: fc.constantFrom(-1, 2 ** 53) }),
    });
    const machine = Machine.create({ lapic: true, cpus: 4 });
    const trace = { file: "t.btrace", labels: ["one", "two"], header: { cpus: 4 } } as const;
    const verdicts = { accepted: 0, refused: 0 };
    try {
      fc.assert(
        fc.property(fc.array(record, { minLength: 1, maxLength: 2 }), (records) => {
          const core = machine.core;
          const at = core.replayScratch(records.length * RECORD_SIZE);
          const view = new DataView(core.memory.buffer, at, records.length * RECORD_SIZE);
          let time = 0;
          records.forEach((r, i) => {
            const o = i * RECORD_SIZE;
            view.setUint8(o + RecordField.Op, r.op);
            view.setUint8(o + RecordField.Check, r.check);
            view.setUint16(o + RecordField.Reserved, r.reserved, true);
            view.setUint32(o + RecordField.Line, i + 1, true);
            [RecordField.A, RecordField.B, RecordField.High, RecordField.Value, RecordField.Mask, RecordField.MaskHigh].forEach((f, k) => view.setUint32(o + f, r.fields[k], true));
            time = Math.max(0, time + r.timeStep);
            view.setBigUint64(o + RecordField.Time, BigInt(time), true);
          });
          // The host's verdict, record by record.
          let expected: string | null = null;
          let last = 0;
          for (let i = 0; i < records.length && expected === null; i++) {
            const e = {} as TraceEvent;
            const problem = recordProblem(view, i * RECORD_SIZE, e, last, { labelCount: 2, cpus: 4 });
            if (problem !== null) expected = `compiled record ${i}: ${problem}`;
            last = e.time;
          }
          let refused: string | null = null;
          try {
            new RecordChecker(trace).check(core, at, records.length);
          } catch (e) {
            expect(e).toBeInstanceOf(TraceError);
            refused = (e as TraceError).reason;
          }
          expect(refused).toBe(expected);
          verdicts[refused === null ? "accepted" : "refused"]++;
        }),
        { numRuns: CASES },
      );
    } finally {
      machine.release();
    }
    expect(verdicts.accepted).toBeGreaterThan(CASES / 50);
    expect(verdicts.refused).toBeGreaterThan(CASES / 50);
  });
});
