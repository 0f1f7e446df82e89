// The trace format's "Several CPUs" section: `!cpus`, `cpu`, `sipi`, `inta = nmi`, read,
// written, compiled, recorded and replayed, with the contract's errors and mismatches.

import { mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Readable } from "node:stream";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { Check, Op, sameEvent, sameHeader } from "../src/trace/event.js";
import { TraceError, readTraceFile } from "../src/trace/reader.js";
import { writeTrace } from "../src/trace/writer.js";
import { HEADER_SIZE, HeaderField, RECORD_SIZE, compileTrace, readCompiledChunks } from "../src/trace/compiled.js";
import { replayCompiled, replayEvents } from "../src/trace/replay.js";
import { RecordingMachine } from "../src/trace/recorder.js";
import { POLICIES } from "../src/core/machine.js";

const SCENARIO = join(import.meta.dirname, "..", "traces", "scenarios", "smp-four-cpus.trace");

let dir: string;
beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), "blmv-smp-"));
});
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

const read = (text: string) => readTraceFile(Readable.from([text]), { name: "t.trace" });

async function rejects(text: string, pattern: RegExp, line: number): Promise<void> {
  const error = await read(text).then(
    () => null,
    (e: unknown) => e,
  );
  expect(error).toBeInstanceOf(TraceError);
  expect((error as TraceError).message).toMatch(pattern);
  expect((error as TraceError).line).toBe(line);
}

