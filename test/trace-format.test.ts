import { MAX_CLOCK_HZ } from "../src/core/machine.js";
import { createWriteStream } from "node:fs";
import { mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Readable } from "node:stream";
import { once } from "node:events";
import { gzipSync } from "node:zlib";
import fc from "fast-check";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { Check, Op, defaultHeader, makeEvent, msrExpectation, msrValue, type TraceEvent, type TraceHeader } from "../src/trace/event.js";
import { TraceError, openTrace, readTraceFile } from "../src/trace/reader.js";
import { formatEvent, writeTrace } from "../src/trace/writer.js";
import { RECORD_SIZE, compileTrace, decodeRecord, readCompiledChunks } from "../src/trace/compiled.js";

let dir: string;
beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), "blmv-trace-"));
});
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

const SPEC_EXAMPLE = `blmv-trace 1
!source hand-written: PIC init as Linux does it, then one timer tick
!machine lapic=off ioapic=off
0 outb 0x20 0x11        # ICW1: edge, cascade, ICW4 needed
+100 outb 0x21 0x20     # ICW2: vector base 0x20
+100 outb 0x21 0x04     # ICW3: slave on IR2
+100 outb 0x21 0x01     # ICW4: 8086 mode
+100 outb 0x21 0xfe     # OCW1: only IRQ0 unmasked
+100 inb 0x21 = 0xfe
+100 outb 0x43 0x34     # PIT ch0, LSB then MSB, mode 2
+100 outb 0x40 0xa9
+100 outb 0x40 0x04     # 1193 = 1 ms
1001000 inta = 0x20
+100 outb 0x20 0x0b     # OCW3: read ISR
+100 inb 0x20 = 0x01
+100 outb 0x20 0x20     # non-specific EOI
+100 inb 0x20 = 0x00
+100 migrate
`;

function fromText(text: string | Buffer, name = "t.trace") {
  return readTraceFile(Readable.from([typeof text === "string" ? Buffer.from(text) : text]), { name });
}

/** The TraceError that reading `text` raises. */
async function rejection(text: string | Buffer): Promise<TraceError> {
  try {
    await fromText(text);
  } catch (e) {
    expect(e).toBeInstanceOf(TraceError);
    return e as TraceError;
  }
  throw new Error("trace was accepted");
}

const withoutLines = (events: TraceEvent[]) => events.map((e) => ({ ...e, line: 0 }));

