// The QEMU importer on multi-CPU logs: which CPU each line belongs to (docs/traces.md, "Which
// CPU a line belongs to"), and the real two-CPU boot imported and replayed against the model.

import { existsSync } from "node:fs";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { formatEvent } from "../src/trace/writer.js";
import { readTraceFile } from "../src/trace/reader.js";
import { parseLogLine } from "../src/trace/qemu/log.js";
import { QemuLogConverter } from "../src/trace/qemu/convert.js";
import { importQemuLog, type ImportSummary } from "../src/trace/qemu/import.js";
import { replayEvents } from "../src/trace/replay.js";
import { POLICIES } from "../src/core/machine.js";
import type { TraceEvent, TraceHeader } from "../src/trace/event.js";

const SMP2_LOG = join(import.meta.dirname, "..", "traces", "qemu", "logs", "raw", "linux-pc-apic-smp2.log.gz");

/** Runs untimed log lines of a `cpus`-CPU log through the converter; events as trace text. */
function convert(lines: string[], cpus: number) {
  const converter = new QemuLogConverter(false, cpus);
  lines.forEach((text, i) => converter.feed(parseLogLine(text), i + 1, text));
  converter.finish();
  return { text: converter.take().map(formatEvent), counts: converter.counts };
}

const apicWrite = (cpu: number, offset: number, value: number) =>
  `memory_region_ops_write cpu ${cpu} mr 0x56437fb0cde0 addr 0x${(0xfee00000 + offset).toString(16)} value 0x${value.toString(16)} size 4 name 'apic-msi'`;
const apicRead = (cpu: number, offset: number, value: number) =>
  `memory_region_ops_read cpu ${cpu} mr 0x56437fb0cde0 addr 0x${(0xfee00000 + offset).toString(16)} value 0x${value.toString(16)} size 4 name 'apic-msi'`;
const servicing = (vector: number) => `Servicing hardware INT=0x${vector.toString(16)}`;
const handlerEntry = (vector: number) => `   622: v=${vector.toString(16)} e=0000 i=0 cpl=0 IP=0010:ffffffffa3a592eb pc=ffffffffa3a592eb SP=0018:ffffffffa4a03e98 env->regs[R_EAX]=0000000000000000`;
const EOI = 0xb0;
const LDR = 0xd0;
// A fixed IPI with logical destination (ICR 0x8fb: vector 0xfb, bit 11 logical), as Linux sends it.
const ipiTo = (from: number, logicalDest: number) => [apicWrite(from, 0x310, logicalDest << 24), apicWrite(from, 0x300, 0x8fb)];
const flatLdrs = [apicWrite(0, LDR, 0x1000000), apicWrite(1, LDR, 0x2000000)];