describe("trace format: several CPUs", () => {
  it("reads !cpus, cpu, sipi and inta = nmi", async () => {
    const { header, events } = await read("blmv-trace 1\n!cpus 3\n0 cpu 2\n1 sipi = none\n2 sipi = 0x9a\n3 sipi\n4 inta = nmi\n");
    expect(header.cpus).toBe(3);
    expect(events.map((e) => [e.op, e.a, e.check, e.value])).toEqual([
      [Op.Cpu, 2, Check.None, 0],
      [Op.Sipi, 0, Check.NoInterrupt, 0],
      [Op.Sipi, 0, Check.Value, 0x9a],
      [Op.Sipi, 0, Check.None, 0],
      [Op.Inta, 0, Check.Nmi, 0],
    ]);
  });

  it("rejects !cpus out of range or without local APICs, and a cpu the board lacks, with file and line", async () => {
    await rejects("blmv-trace 1\n!cpus 65\n", /t\.trace:2: !cpus 65 is too large \(max 64\)/, 2);
    await rejects("blmv-trace 1\n!cpus 0\n", /!cpus must be 1 to 64/, 2);
    await rejects("blmv-trace 1\n!machine lapic=off\n!cpus 2\n", /!cpus 2 needs lapic=on/, 3);
    await rejects("blmv-trace 1\n!cpus 2\n!machine lapic=off\n", /!cpus 2 needs lapic=on/, 3);
    await rejects("blmv-trace 1\n!cpus 4\n0 cpu 4\n", /t\.trace:3: cpu 4: the board has CPUs 0\.\.3 \(!cpus 4\)/, 3);
    await rejects("blmv-trace 1\n0 cpu 1\n", /cpu 1: the board has one CPU/, 2);
    await rejects("blmv-trace 1\n0 cpu\n", /cpu takes K/, 2);
    await rejects("blmv-trace 1\n0 inb 0x21 = nmi\n", /'= nmi' is only for inta/, 2);
    await rejects("blmv-trace 1\n0 sipi = 0x100\n", /too large/, 2);
    await rejects("blmv-trace 1\n0 cpu 0 = 1\n", /expectation on/, 2);
  });

  it("writes what it reads, and compiles it to the same events and header", async () => {
    const { header, events } = await readTraceFile(SCENARIO);
    const written = join(dir, "w.trace");
    await writeTrace(written, header, events);
    const back = await readTraceFile(written);
    expect(sameHeader(back.header, header)).toBe(true);
    expect(back.events.every((e, i) => sameEvent(e, events[i]))).toBe(true);
    const compiled = join(dir, "w.btrace");
    await compileTrace(SCENARIO, compiled);
    const c = await readCompiledChunks(compiled);
    expect(c.header.cpus).toBe(4);
    for await (const _ of c.chunks);
  });

  it("rejects a compiled record naming a CPU the board lacks", async () => {
    const compiled = join(dir, "bad.btrace");
    await compileTrace(SCENARIO, compiled);
    const bytes = await readFile(compiled);
    const first = bytes.readUInt32LE(HeaderField.RecordsOffset);
    const { events } = await readTraceFile(SCENARIO);
    const at = first + events.findIndex((e) => e.op === Op.Cpu) * RECORD_SIZE;
    bytes.writeUInt32LE(4, at + 8);
    await writeFile(compiled, bytes);
    const c = await readCompiledChunks(compiled);
    await expect((async () => { for await (const _ of c.chunks); })()).rejects.toThrow(/cpu 4: the board has CPUs 0..3 \(!cpus 4\)/);
    expect(HEADER_SIZE).toBe(64);
  });

  it.each(POLICIES)("the hand-written four-CPU scenario replays with zero mismatches, text and compiled (policy %s)", async (policy) => {
    const { header, events } = await readTraceFile(SCENARIO);
    const text = await replayEvents(header, events, { policy });
    expect(text.mismatches).toEqual([]);
    expect(text.checked).toBeGreaterThan(50);
    const compiled = join(dir, `${policy}.btrace`);
    await compileTrace(SCENARIO, compiled);
    const fast = await replayCompiled(compiled, { policy });
    expect(fast.mismatches).toEqual([]);
    expect([fast.events, fast.reads, fast.checked, fast.interrupts]).toEqual([text.events, text.reads, text.checked, text.interrupts]);
    expect(fast.exits.byCpu).toEqual(text.exits.byCpu);
    if (policy !== "none") expect(text.exits.byReason["init-signal"]).toBeGreaterThan(0);
  });

  it("an event performed by a CPU still waiting for a start-up IPI is a mismatch, in either replay", async () => {
    const trace = "blmv-trace 1\n!cpus 2\n0 cpu 1\n1 readl 0xfee00020 = 0x01000000\n2 inta = none\n3 sipi = 0x10\n";
    const { header, events } = await read(trace);
    const text = await replayEvents(header, events);
    const path = join(dir, "waiting.trace");
    await writeFile(path, trace);
    const compiled = join(dir, "waiting.btrace");
    await compileTrace(path, compiled);
    const fast = await replayCompiled(compiled);
    for (const r of [text, fast]) {
      expect(r.mismatches.map((m) => [m.line, m.op, m.expected, m.actual])).toEqual([
        [4, "readl", "cpu 1 running", "cpu 1 waiting for a start-up IPI"],
        [6, "sipi", "0x10", "none"],
      ]);
    }
  });

  it("records several CPUs, NMIs and start-ups as a trace that replays with zero mismatches", async () => {
    const rec = new RecordingMachine({ cpus: 2, pic: false, pit: false, pitIrq0: false }, "recorder test");
    rec.writel(0xfee00310, 0x01000000);
    rec.writel(0xfee00300, 0xc500);
    rec.writel(0xfee00300, 0x0612);
    rec.selectCpu(1);
    expect(rec.sipi()).toBe(0x12);
    rec.writel(0xfee00310, 0);
    rec.writel(0xfee00300, 0x400);
    rec.selectCpu(0);
    expect(rec.inta()).toBe(256);
    rec.inta();
    const path = join(dir, "rec.trace");
    await writeTrace(path, rec.header, rec.events);
    const { header, events } = await readTraceFile(path);
    expect(header.cpus).toBe(2);
    const r = await replayEvents(header, events);
    expect(r.mismatchCount).toBe(0);
    expect(r.checked).toBe(3);
  });
});