describe("reading the spec example", () => {
  it("gives the header and every event with absolute times and expectations", async () => {
    const { header, events } = await fromText(SPEC_EXAMPLE);
    expect(header).toEqual({
      ...defaultHeader(),
      machine: { pic: true, pit: true, lapic: false, ioapic: false },
      source: "hand-written: PIC init as Linux does it, then one timer tick",
    });
    expect(events).toHaveLength(15);
    expect(events[0]).toEqual(makeEvent({ time: 0, op: Op.Outb, a: 0x20, b: 0x11, line: 4 }));
    expect(events[5]).toEqual(makeEvent({ time: 500, op: Op.Inb, a: 0x21, check: Check.Value, value: 0xfe, mask: 0xff, line: 9 }));
    expect(events[9]).toEqual(makeEvent({ time: 1001000, op: Op.Inta, check: Check.Value, value: 0x20, mask: 0xff, line: 13 }));
    expect(events[14]).toEqual(makeEvent({ time: 1001500, op: Op.Migrate, line: 18 }));
  });

  it("reads every op, masks, none, 64-bit MSR values and all directives", async () => {
    const { header, events } = await fromText(
      [
        "# leading comment",
        "",
        "blmv-trace 1   # magic with a comment",
        "!machine pic=off",
        "!apic-bus-hz 0x5f5e100",
        "!tsc-hz 2000000000",
        "!wire pit-irq0=off",
        "!compat qemu",
        "10 outw 0x4d0 0xffff",
        "10 outl 0xcf8 0xffffffff",
        "\t11\tinw 0x40 = 0x1234/0xff00\r",
        "12 inl 0x40",
        "13 writel 0xfee000b0 0",
        "14 readl 0xfec00010 = 0x170020",
        "15 wrmsr 0x6e0 0x123456789abcdef0",
        "16 rdmsr 0x1b = 0xfee00900/0xffffffff00000fff",
        "17 rdmsr 0x10 = 5",
        "18 irq 15 1",
        "19 gsi 23 0",
        "20 inta = none",
        "21 inta",
        "22 mark boot-done",
        "+0 inb 0x61 = 0x20/0x10",
      ].join("\n"),
    );
    expect(header).toEqual({
      machine: { pic: false, pit: true, lapic: true, ioapic: true },
      apicBusHz: 100_000_000,
      tscHz: 2_000_000_000,
      pitIrq0: false,
      compatQemu: true,
      cpus: 1,
    });
    const [outw, outl, inw, inl, writel, readl, wrmsr, rdmsr, rdmsrFull, irq, gsi, none, inta, mark, inb] = events;
    expect(outw).toMatchObject({ op: Op.Outw, a: 0x4d0, b: 0xffff });
    expect(outl).toMatchObject({ op: Op.Outl, a: 0xcf8, b: 0xffffffff });
    expect(inw).toMatchObject({ time: 11, op: Op.Inw, check: Check.Value, value: 0x1234, mask: 0xff00, line: 11 });
    expect(inl).toMatchObject({ op: Op.Inl, check: Check.None });
    expect(writel).toMatchObject({ op: Op.Writel, a: 0xfee000b0, b: 0 });
    expect(readl).toMatchObject({ op: Op.Readl, value: 0x170020, mask: 0xffffffff });
    expect(msrValue(wrmsr)).toBe(0x123456789abcdef0n);
    expect(msrExpectation(rdmsr)).toEqual({ value: 0xfee00900n, mask: 0xffffffff00000fffn });
    expect(msrExpectation(rdmsrFull)).toEqual({ value: 5n, mask: 0xffffffffffffffffn });
    expect(irq).toMatchObject({ op: Op.Irq, a: 15, b: 1 });
    expect(gsi).toMatchObject({ op: Op.Gsi, a: 23, b: 0 });
    expect(none).toMatchObject({ op: Op.Inta, check: Check.NoInterrupt });
    expect(inta).toMatchObject({ op: Op.Inta, check: Check.None });
    expect(mark).toMatchObject({ op: Op.Mark, label: "boot-done" });
    expect(inb).toMatchObject({ time: 22, value: 0x20, mask: 0x10, line: 23 });
  });

  it("accepts a trace with a header and no events", async () => {
    const { header, events } = await fromText("blmv-trace 1\n!compat qemu\n");
    expect(header.compatQemu).toBe(true);
    expect(events).toEqual([]);
  });
});