describe("which CPU a line of a multi-CPU log belongs to", () => {
  it("gives each access the CPU it names, with a cpu event where the CPU changes", () => {
    const { text } = convert([apicRead(0, 0x20, 0), apicRead(1, 0x20, 0x1000000), apicWrite(1, EOI, 0), apicWrite(0, EOI, 0)], 2);
    expect(text).toEqual(["1 readl 0xfee00020 = 0x0", "2 cpu 1", "2 readl 0xfee00020 = 0x1000000", "3 writel 0xfee000b0 0x0", "4 cpu 0", "4 writel 0xfee000b0 0x0"]);
  });

  it("gives an accepted interrupt to the one CPU that asked for its vector, even when another CPU runs next", () => {
    // CPU 0 sends 0xfb to CPU 1 (logical 0x02); CPU 1 takes it, but CPU 0 makes the next access.
    const { text, counts } = convert([...flatLdrs, ...ipiTo(0, 0x02), servicing(0xfb), handlerEntry(0xfb), apicRead(0, 0x20, 0)], 2);
    expect(text.slice(-4)).toEqual(["4 cpu 1", "4 inta = 0xfb", "5 cpu 0", "5 readl 0xfee00020 = 0x0"]);
    expect(counts.interruptsByRule).toEqual({ "the one CPU that asked for the vector, not the next to access a device": 1 });
  });

  it("follows I/O APIC messages to their logical destination and lowest priority to the first CPU of the set", () => {
    const message = (dest: number, mode: number, vector: number) => `apic_deliver_irq dest ${dest} dest_mode 1 delivery_mode ${mode} vector ${vector} trigger_mode 0`;
    const lines = [...flatLdrs, apicRead(0, 0x20, 0), message(2, 0, 0x23), servicing(0x23), message(3, 1, 0x24), servicing(0x24), apicWrite(1, EOI, 0)];
    const { text } = convert(lines, 2);
    expect(text.slice(-6)).toEqual(["3 cpu 1", "3 inta = 0x23", "3 cpu 0", "3 inta = 0x24", "4 cpu 1", "4 writel 0xfee000b0 0x0"]);
  });

  it("takes the CPU that runs next when several CPUs asked for the vector (a documented choice), and counts it", () => {
    const lines = [...flatLdrs, ...ipiTo(0, 0x03), servicing(0xfb), apicWrite(1, EOI, 0), servicing(0xfb), apicWrite(0, EOI, 0)];
    const { text, counts } = convert(lines, 2);
    expect(text.slice(-6)).toEqual(["4 cpu 1", "4 inta = 0xfb", "5 writel 0xfee000b0 0x0", "5 cpu 0", "5 inta = 0xfb", "6 writel 0xfee000b0 0x0"]);
    // The first acceptance had two candidates; the second, CPU 1 having taken its 0xfb, only CPU 0.
    expect(counts.interruptsByRule).toEqual({
      "several CPUs asked for the vector: the next CPU to access a device": 1,
      "the one CPU that asked for the vector, the next to access a device": 1,
    });
  });

  it("gives an interrupt nobody asked for (ExtINT from the PIC) to the CPU that runs next, or the last one at the end of the log", () => {
    const { text, counts } = convert([apicRead(1, 0x20, 0x1000000), servicing(0x30), apicRead(0, 0x20, 0), servicing(0x31)], 2);
    expect(text).toEqual(["1 cpu 1", "1 readl 0xfee00020 = 0x1000000", "1 cpu 0", "1 inta = 0x30", "2 readl 0xfee00020 = 0x0", "2 inta = 0x31"]);
    expect(counts.interruptsByRule).toEqual({ "no CPU asked for the vector: the next CPU to access a device": 2 });
  });

  it("gives a timer expiry to the CPU whose armed timer comes first, and its vector to that CPU", () => {
    // CPU 1 arms a one-shot timer (vector 0xec, divide by 16) before CPU 0 arms a later one.
    const arm = (cpu: number, count: number) => [apicWrite(cpu, 0x320, 0xec), apicWrite(cpu, 0x3e0, 3), apicWrite(cpu, 0x380, count)];
    const lines = [...arm(1, 100), ...arm(0, 1000), "apic_local_deliver vector 0 delivery mode 0", servicing(0xec), apicWrite(0, EOI, 0)];
    const { text } = convert(lines, 2);
    // CPU 1's timer, loaded at 3, expires at 3 + (100 + 1) × 16 = 1619; the clock moves one divided period past it.
    expect(text.slice(-4)).toEqual(["1635 cpu 1", "1635 inta = 0xec", "1636 cpu 0", "1636 writel 0xfee000b0 0x0"]);
  });

  it("replays CPU 0's IA32_APIC_BASE reads and leaves out an AP's, which QEMU also makes at its resets and INITs", () => {
    const { text, counts } = convert(["cpu_get_apic_base 0x00000000fee00900", "cpu_get_apic_base 0x00000000fee00800", apicRead(0, 0x20, 0)], 2);
    expect(text).toEqual(["0 rdmsr 0x1b = 0xfee00900", "1 readl 0xfee00020 = 0x0"]);
    expect(counts.apicBaseApReads).toBe(1);
  });
});

describe("the two-CPU Linux boot (linux-pc-apic-smp2)", () => {
  let dir: string;
  let summary: ImportSummary;
  let header: TraceHeader;
  let events: TraceEvent[];
  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), "blmv-qemu-smp-"));
    const out = join(dir, "smp2.trace.gz");
    summary = await importQemuLog(SMP2_LOG, out);
    ({ header, events } = await readTraceFile(out));
  });
  afterAll(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it("imports as a two-CPU trace that checks every read whose value does not depend on time", () => {
    expect(header.cpus).toBe(2);
    expect(summary).toMatchObject({ timing: "synthetic", cpus: 2, unknownLines: 0, lapicExpiriesUnpredicted: 0 });
    expect(summary.eventsByOp["cpu"]).toBeGreaterThan(100);
    // Unchecked: only the PIT counts and local APIC current counts; masked: only port 0x61's OUT2 bit.
    expect(Object.keys(summary.uncheckedByReason).sort()).toEqual(["PIT count: a raw log has no time", "local APIC current count: a raw log has no time"]);
    expect(Object.keys(summary.maskedByReason)).toEqual(["port 0x61 OUT2 bit: a raw log has no time"]);
    expect(summary.readsChecked + summary.readsMasked + summary.readsUnchecked).toBe(summary.reads);
  });

  it.each(POLICIES)("replays with zero mismatches (policy %s)", async (policy) => {
    const report = await replayEvents(header, events, { policy });
    expect(report.mismatches).toEqual([]);
    expect(report.checked).toBe(summary.readsChecked + summary.readsMasked + summary.intas);
  });

  it.each(["blmvisor", "full"] as const)("replays with zero mismatches with a migration every 500 events (policy %s)", async (policy) => {
    const report = await replayEvents(header, events, { policy, every: 500, keepMismatches: 1000 });
    expect(report.migrations.count).toBe(Math.floor(events.length / 500));
    expect(report.mismatches).toEqual([]);
  });
});

describe("multi-CPU logs the importer refuses", () => {
  let dir: string;
  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), "blmv-qemu-smp-bad-"));
  });
  afterAll(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it("names the line of an access by a CPU the board cannot have, and writes no trace", async () => {
    const log = join(dir, "cpu64.log");
    await writeFile(log, [apicRead(0, 0x20, 0), apicRead(64, 0x20, 0x40000000)].join("\n"));
    const out = join(dir, "cpu64.trace");
    await expect(importQemuLog(log, out)).rejects.toThrow(/^line 2: access by cpu 64; a board has at most 64 CPUs$/);
    expect(existsSync(out)).toBe(false);
  });
});