describe("rejections name the file and the line", () => {
  const M = "blmv-trace 1\n";
  const cases: [string, string, number, RegExp][] = [
    ["empty input", "", 1, /missing 'blmv-trace 1'/],
    ["only comments", "# a\n\n# b\n", 3, /missing 'blmv-trace 1'/],
    ["event before the magic", "# c\n0 outb 0x20 0x11\n", 2, /expected 'blmv-trace 1'/],
    ["directive before the magic", "!compat qemu\n", 1, /expected 'blmv-trace 1'/],
    ["wrong version", "blmv-trace 2\n", 1, /unsupported format/],
    ["magic with extra words", "blmv-trace 1 x\n", 1, /unsupported format/],
    ["unknown directive", M + "!frobnicate 1\n", 2, /unknown directive '!frobnicate'/],
    ["directive after the first event", M + "0 migrate\n!compat qemu\n", 3, /directive after the first event/],
    ["unknown machine key", M + "!machine hpet=on\n", 2, /unknown device 'hpet'/],
    ["bad machine value", M + "!machine pic=yes\n", 2, /bad value 'yes'/],
    ["machine setting without '='", M + "!machine pic\n", 2, /key=value/],
    ["unknown wire", M + "!wire rtc-irq8=on\n", 2, /unknown wire/],
    ["unknown compat mode", M + "!compat bochs\n", 2, /unknown compat mode/],
    ["zero clock rate", M + "!apic-bus-hz 0\n", 2, /must not be 0/],
    ["clock rate with two numbers", M + "!tsc-hz 1 2\n", 2, /takes one number/],
    ["empty source", M + "!source   # nothing\n", 2, /needs a text/],
    ["unknown op", M + "0 outb 0x20 0x11\n5 outq 0x20 1\n", 3, /unknown op 'outq'/],
    ["missing op", M + "100\n", 2, /missing op/],
    ["bad time", M + "1e3 migrate\n", 2, /bad number '1e3' for time/],
    ["negative number", M + "0 irq -1 1\n", 2, /bad number '-1'/],
    ["bad hex", M + "0 outb 0xzz 1\n", 2, /bad number '0xzz'/],
    ["upper-case hex prefix", M + "0 outb 0X20 1\n", 2, /bad number '0X20'/],
    ["empty relative time", M + "+ migrate\n", 2, /bad number ''/],
    ["time beyond 2^53", M + "9007199254740992 migrate\n", 2, /time .* too large/],
    ["relative time beyond 2^53", M + "9007199254740991 migrate\n+1 migrate\n", 3, /beyond 2\^53/],
    ["time going backwards", M + "100 migrate\n+5 migrate\n104 migrate\n", 4, /time goes backwards: 104 after 105/],
    ["outb value above 0xff", M + "0 outb 0x20 0x100\n", 2, /outb value 0x100 is too large \(max 0xff\)/],
    ["outw value above 0xffff", M + "0 outw 0x20 65536\n", 2, /outw value 65536 is too large/],
    ["outl value above 32 bits", M + "0 outl 0x20 0x100000000\n", 2, /outl value .* too large/],
    ["port above 0xffff", M + "0 inb 0x10000\n", 2, /port 0x10000 is too large/],
    ["writel address above 32 bits", M + "0 writel 0x1fee00000 0\n", 2, /address .* too large/],
    ["wrmsr value above 64 bits", M + "0 wrmsr 0x6e0 0x10000000000000000\n", 2, /does not fit in 64 bits/],
    ["irq line above 15", M + "0 irq 16 1\n", 2, /ISA line 16 is too large \(max 15\)/],
    ["gsi pin above 23", M + "0 gsi 24 1\n", 2, /I\/O APIC pin 24 is too large \(max 23\)/],
    ["level other than 0 or 1", M + "0 irq 3 2\n", 2, /level 2 is too large \(max 1\)/],
    ["too few operands", M + "0 outb 0x20\n", 2, /outb takes PORT VALUE, got 1 operand$/],
    ["too many operands", M + "0 inb 0x20 0x21\n", 2, /inb takes PORT, got 2 operands/],
    ["operand on inta", M + "0 inta 0x20\n", 2, /inta takes no operands, got 1/],
    ["mark without a label", M + "0 mark\n", 2, /mark takes LABEL, got 0/],
    ["operand on migrate", M + "0 migrate now\n", 2, /migrate takes no operands/],
    ["expectation on a write", M + "0 outb 0x20 0x11 = 0x11\n", 2, /expectation on a write \(outb\)/],
    ["expectation on writel", M + "0 writel 0xfee000b0 0 = 0\n", 2, /expectation on a write \(writel\)/],
    ["expectation on irq", M + "0 irq 1 1 = 1\n", 2, /expectation on a write \(irq\)/],
    ["expectation on mark", M + "0 mark x = 1\n", 2, /expectation on an op that reads nothing \(mark\)/],
    ["expectation on migrate", M + "0 migrate = 0\n", 2, /reads nothing \(migrate\)/],
    ["'= none' on a read", M + "0 inb 0x21 = none\n", 2, /'= none' is only for inta/],
    ["missing expected value", M + "0 inb 0x21 =\n", 2, /missing expected value/],
    ["two expected values", M + "0 inb 0x21 = 1 2\n", 2, /bad expected value/],
    ["expected value wider than the read", M + "0 inb 0x21 = 0x100\n", 2, /expected inb value 0x100 is too large/],
    ["inta vector above 0xff", M + "0 inta = 256\n", 2, /expected inta value 256 is too large/],
    ["mask with bits outside an 8-bit read", M + "0 inb 0x61 = 0x20/0x120\n", 2, /mask 0x120 has bits outside the inb result \(0xff\)/],
    ["mask with bits outside a 16-bit read", M + "0 inw 0x40 = 0/0x10000\n", 2, /mask 0x10000 has bits outside/],
    ["bad mask", M + "0 inb 0x61 = 0x20/\n", 2, /bad number '' for mask/],
    ["rdmsr mask above 64 bits", M + "0 rdmsr 0x1b = 0/0x10000000000000000\n", 2, /mask .* does not fit in 64 bits/],
  ];
  it.each(cases)("%s", async (_what, text, line, message) => {
    const err = await rejection(text);
    expect(err.file).toBe("t.trace");
    expect(err.line).toBe(line);
    expect(err.reason).toMatch(message);
    expect(err.message).toBe(`t.trace:${line}: ${err.reason}`);
  });

  it("rejects a line that is not UTF-8", async () => {
    const bytes = Buffer.concat([Buffer.from(M + "0 mark ok\n0 mark "), Buffer.from([0xff, 0xfe]), Buffer.from("\n")]);
    const err = await rejection(bytes);
    expect(err.line).toBe(3);
    expect(err.reason).toMatch(/not UTF-8/);
  });

  it("names the path when reading a file", async () => {
    const path = join(dir, "bad.trace");
    await writeFile(path, M + "0 migrate\n0 teleport\n");
    await expect(openTrace(path)).rejects.toMatchObject({ file: path, line: 3 });
  });

  it("reports an error found after the first chunk while iterating", async () => {
    const path = join(dir, "late-error.trace");
    const lines = [M.trim()];
    for (let i = 0; i < 100_000; i++) lines.push(`${i} inb 0x61`);
    lines.push("0 migrate");
    await writeFile(path, lines.join("\n") + "\n");
    const reader = await openTrace(path);
    let count = 0;
    const iterate = async () => {
      for await (const _ of reader) count++;
    };
    await expect(iterate()).rejects.toMatchObject({ file: path, line: 100_002, reason: expect.stringMatching(/time goes backwards/) });
    expect(count).toBeGreaterThan(0);
  });
});

describe("gzip", () => {
  it("reads a gzip file by its magic bytes, whatever its name", async () => {
    for (const name of ["example.trace.gz", "example-gz.trace"]) {
      const path = join(dir, name);
      await writeFile(path, gzipSync(SPEC_EXAMPLE));
      const zipped = await readTraceFile(path);
      const plain = await fromText(SPEC_EXAMPLE);
      expect(zipped).toEqual(plain);
    }
  });

  it("reads plain text named .gz as text", async () => {
    const path = join(dir, "plain.trace.gz");
    await writeFile(path, SPEC_EXAMPLE);
    expect((await readTraceFile(path)).events).toHaveLength(15);
  });

  it("rejects truncated gzip with the line it stopped at", async () => {
    const zipped = gzipSync(SPEC_EXAMPLE);
    const err = await rejection(zipped.subarray(0, zipped.length - 12));
    expect(err.reason).toMatch(/corrupt or truncated gzip/);
    expect(err.line).toBeGreaterThan(0);
  });

  it("rejects corrupt gzip", async () => {
    const zipped = Buffer.from(gzipSync(SPEC_EXAMPLE));
    for (let i = 12; i < zipped.length - 8; i++) zipped[i] ^= 0x5a;
    const err = await rejection(zipped);
    expect(err.reason).toMatch(/corrupt or truncated gzip/);
  });
});

describe("writing", () => {
  it("writes text and gzip that read back identically, with the header", async () => {
    const { header, events } = await fromText(SPEC_EXAMPLE);
    for (const name of ["out.trace", "out.trace.gz"]) {
      const path = join(dir, name);
      await writeTrace(path, header, events);
      const back = await readTraceFile(path);
      expect(back.header).toEqual(header);
      expect(withoutLines(back.events)).toEqual(withoutLines(events));
    }
    const raw = await readFile(join(dir, "out.trace.gz"));
    expect([raw[0], raw[1]]).toEqual([0x1f, 0x8b]);
  });

  it("writes absolute times, hex values and masks only when partial", () => {
    expect(formatEvent(makeEvent({ time: 7, op: Op.Inb, a: 0x61, check: Check.Value, value: 0x20, mask: 0x10 }))).toBe("7 inb 0x61 = 0x20/0x10");
    expect(formatEvent(makeEvent({ time: 7, op: Op.Inb, a: 0x21, check: Check.Value, value: 0xfe, mask: 0xff }))).toBe("7 inb 0x21 = 0xfe");
    expect(formatEvent(makeEvent({ time: 8, op: Op.Wrmsr, a: 0x6e0, b: 1, bHi: 0x12 }))).toBe("8 wrmsr 0x6e0 0x1200000001");
    expect(formatEvent(makeEvent({ time: 9, op: Op.Gsi, a: 20, b: 1 }))).toBe("9 gsi 20 1");
    expect(formatEvent(makeEvent({ time: 9, op: Op.Inta, check: Check.NoInterrupt }))).toBe("9 inta = none");
  });

  it("refuses an event that would not read back, naming the output line", async () => {
    const path = join(dir, "refused.trace");
    const events = [makeEvent({ time: 0, op: Op.Migrate }), makeEvent({ time: 1, op: Op.Mark, label: "two words" })];
    const headerLines = 5; // magic, !machine, !apic-bus-hz, !tsc-hz, !wire
    await expect(writeTrace(path, defaultHeader(), events)).rejects.toMatchObject({ file: path, line: headerLines + 2 });
    await expect(writeTrace(path, defaultHeader(), [makeEvent({ time: 0, op: Op.Outb, a: 0x20, b: 0x100 })])).rejects.toBeInstanceOf(TraceError);
    await expect(writeTrace(path, { ...defaultHeader(), source: "a # b" }, [])).rejects.toBeInstanceOf(TraceError);
  });
});

describe("streaming", () => {
  it("reads a million-line file event by event without holding it", async () => {
    const path = join(dir, "big.trace");
    const lines = 1_000_000;
    const out = createWriteStream(path);
    out.write("blmv-trace 1\n");
    let block = "";
    for (let i = 0; i < lines; i++) {
      block += i % 2 === 0 ? "+10 inb 0x61 = 0x20/0x30\n" : "+5 outb 0x20 0x20\n";
      if (block.length > 1 << 16) {
        if (!out.write(block)) await once(out, "drain");
        block = "";
      }
    }
    out.end(block);
    await once(out, "finish");

    const reader = await openTrace(path);
    let count = 0;
    let lastTime = -1;
    let lastLine = 0;
    for await (const e of reader) {
      count++;
      if (e.time < lastTime || e.line !== lastLine + (lastLine === 0 ? 2 : 1)) throw new Error(`event ${count} out of order`);
      lastTime = e.time;
      lastLine = e.line;
    }
    expect(count).toBe(lines);
    expect(lastTime).toBe((lines / 2) * 15);
    expect(lastLine).toBe(lines + 1);

    // Stopping early releases the file; so does closing before reading.
    for await (const e of await openTrace(path)) {
      expect(e.line).toBe(2);
      break;
    }
    await (await openTrace(path)).close();
    const compiledPath = join(dir, "big.btrace");
    expect((await compileTrace(path, compiledPath)).records).toBe(lines);
    const compiled = await readCompiledChunks(compiledPath);
    await compiled.close();
  });
});

describe("compiled traces", () => {
  it("compiles a trace whose records decode to the text events", async () => {
    const text = SPEC_EXAMPLE.replace("+100 migrate", "+1 mark tick\n+1 wrmsr 0x6e0 0xffffffff00000001\n+1 rdmsr 0x1b = 0x1fee00900/0xff00000fff\n+1 mark done\n+1 mark tick\n+100 migrate");
    const textPath = join(dir, "compile.trace");
    const binPath = join(dir, "compile.btrace");
    await writeFile(textPath, text);
    const expected = await readTraceFile(textPath);
    expect(await compileTrace(textPath, binPath)).toEqual({ records: expected.events.length, labels: 2 });

    const compiled = await readCompiledChunks(binPath, 4);
    expect(compiled.header).toEqual(expected.header);
    expect(compiled.labels).toEqual(["tick", "done"]);
    expect(compiled.recordCount).toBe(expected.events.length);
    const decoded: TraceEvent[] = [];
    for await (const chunk of compiled.chunks) {
      expect(chunk.length % RECORD_SIZE).toBe(0);
      expect(chunk.length).toBeLessThanOrEqual(4 * RECORD_SIZE);
      const view = new DataView(chunk.buffer, chunk.byteOffset, chunk.length);
      for (let at = 0; at < chunk.length; at += RECORD_SIZE) decoded.push(decodeRecord(view, at, compiled.labels));
    }
    expect(decoded).toEqual(expected.events);
    await compiled.close();
  });

  it("lays records out as documented", async () => {
    const textPath = join(dir, "layout.trace");
    const binPath = join(dir, "layout.btrace");
    await writeFile(textPath, "blmv-trace 1\n!source s\n5000000000 rdmsr 0x1b = 0x1200000034/0xff000000ff\n");
    await compileTrace(textPath, binPath);
    const bytes = await readFile(binPath);
    expect(bytes.toString("latin1", 0, 8)).toBe("BLMVBTRC");
    const recordsAt = bytes.readUInt32LE(20);
    expect(recordsAt).toBe(72);
    const r = bytes.subarray(recordsAt, recordsAt + RECORD_SIZE);
    expect([r[0], r[1], r.readUInt16LE(2), r.readUInt32LE(4), r.readUInt32LE(8)]).toEqual([Op.Rdmsr, Check.Value, 0, 3, 0x1b]);
    expect([r.readUInt32LE(16), r.readUInt32LE(20), r.readUInt32LE(24), r.readUInt32LE(28)]).toEqual([0x12, 0x34, 0xff, 0xff]);
    expect(r.readBigUInt64LE(32)).toBe(5_000_000_000n);
  });

  it("rejects a damaged compiled file", async () => {
    const textPath = join(dir, "damage.trace");
    const binPath = join(dir, "damage.btrace");
    await writeFile(textPath, SPEC_EXAMPLE);
    await compileTrace(textPath, binPath);
    const good = await readFile(binPath);
    const damaged = async (bytes: Buffer) => {
      const path = join(dir, "damaged.btrace");
      await writeFile(path, bytes);
      const compiled = await readCompiledChunks(path);
      for await (const _ of compiled.chunks);
    };
    await expect(damaged(good.subarray(0, good.length - 41))).rejects.toMatchObject({ reason: expect.stringMatching(/record count/) });
    const badMagic = Buffer.from(good);
    badMagic[0] = 0x41;
    await expect(damaged(badMagic)).rejects.toMatchObject({ reason: expect.stringMatching(/wrong magic/) });
    const badOp = Buffer.from(good);
    badOp[good.readUInt32LE(20) + 3 * RECORD_SIZE] = 99;
    await expect(damaged(badOp)).rejects.toMatchObject({ line: 7, reason: expect.stringMatching(/record 3: unknown op 99/) });
  });
});

describe("round trip property", () => {
  const u32 = fc.integer({ min: 0, max: 0xffffffff });
  const byte = fc.integer({ min: 0, max: 0xff });
  const port = fc.integer({ min: 0, max: 0xffff });
  const level = fc.integer({ min: 0, max: 1 });
  const label = fc.stringMatching(/^[A-Za-z0-9_.:-]{1,12}$/);
  /** An expectation on a read whose result has `width` set bits. */
  const expectation = (width: number) =>
    fc.oneof(
      fc.constant({}),
      fc.integer({ min: 0, max: width }).map((value) => ({ check: Check.Value, value, mask: width })),
      fc.tuple(fc.integer({ min: 0, max: width }), fc.integer({ min: 0, max: width })).map(([value, mask]) => ({ check: Check.Value, value, mask })),
    );
  const body: fc.Arbitrary<Partial<TraceEvent> & { op: TraceEvent["op"] }> = fc.oneof(
    fc.record({ op: fc.constant(Op.Outb), a: port, b: byte }),
    fc.record({ op: fc.constant(Op.Outw), a: port, b: fc.integer({ min: 0, max: 0xffff }) }),
    fc.record({ op: fc.constant(Op.Outl), a: port, b: u32 }),
    fc.tuple(port, expectation(0xff)).map(([a, x]) => ({ op: Op.Inb, a, ...x })),
    fc.tuple(port, expectation(0xffff)).map(([a, x]) => ({ op: Op.Inw, a, ...x })),
    fc.tuple(port, expectation(0xffffffff)).map(([a, x]) => ({ op: Op.Inl, a, ...x })),
    fc.record({ op: fc.constant(Op.Writel), a: u32, b: u32 }),
    fc.tuple(u32, expectation(0xffffffff)).map(([a, x]) => ({ op: Op.Readl, a, ...x })),
    fc.record({ op: fc.constant(Op.Wrmsr), a: u32, b: u32, bHi: u32 }),
    fc.record({ op: fc.constant(Op.Rdmsr), a: u32 }),
    fc.tuple(u32, u32, u32, u32, u32).map(([a, value, valueHi, mask, maskHi]) => ({ op: Op.Rdmsr, a, check: Check.Value, value, valueHi, mask, maskHi })),
    fc.record({ op: fc.constant(Op.Irq), a: fc.integer({ min: 0, max: 15 }), b: level }),
    fc.record({ op: fc.constant(Op.Gsi), a: fc.integer({ min: 0, max: 23 }), b: level }),
    expectation(0xff).map((x) => ({ op: Op.Inta, ...x })),
    fc.constant({ op: Op.Inta, check: Check.NoInterrupt }),
    fc.constant({ op: Op.Inta, check: Check.Nmi }),
    // A CPU number is taken modulo the header's CPU count below.
    fc.integer({ min: 0, max: 63 }).map((a) => ({ op: Op.Cpu, a })),
    fc.constant({ op: Op.Sipi }),
    fc.constant({ op: Op.Sipi, check: Check.NoInterrupt }),
    byte.map((value) => ({ op: Op.Sipi, check: Check.Value, value, mask: 0xff })),
    label.map((l) => ({ op: Op.Mark, label: l })),
    fc.constant({ op: Op.Migrate }),
  );
  const trace = fc.array(fc.tuple(fc.integer({ min: 0, max: 1_000_000_000 }), body), { maxLength: 40 }).map((steps) => {
    let time = 0;
    return steps.map(([delta, fields]) => makeEvent({ ...fields, time: (time += delta) }));
  });
  const header: fc.Arbitrary<TraceHeader> = fc.record(
    {
      machine: fc.record({ pic: fc.boolean(), pit: fc.boolean(), lapic: fc.boolean(), ioapic: fc.boolean() }),
      apicBusHz: fc.integer({ min: 1, max: MAX_CLOCK_HZ }),
      tscHz: fc.integer({ min: 1, max: MAX_CLOCK_HZ }),
      pitIrq0: fc.boolean(),
      source: fc.stringMatching(/^[A-Za-z0-9][ A-Za-z0-9:,.()/-]{0,30}[A-Za-z0-9]$/),
      compatQemu: fc.boolean(),
      cpus: fc.integer({ min: 1, max: 64 }),
    },
    { requiredKeys: ["machine", "apicBusHz", "tscHz", "pitIrq0", "compatQemu", "cpus"] },
  ).map((h) => (h.machine.lapic ? h : { ...h, cpus: 1 }));

  it("random valid events survive write, read and compile", async () => {
    let run = 0;
    await fc.assert(
      fc.asyncProperty(header, trace, async (h, generated) => {
        const events = generated.map((e) => (e.op === Op.Cpu ? { ...e, a: e.a % h.cpus } : e));
        const textPath = join(dir, `prop-${run}.trace`);
        const binPath = join(dir, `prop-${run++}.btrace`);
        await writeTrace(textPath, h, events);
        const back = await readTraceFile(textPath);
        expect(back.header).toEqual(h);
        expect(withoutLines(back.events)).toEqual(events);
        await compileTrace(textPath, binPath);
        const compiled = await readCompiledChunks(binPath, 7);
        const decoded: TraceEvent[] = [];
        for await (const chunk of compiled.chunks) {
          const view = new DataView(chunk.buffer, chunk.byteOffset, chunk.length);
          for (let at = 0; at < chunk.length; at += RECORD_SIZE) decoded.push(decodeRecord(view, at, compiled.labels));
        }
        expect(decoded).toEqual(back.events);
      }),
      { numRuns: 60 },
    );
  });
});
