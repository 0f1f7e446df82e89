import { existsSync } from "node:fs";
import { mkdtemp, readFile, readdir, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { gzipSync } from "node:zlib";
import fc from "fast-check";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { Check, Op, defaultHeader } from "../src/trace/event.js";
import { formatEvent } from "../src/trace/writer.js";
import { readTraceFile } from "../src/trace/reader.js";
import { parseLogLine } from "../src/trace/qemu/log.js";
import { QemuLogConverter } from "../src/trace/qemu/convert.js";
import { ClockConflictError, CorruptLogError, MultiCpuLogError, NotQemuLogError, formatImportSummary, importQemuLog } from "../src/trace/qemu/import.js";
import { replayEvents } from "../src/trace/replay.js";
import { POLICIES } from "../src/core/machine.js";
import { runCli } from "./migrate-harness.js";

const FIXTURE = join(import.meta.dirname, "fixtures", "linux-pc-noapic.timed.head.log.gz");
const QEMU_TRACES = join(import.meta.dirname, "..", "traces", "qemu");

let dir: string;
beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), "blmv-qemu-import-"));
});
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

/** Runs log lines through the converter; events as trace text. */
function convert(lines: string[], timed: boolean) {
  const converter = new QemuLogConverter(timed);
  lines.forEach((text, i) => converter.feed(parseLogLine(text), i + 1, text));
  converter.finish();
  const events = converter.take();
  return { events, text: events.map(formatEvent), counts: converter.counts, clock: converter.clock.counts };
}

// Real lines (QEMU 7.2, linux-pc-noapic / linux-pc-apic / bios-pc logs); the `mr` pointers are host addresses.
const pio = (icount: number) => `iotime: icount=${icount} cpu=0 pc=0xffffffff95437e04 pio-insn`;
const mmio = (icount: number, rw: "r" | "w", pa: number) => `iotime: icount=${icount} cpu=0 pc=0xffffffff94075a22 mmio-${rw} pa=0x${pa.toString(16)} size=4`;
const hlt = (icount: number) => `iotime: icount=${icount} cpu=0 pc=0xffffffff95e592ea hlt`;
const portWrite = (port: number, value: number, region: string) =>
  `memory_region_ops_write cpu 0 mr 0x55fa453938b0 addr 0x${port.toString(16)} value 0x${value.toString(16)} size 1 name '${region}'`;
const portRead = (port: number, value: number, region: string) =>
  `memory_region_ops_read cpu 0 mr 0x55fa453938b0 addr 0x${port.toString(16)} value 0x${value.toString(16)} size 1 name '${region}'`;
const apicWrite = (offset: number, value: number) =>
  `memory_region_ops_write cpu 0 mr 0x5568ce7d2de0 addr 0x${(0xfee00000 + offset).toString(16)} value 0x${value.toString(16)} size 4 name 'apic-msi'`;
const gsi = (n: number, level: 0 | 1) => `x86_gsi_interrupt GSI interrupt #${n} level:${level}`;
// `-d int` page faults (linux-pc-apic): a user-mode instruction fetch (error code bit 4) and a kernel write.
const fetchFault = "   395: v=0e e=0014 i=0 cpl=3 IP=0033:000000000040ebf0 pc=000000000040ebf0 SP=002b:00007ffee363f950 CR2=000000000040ebf0";
const dataFault = "     3: v=0e e=0002 i=0 cpl=0 IP=0010:ffffffff949f69d2 pc=ffffffff949f69d2 SP=0000:ffffffff95a03d38 CR2=ffff8eb948c01000";
const pageFault = (entry: string) => ["check_exception old: 0xffffffff new 0xe", entry, "RAX=0000000000000000 RBX=0000000000000000 RCX=000000000000003f RDX=0000000000008c01"];
// PIT channel 0 in mode 2 with count 4773 (linux-pc-apic), then the CPU halts.
const pitRateThenHlt = [
  pio(4613773990),
  portWrite(0x43, 0x34, "pit"),
  pio(4613773995),
  portWrite(0x40, 0xa5, "pit"),
  pio(4613774000),
  portWrite(0x40, 0x12, "pit"),
  gsi(0, 0),
  hlt(4613780000),
];
const hpetWrite = (offset: number, value: number) =>
  `memory_region_ops_write cpu 0 mr 0x555efb4b4350 addr 0x${(0xfed00000 + offset).toString(16)} value 0x${value.toString(16)} size 4 name 'hpet'`;

describe("QEMU log line parser", () => {
  it("reads a port write and a read with the value returned", () => {
    expect(parseLogLine("memory_region_ops_write cpu 0 mr 0x55838044f0e0 addr 0x20 value 0x11 size 1 name 'pic'")).toEqual({
      kind: "access", write: true, cpu: 0, addr: 0x20, value: 0x11, size: 1, region: "pic",
    });
    expect(parseLogLine("memory_region_ops_read cpu 0 mr 0x55fa453938b0 addr 0x42 value 0x5e size 1 name 'pit'")).toMatchObject({ write: false, addr: 0x42, value: 0x5e });
  });

  it("reads MMIO accesses, machine-setup accesses and cuts over-wide values to the access size", () => {
    expect(parseLogLine("memory_region_ops_write cpu -1 mr 0x5583803429e0 addr 0xfee00000 value 0x0 size 4 name 'apic-msi'")).toMatchObject({ cpu: -1, addr: 0xfee00000, size: 4 });
    expect(parseLogLine("memory_region_ops_read cpu 0 mr 0x55 addr 0xfed000f0 value 0x1234567890abcdef size 4 name 'hpet'")).toMatchObject({ value: 0x90abcdef });
    expect(parseLogLine("memory_region_ops_read cpu 0 mr 0x55 addr 0x61 value 0x1ff size 1 name 'pcspk'")).toMatchObject({ value: 0xff });
  });

  it("reads iotime lines of each instruction kind", () => {
    expect(parseLogLine("iotime: icount=4617414995 cpu=0 pc=0xffffffff95437e04 pio-insn")).toEqual({ kind: "iotime", icount: 4617414995, cpu: 0, insn: "pio-insn", pa: 0 });
    expect(parseLogLine("iotime: icount=428783 cpu=0 pc=0xee295 mmio-r pa=0xfee000f0 size=4")).toEqual({ kind: "iotime", icount: 428783, cpu: 0, insn: "mmio-r", pa: 0xfee000f0 });
    expect(parseLogLine("iotime: icount=5644617000 cpu=0 pc=0xffffffff94a592ea hlt")).toMatchObject({ insn: "hlt", icount: 5644617000 });
  });

  it("reads GSI changes, interrupt acceptance, LVT deliveries and IA32_APIC_BASE", () => {
    expect(parseLogLine("x86_gsi_interrupt GSI interrupt #0 level:1")).toEqual({ kind: "gsi", gsi: 0, level: 1 });
    expect(parseLogLine("Servicing hardware INT=0x30")).toEqual({ kind: "interrupt", vector: 0x30 });
    expect(parseLogLine("apic_local_deliver vector 0 delivery mode 0")).toEqual({ kind: "lvt", lvt: 0 });
    expect(parseLogLine("cpu_get_apic_base 0x00000000fee00900")).toEqual({ kind: "apic-base", write: false, lo: 0xfee00900, hi: 0 });
    expect(parseLogLine("check_exception old: 0xffffffff new 0xe")).toEqual({ kind: "exception", vector: 14 });
  });

  it("reads the -d int handler entry: vector, error code and whether an INT instruction raised it", () => {
    expect(parseLogLine(fetchFault)).toEqual({ kind: "handler-entry", vector: 14, errorCode: 0x14, software: false });
    expect(parseLogLine(dataFault)).toEqual({ kind: "handler-entry", vector: 14, errorCode: 0x2, software: false });
    expect(parseLogLine("     5: v=30 e=0000 i=0 cpl=0 IP=0010:ffffffff95df9807 pc=ffffffff95df9807 SP=0000:ffffffff96e03e00 env->regs[R_EAX]=0000000000000008")).toEqual({
      kind: "handler-entry", vector: 0x30, errorCode: 0, software: false,
    });
    expect(parseLogLine("   12: v=80 e=0000 i=1 cpl=3 IP=0033:0000000000401000 pc=0000000000401000 SP=002b:00007ffee363f950 env->regs[R_EAX]=0000000000000001")).toMatchObject({ vector: 0x80, software: true });
  });

  it("classifies restating trace points, -d int dumps and anything else", () => {
    expect(parseLogLine("pic_ioport_write master 1 addr 0x0 val 0x11")).toEqual({ kind: "detail", event: "pic_ioport_write" });
    expect(parseLogLine("ioapic_mem_read ioapic mem read addr 0x10 regsel: 0x10 size 0x4 retval 0x10000")).toMatchObject({ kind: "detail" });
    expect(parseLogLine("apic_deliver_irq dest 1 dest_mode 1 delivery_mode 0 vector 48 trigger_mode 0")).toEqual({ kind: "apic-message", dest: 1, logical: true, deliveryMode: 0, vector: 48 });
    for (const dump of [
      "R8 =ffffffff96e03e48 R9 =0000000000000001 R10=0000000000000001 R11=ffffffff96ed4448",
      "CS =0010 0000000000000000 ffffffff 00af9b00 DPL=0 CS64 [-RA]",
      "SMM: enter",
    ]) {
      expect(parseLogLine(dump)).toEqual({ kind: "cpu-dump" });
    }
    expect(parseLogLine("memory_region_ops_write cpu 0 mr 0x55 addr 0x20 value")).toEqual({ kind: "unknown" });
    expect(parseLogLine("qemu-system-x86_64: terminating on signal 15")).toEqual({ kind: "unknown" });
    expect(parseLogLine("")).toEqual({ kind: "blank" });
  });
});

describe("time from iotime lines", () => {
  it("times a port access by the pio-insn line before it", () => {
    const { text } = convert(
      [pio(4617414995), "pic_ioport_read master 1 addr 0x1 val 0xfa", portRead(0x21, 0xfa, "pic"), pio(4617414997), portWrite(0x21, 0xfb, "pic"), "pic_ioport_write master 1 addr 0x1 val 0xfb"],
      true,
    );
    expect(text).toEqual(["4617414995 inb 0x21 = 0xfa", "4617414997 outb 0x21 0xfb"]);
  });

  it("times an MMIO access by the mmio line after it, and its consequences with it", () => {
    const { text } = convert([pio(4617558000), apicWrite(0xb0, 0), "apic_mem_writel 0xb0 = 0x00000000", gsi(9, 1), mmio(4617559083, "w", 0xfee000b0)], true);
    expect(text).toEqual(["4617559083 writel 0xfee000b0 0x0", "4617559083 irq 9 1"]);
  });

  it("takes one instruction off for each data-access page fault, which the plugin counts twice", () => {
    const { text, clock } = convert([pio(1000), portWrite(0x21, 0xfb, "pic"), ...pageFault(dataFault), pio(1010), portWrite(0x21, 0xfa, "pic")], true);
    expect(text).toEqual(["1000 outb 0x21 0xfb", "1009 outb 0x21 0xfa"]);
    expect(clock).toMatchObject({ pageFaults: 1, fetchFaults: 0 });
  });

  it("takes nothing off for an instruction-fetch page fault, raised before the plugin counts the instruction", () => {
    const { text, clock } = convert([pio(1000), portWrite(0x21, 0xfb, "pic"), ...pageFault(fetchFault), pio(1001), portWrite(0x21, 0xfa, "pic")], true);
    expect(text).toEqual(["1000 outb 0x21 0xfb", "1001 outb 0x21 0xfa"]);
    expect(clock).toMatchObject({ pageFaults: 0, fetchFaults: 1, conflicts: 0 });
  });

  it("keeps exact expectations on PIT counts read in the same time frame as the count was written", () => {
    const { events, counts } = convert([pio(100), portWrite(0x43, 0xb0, "pit"), pio(110), portWrite(0x42, 0xff, "pit"), pio(120), portWrite(0x42, 0xff, "pit"), pio(5000), portRead(0x42, 0xfb, "pit")], true);
    expect(events.at(-1)).toMatchObject({ op: Op.Inb, check: Check.Value, value: 0xfb, mask: 0xff, time: 5000 });
    expect(counts.readsChecked).toBe(1);
  });

  // From linux-pc-noapic: the tickless PIT in mode 4 (one-shot) wakes a HLT.
  const pitWake = [
    pio(5994319600),
    portWrite(0x43, 0x38, "pit"),
    pio(5994319647),
    portWrite(0x40, 0xff, "pit"),
    pio(5994319662),
    portWrite(0x40, 0x7f, "pit"),
    gsi(0, 0),
    "pic_set_irq master 1 irq 0 level 0",
    hlt(5994319825),
    gsi(0, 0),
    gsi(0, 1),
    "pic_update_irq master 1 imr 232 irr 1 padd 0",
    "x86_pic_interrupt PIC interrupt #0 level:1",
    "apic_local_deliver vector 3 delivery mode 7",
    "pic_interrupt irq 0 intno 48",
    "Servicing hardware INT=0x30",
    gsi(0, 1),
    gsi(0, 0),
    pio(5994320806),
    "pic_ioport_read master 1 addr 0x1 val 0xe8",
    portRead(0x21, 0xe8, "pic"),
  ];

  it("resynchronises after a HLT woken by a PIT deadline computed with QEMU's formula", () => {
    const { text, clock, counts } = convert(pitWake, true);
    // Count 0x7fff loaded at 5994319662: OUT0 is re-evaluated at load + floor(32767e9 / 1193182)
    // (still 0 there), rises 1 ns later (PIT clock 32767 reached), and the timer fires twice more.
    expect(text.slice(3)).toEqual([
      "5994319662 irq 0 0",
      "6021781524 irq 0 0",
      "6021781525 irq 0 1",
      "6021781525 inta = 0x30",
      "6021782362 irq 0 1",
      "6021782363 irq 0 0",
      // 980 instructions after the one following the HLT.
      "6021782505 inb 0x21 = 0xe8",
    ]);
    expect(clock).toMatchObject({ hlts: 1, resyncs: 1, unexplainedWakes: 0, conflicts: 0 });
    expect(counts.pitSignalsTimed).toBe(5);
    expect(counts.irq0Unpredicted).toBe(0);
  });

  it("resynchronises after a HLT woken by the local APIC timer", () => {
    const { text, clock, counts } = convert(
      [
        pio(6125300000),
        apicWrite(0x3e0, 0x3),
        mmio(6125300010, "w", 0xfee003e0),
        apicWrite(0x320, 0xec),
        mmio(6125300020, "w", 0xfee00320),
        apicWrite(0x380, 0xc22),
        "apic_mem_writel 0x380 = 0x00000c22",
        mmio(6125315796, "w", 0xfee00380),
        hlt(6125317896),
        "apic_local_deliver vector 0 delivery mode 0",
        "apic_report_irq_delivered coalescing 636",
        "Servicing hardware INT=0xec",
        apicWrite(0xb0, 0),
        mmio(6125318130, "w", 0xfee000b0),
      ],
      true,
    );
    // Divide by 16, one-shot: QEMU's expiry is load + (initial count + 1) * 16.
    expect(text.slice(-2)).toEqual(["6125365508 inta = 0xec", "6125365741 writel 0xfee000b0 0x0"]);
    expect(clock.resyncs).toBe(1);
    expect(counts.lapicExpiries).toBe(1);
  });

  it("resynchronises after a HLT woken by a PIT tick that the I/O APIC delivers as an MSI", () => {
    const { text, clock } = convert(
      [
        ...pitRateThenHlt,
        gsi(0, 1),
        "ioapic_set_irq vector: 0 level: 1",
        "memory_region_ops_write cpu 0 mr 0x5568ce7d2de0 addr 0xfee01004 value 0x30 size 4 name 'apic-msi'",
        "apic_deliver_irq dest 1 dest_mode 1 delivery_mode 0 vector 48 trigger_mode 0",
        "Servicing hardware INT=0x30",
        apicWrite(0xb0, 0),
        mmio(4613780400, "w", 0xfee000b0),
      ],
      true,
    );
    // Mode 2, count 4773: QEMU raises OUT0 when the timer set for PIT clock 4774 finds clock 4773.
    expect(text.slice(-3)).toEqual(["4617775066 irq 0 1", "4617775066 inta = 0x30", "4617775465 writel 0xfee000b0 0x0"]);
    expect(clock).toMatchObject({ resyncs: 1, unexplainedWakes: 0 });
  });

  it("treats an MSI that follows no line change as a wake-up of unknown time", () => {
    const { clock } = convert([pio(100), hlt(200), "memory_region_ops_write cpu 0 mr 0x55 addr 0xfee01004 value 0x41 size 4 name 'apic-msi'", "Servicing hardware INT=0x41", pio(300)], true);
    expect(clock).toMatchObject({ resyncs: 0, unexplainedWakes: 1 });
  });

  it("after a HLT woken by a line of unknown time, leaves reads that depend on earlier time bases unchecked or masked", () => {
    const { events, counts, clock } = convert(
      [
        pio(100),
        portWrite(0x43, 0xb0, "pit"),
        pio(110),
        portWrite(0x42, 0xff, "pit"),
        pio(120),
        portWrite(0x42, 0xff, "pit"),
        hlt(200),
        gsi(4, 1),
        "Servicing hardware INT=0x24",
        pio(300),
        portRead(0x42, 0x12, "pit"),
        pio(301),
        portRead(0x61, 0x30, "pcspk"),
        pio(302),
        portWrite(0x43, 0xe8, "pit"), // read-back: status of channel 2
        pio(303),
        portRead(0x42, 0xb0, "pit"),
        pio(400),
        portWrite(0x42, 0x10, "pit"), // reloading channel 2 makes its count exact again
        pio(410),
        portWrite(0x42, 0x00, "pit"),
        pio(500),
        portRead(0x42, 0x34, "pit"),
      ],
      true,
    );
    const reads = events.filter((e) => e.op === Op.Inb);
    expect(reads.map((e) => [e.check, e.value, e.mask])).toEqual([
      [Check.None, 0, 0],
      [Check.Value, 0x10, 0xdf],
      [Check.Value, 0x30, 0x7f],
      [Check.Value, 0x34, 0xff],
    ]);
    expect(clock).toMatchObject({ hlts: 1, resyncs: 0, unexplainedWakes: 1 });
    expect(counts.uncheckedByReason).toEqual({ "PIT count: its time base was set before an unexplained HLT wake-up": 1 });
    expect(Object.keys(counts.maskedByReason).sort()).toEqual([
      "PIT status OUT bit: its time base was set before an unexplained HLT wake-up",
      "port 0x61 OUT2 bit: its time base was set before an unexplained HLT wake-up",
    ]);
  });

  it("counts HPET accesses as another device while their iotime lines still give the time", () => {
    const { text, counts } = convert(
      [pio(10), "memory_region_ops_read cpu 0 mr 0x55 addr 0xfed000f0 value 0x12345678deadbeef size 4 name 'hpet'", mmio(500, "r", 0xfed000f0), gsi(8, 1), pio(600)],
      true,
    );
    expect(text).toEqual(["500 irq 8 1"]);
    expect(counts.otherDevices).toEqual({ hpet: 1 });
  });

  it("places a GSI 0 change that is not the PIT's next one at the current time and counts it", () => {
    const { text, counts } = convert([pio(418869), "memory_region_ops_write cpu 0 mr 0x55 addr 0xcfc value 0xa size 1 name 'pci-conf-data'", gsi(0, 0), pio(418900)], true);
    expect(text).toEqual(["418869 irq 0 0"]);
    expect(counts.irq0Unpredicted).toBe(1);
    expect(counts.otherDevices).toEqual({ "pci-conf-data": 1 });
  });
});

describe("what is not the PIT, and lines whose time is not known", () => {
  // PIT channel 0 one-shot (mode 0), count 0xffff: OUT0 is low from the load; QEMU's next change
  // is a re-evaluation at the terminal count, ~54.9 ms later, still low (it rises 1 ns after).
  const pitOneShot = [pio(1000), portWrite(0x43, 0x30, "pit"), pio(1010), portWrite(0x40, 0xff, "pit"), pio(1020), portWrite(0x40, 0xff, "pit"), gsi(0, 0)];

  it("follows the HPET enabling legacy replacement: its lowering of GSI 0 and 8 happens at the write, and its timer's IRQ0 moves nothing", () => {
    const { text, counts, clock } = convert(
      [
        ...pitOneShot,
        hpetWrite(0x10, 0x1),
        mmio(2000, "w", 0xfed00010),
        hpetWrite(0x10, 0x3),
        gsi(0, 0),
        "pic_set_irq master 1 irq 0 level 0",
        gsi(8, 0),
        mmio(3000, "w", 0xfed00010),
        apicWrite(0xb0, 0),
        mmio(4000, "w", 0xfee000b0),
        // The HPET's timer 0 on IRQ0 (an edge: raised and lowered at once), then a PIC access.
        gsi(0, 1),
        gsi(0, 0),
        pio(5000),
        portRead(0x21, 0xfb, "pic"),
      ],
      true,
    );
    expect(text.slice(3)).toEqual([
      "1020 irq 0 0",
      "3000 irq 0 0",
      "3000 irq 8 0",
      "4000 writel 0xfee000b0 0x0",
      "4000 irq 0 1",
      "4000 irq 0 0",
      "5000 inb 0x21 = 0xfb",
    ]);
    expect(counts).toMatchObject({ hpetRouteSwitches: 1, hpetWriteLines: 2, hpetTimerLines: 2, pitSignalsTimed: 1, irq0Unpredicted: 0, irq0NotAtPitTime: 0 });
    expect(clock).toMatchObject({ conflicts: 0, untimedSignals: 0 });
  });

  it("reconnects the PIT when legacy replacement is switched off: it signals its OUT0 level at that write", () => {
    const { text, counts } = convert(
      [
        ...pitOneShot,
        hpetWrite(0x10, 0x3),
        gsi(0, 0),
        gsi(8, 0),
        mmio(2000, "w", 0xfed00010),
        hpetWrite(0x10, 0x1),
        gsi(0, 0), // the HPET lowers GSI 0
        gsi(0, 0), // the PIT, reconnected, drives OUT0 (low: mode 0 before the terminal count)
        gsi(8, 1), // the RTC's level, restored …
        "memory_region_ops_write cpu 0 mr 0x5568ce7d2de0 addr 0xfee01004 value 0x38 size 4 name 'apic-msi'", // … delivered by the I/O APIC
        gsi(8, 0), // a line change the same write makes after that message
        mmio(3000, "w", 0xfed00010),
        pio(4000),
        portRead(0x21, 0xfb, "pic"),
      ],
      true,
    );
    expect(text.slice(-5)).toEqual(["3000 irq 0 0", "3000 irq 0 0", "3000 irq 8 1", "3000 irq 8 0", "4000 inb 0x21 = 0xfb"]);
    expect(counts).toMatchObject({ hpetRouteSwitches: 2, hpetWriteLines: 5, pitSignalsTimed: 2, msiMessages: 1 });
  });

  it("never moves the clock for a line logged between an MMIO access and its iotime line", () => {
    // Without an HPET: a GSI 0 lowering during a local APIC write is at the PIT's next level but
    // ~54.9 ms before its time; it happens at the write.
    const { text, counts, clock } = convert([...pitOneShot, apicWrite(0xb0, 0), gsi(0, 0), mmio(3000, "w", 0xfee000b0), pio(4000), portRead(0x21, 0xfb, "pic")], true);
    expect(text.slice(-3)).toEqual(["3000 writel 0xfee000b0 0x0", "3000 irq 0 0", "4000 inb 0x21 = 0xfb"]);
    expect(counts).toMatchObject({ irq0NotAtPitTime: 1, irq0Unpredicted: 1, pitSignalsTimed: 1 });
    expect(clock.conflicts).toBe(0);
  });

  it("never moves the clock for a line after the last iotime line", () => {
    const { text, clock } = convert([...pitOneShot, pio(2000), portRead(0x21, 0xfb, "pic"), gsi(0, 0)], true);
    expect(text.slice(-2)).toEqual(["2000 inb 0x21 = 0xfb", "2000 irq 0 0"]);
    expect(clock.untimedSignals).toBe(1);
  });
});

describe("page faults between a local APIC timer load and its EOI", () => {
  const timerAndFaults = (fault: string[]) => [
    pio(900),
    apicWrite(0xf0, 0x1ff),
    mmio(990, "w", 0xfee000f0),
    apicWrite(0x3e0, 0xb),
    mmio(1000, "w", 0xfee003e0),
    apicWrite(0x320, 0xec),
    mmio(1010, "w", 0xfee00320),
    apicWrite(0x380, 597),
    mmio(1020, "w", 0xfee00380),
    ...pageFault(fetchFault),
    ...fault,
    ...pageFault(fetchFault),
    ...pageFault(fetchFault),
    "apic_local_deliver vector 0 delivery mode 0",
    "Servicing hardware INT=0xec",
    apicWrite(0xb0, 0),
    mmio(1620, "w", 0xfee000b0),
  ];

  it("places the timer interrupt at its expiry, before the EOI, and the model agrees", async () => {
    // Divide by 1, one-shot, initial count 597: expiry at 1020 + 598 = 1618. One data fault takes
    // one instruction off the EOI (1619); the three fetch faults take nothing.
    const { events, text, clock } = convert(timerAndFaults(pageFault(dataFault)), true);
    expect(text.slice(-2)).toEqual(["1618 inta = 0xec", "1619 writel 0xfee000b0 0x0"]);
    expect(clock).toMatchObject({ fetchFaults: 3, pageFaults: 1, offClockSignals: 0, conflicts: 0 });
    for (const policy of POLICIES) {
      const report = await replayEvents({ ...defaultHeader(), pitIrq0: false, compatQemu: true }, events, { policy });
      expect({ policy, mismatches: report.mismatches }).toEqual({ policy, mismatches: [] });
      expect(report.interrupts).toBe(1);
    }
  });

  it("counts an expiry that cannot fit before the next instruction as off the clock", () => {
    // Four data faults: the EOI is at 1616, before the computed expiry (1618).
    const four = [...pageFault(dataFault), ...pageFault(dataFault), ...pageFault(dataFault), ...pageFault(dataFault)];
    const { text, clock } = convert(timerAndFaults(four), true);
    expect(text.slice(-1)).toEqual(["1616 writel 0xfee000b0 0x0"]);
    expect(clock.offClockSignals).toBe(1);
  });
});

describe("clock conflicts", () => {
  it("are an error naming the line when no rule explains them", () => {
    // Two data faults between instructions one count apart: the second would be placed before the first.
    const lines = [pio(100), portWrite(0x21, 0xfb, "pic"), ...pageFault(dataFault), ...pageFault(dataFault), pio(101), portWrite(0x21, 0xfa, "pic")];
    expect(() => convert(lines, true)).toThrow(ClockConflictError);
    expect(() => convert(lines, true)).toThrow(/^line 9: clock conflict: the instruction's icount time 99 is 1 ns before an event already placed at 100/);
  });

  it("after a HLT, resume no earlier than the latest signal placed while halted (rule: resume after the latest signal)", () => {
    const { text, clock } = convert(
      [
        ...pitRateThenHlt,
        gsi(0, 1), // wakes the CPU (mode 2, count 4773) …
        gsi(0, 0), // … and OUT0 falls one PIT clock later, still before the interrupt is taken
        "Servicing hardware INT=0x30",
        apicWrite(0xb0, 0),
        mmio(4613780400, "w", 0xfee000b0),
      ],
      true,
    );
    const [rise, fall, inta, eoi] = text.slice(-4).map((t) => Number(t.split(" ")[0]));
    expect(text.slice(-4).map((t) => t.split(" ").slice(1).join(" "))).toEqual(["irq 0 1", "irq 0 0", "inta = 0x30", "writel 0xfee000b0 0x0"]);
    expect(rise).toBe(4617775066);
    expect(fall! - rise!).toBeGreaterThan(800);
    expect(inta).toBe(fall);
    expect(eoi).toBe(fall! + 399);
    expect(clock).toMatchObject({ conflicts: 0, conflictsResolved: { "resume after the latest signal": 1 } });
  });
});

describe("raw logs (no iotime lines)", () => {
  it("steps a synthetic clock 1 ns per guest access and jumps one divided period past each local APIC timer expiry", () => {
    const { text } = convert(
      [apicWrite(0x3e0, 0x3), apicWrite(0x320, 0xec), apicWrite(0x380, 0xc22), "apic_local_deliver vector 0 delivery mode 0", "Servicing hardware INT=0xec", apicWrite(0xb0, 0)],
      false,
    );
    // Divide by 16: the expiry at 3 + (0xc22 + 1) × 16 = 49715, the clock at 49715 + 16.
    expect(text).toEqual(["1 writel 0xfee003e0 0x3", "2 writel 0xfee00320 0xec", "3 writel 0xfee00380 0xc22", "49731 inta = 0xec", "49732 writel 0xfee000b0 0x0"]);
  });

  it("follows a periodic local APIC timer from expiry to expiry, and counts an expiry with none armed", () => {
    const expiry = "apic_local_deliver vector 0 delivery mode 0";
    const { text, counts } = convert([apicWrite(0x3e0, 0xb), apicWrite(0x320, 0x200ef), apicWrite(0x380, 99), expiry, expiry, apicWrite(0x320, 0x100ef), expiry, "Servicing hardware INT=0xef"], false);
    // Divide by 1 (0xb): expiries every (99 + 1) ns from the load at 3 (203 the second, the clock 1 ns past it); masking stops the timer.
    expect(text.slice(3)).toEqual(["205 writel 0xfee00320 0x100ef", "205 inta = 0xef"]);
    expect(counts).toMatchObject({ lapicExpiries: 3, lapicExpiriesUnpredicted: 1 });
  });

  it("leaves PIT counts unchecked and masks port 0x61 OUT2, keeping every other read", () => {
    const { events, counts } = convert([portWrite(0x43, 0xb0, "pit"), portRead(0x42, 0xff, "pit"), portRead(0x61, 0x20, "pcspk"), portRead(0x21, 0xfb, "pic")], false);
    expect(events.slice(1).map((e) => [e.check, e.value, e.mask])).toEqual([
      [Check.None, 0, 0],
      [Check.Value, 0x00, 0xdf],
      [Check.Value, 0xfb, 0xff],
    ]);
    expect(counts).toMatchObject({ reads: 3, readsChecked: 1, readsMasked: 1, readsUnchecked: 1 });
    expect(counts.uncheckedByReason).toEqual({ "PIT count: a raw log has no time": 1 });
  });
});

describe("interrupts, MSIs and the local APIC", () => {
  it("replays ISA lines as irq, higher GSIs as gsi, acceptances as inta and IA32_APIC_BASE reads as rdmsr", () => {
    const { text } = convert([gsi(0, 1), gsi(4, 0), gsi(19, 1), "Servicing hardware INT=0x08", "cpu_get_apic_base 0x00000000fee00900"], false);
    expect(text).toEqual(["0 irq 0 1", "0 irq 4 0", "0 gsi 19 1", "0 inta = 0x8", "0 rdmsr 0x1b = 0xfee00900"]);
  });

  it("counts MSI writes (I/O APIC deliveries, machine setup) without replaying them", () => {
    const { text, counts } = convert(
      [
        "memory_region_ops_write cpu -1 mr 0x5583803429e0 addr 0xfee00000 value 0x0 size 4 name 'apic-msi'",
        "apic_deliver_irq dest 0 dest_mode 0 delivery_mode 0 vector 0 trigger_mode 0",
        "memory_region_ops_write cpu 0 mr 0x5568ce7d2de0 addr 0xfee01004 value 0x30 size 4 name 'apic-msi'",
        "apic_deliver_irq dest 1 dest_mode 1 delivery_mode 0 vector 48 trigger_mode 0",
        apicWrite(0xb0, 0),
        "memory_region_ops_read cpu 0 mr 0x5568cf0323a0 addr 0xfec00010 value 0x10000 size 4 name 'ioapic'",
      ],
      false,
    );
    expect(text).toEqual(["1 writel 0xfee000b0 0x0", "2 readl 0xfec00010 = 0x10000"]);
    expect(counts.msiMessages).toBe(2);
    expect(counts.ignoredLines["apic_deliver_irq (message into the local APIC)"]).toBe(2);
  });

  it("refuses a second CPU in a timed log, and a CPU beyond the count it was set up for", () => {
    expect(() => convert([pio(10), "iotime: icount=12 cpu=1 pc=0xfec16 pio-insn"], true)).toThrow(/line 2: access by cpu 1; the iotime plugin counts instructions of all vCPUs together/);
    expect(() => convert([portWrite(0x21, 0xfb, "pic"), "memory_region_ops_write cpu 1 mr 0x55 addr 0xfee000b0 value 0x0 size 4 name 'apic-msi'"], false)).toThrow(
      /line 2: access by cpu 1; the import was set up for 1 CPU$/,
    );
  });
});

describe("property: any mix of log lines", () => {
  const line = fc.oneof(
    fc.integer({ min: 0, max: 5000 }).map((d) => ({ stamp: d })),
    fc.constantFrom(
      portWrite(0x43, 0x34, "pit"),
      portWrite(0x40, 0x9c, "pit"),
      portWrite(0x40, 0x2e, "pit"),
      portWrite(0x43, 0x38, "pit"),
      portRead(0x42, 0x12, "pit"),
      portRead(0x21, 0xfb, "pic"),
      portWrite(0x20, 0x20, "pic"),
      portRead(0x61, 0x20, "pcspk"),
      apicWrite(0x380, 0x2000),
      apicWrite(0x320, 0x200ec),
      "memory_region_ops_read cpu 0 mr 0x55 addr 0xfee00390 value 0x1234 size 4 name 'apic-msi'",
      "memory_region_ops_write cpu 0 mr 0x55 addr 0xfee01004 value 0x30 size 4 name 'apic-msi'",
      gsi(0, 0),
      gsi(0, 1),
      gsi(4, 1),
      "apic_local_deliver vector 0 delivery mode 0",
      "Servicing hardware INT=0x30",
      "check_exception old: 0xffffffff new 0xe",
      fetchFault,
      dataFault,
      hpetWrite(0x10, 0x3),
      hpetWrite(0x10, 0x0),
      gsi(8, 0),
      "HLT",
    ),
    fc.string({ maxLength: 40 }),
  );

  /** Log lines with plugin counts as QEMU gives them: each data-access fault costs the plugin one more count. */
  function realisticLines(items: (string | { stamp: number })[]): string[] {
    let icount = 0;
    let dataFaults = 0;
    return items.map((item) => {
      if (typeof item === "object") {
        icount += Math.max(1, item.stamp) + dataFaults;
        dataFaults = 0;
        return pio(icount);
      }
      if (item === dataFault) dataFaults++;
      if (item !== "HLT") return item;
      icount += 1 + dataFaults;
      dataFaults = 0;
      return hlt(icount);
    });
  }

  it("never fails, never goes back in time, never meets a clock conflict, and counts every unknown line", () => {
    fc.assert(
      fc.property(fc.array(line, { maxLength: 60 }), fc.boolean(), (items, timed) => {
        const lines = realisticLines(items);
        const { events, counts, clock } = convert(lines, timed);
        for (let i = 1; i < events.length; i++) expect(events[i]!.time).toBeGreaterThanOrEqual(events[i - 1]!.time);
        expect(clock.conflicts).toBe(0);
        const unknown = lines.filter((l) => parseLogLine(l).kind === "unknown").length;
        expect(counts.unknownLines).toBe(unknown);
        expect(counts.readsChecked + counts.readsMasked + counts.readsUnchecked).toBe(counts.reads);
      }),
    );
  });

  it("on plugin counts that contradict each other, fails only with a clock conflict naming an iotime line", () => {
    fc.assert(
      fc.property(fc.array(line, { maxLength: 60 }), (items) => {
        let icount = 0;
        const lines = items.map((item) => (typeof item === "object" ? pio((icount += item.stamp)) : item === "HLT" ? hlt((icount += 1)) : item));
        try {
          convert(lines, true);
        } catch (e) {
          expect(e).toBeInstanceOf(ClockConflictError);
          const line = (e as ClockConflictError).line;
          expect(parseLogLine(lines[line - 1]!).kind).toBe("iotime");
        }
      }),
    );
  });
});

describe("importQemuLog", () => {
  it("imports a slice of a real timed log: header, counts and a trace that reads back", async () => {
    const out = join(dir, "slice.trace.gz");
    const summary = await importQemuLog(FIXTURE, out);
    expect(summary).toMatchObject({ timing: "icount", lines: 60000, unknownLines: 0, conflicts: 0, readsUnchecked: 0, readsMasked: 0 });
    // SeaBIOS and Linux set up both PICs, the PIT and port 0x61, then Linux calibrates with PIT channel 2.
    expect(summary.eventsByOp["inb"]).toBeGreaterThan(5000);
    expect(summary.readsChecked).toBe(summary.reads);
    const { header, events } = await readTraceFile(out);
    expect(header).toMatchObject({ compatQemu: true, pitIrq0: false, machine: { pic: true, pit: true, lapic: true, ioapic: true } });
    expect(header.source).toContain("linux-pc-noapic.timed.head.log.gz");
    expect(events.length).toBe(summary.events);
    expect(formatImportSummary(summary)).toContain("timing: icount");
  });

  it("rejects a truncated gzip, naming the file and what is wrong, and writes no partial trace", async () => {
    const cut = join(dir, "cut.log.gz");
    const whole = await readFile(FIXTURE);
    await writeFile(cut, whole.subarray(0, whole.length >> 1));
    const out = join(dir, "cut.trace.gz");
    await expect(importQemuLog(cut, out)).rejects.toThrow(CorruptLogError);
    await expect(importQemuLog(cut, out)).rejects.toThrow(/cut\.log\.gz: corrupt or truncated gzip data after \d+ complete lines \(unexpected end of file\)/);
    expect(existsSync(out)).toBe(false);
  });

  it("rejects a small hand-made log cut short, and a gzip with a corrupt body", async () => {
    const lines = Array.from({ length: 200 }, (_, i) => [pio(10 + 20 * i), portWrite(0x21, 0xfb, "pic"), pio(20 + 20 * i), portRead(0x21, 0xfb, "pic")]);
    const whole = gzipSync(lines.flat().join("\n") + "\n");
    const cut = join(dir, "hand-cut.log.gz");
    await writeFile(cut, whole.subarray(0, whole.length - 12));
    const out = join(dir, "hand-cut.trace");
    await expect(importQemuLog(cut, out)).rejects.toThrow(/hand-cut\.log\.gz: corrupt or truncated gzip data/);
    expect(existsSync(out)).toBe(false);
    const corrupt = Buffer.from(whole);
    corrupt[corrupt.length - 6] ^= 0xff; // the stored length no longer matches
    const bad = join(dir, "hand-bad.log.gz");
    await writeFile(bad, corrupt);
    await expect(importQemuLog(bad, out)).rejects.toThrow(/hand-bad\.log\.gz: corrupt or truncated gzip data/);
    expect(existsSync(out)).toBe(false);
  });

  it("blmv import-qemu: exit 2 for a truncated gzip, exit 1 for a clock conflict, naming the file or line and writing nothing", async () => {
    const whole = await readFile(FIXTURE);
    const cut = join(dir, "cli-cut.log.gz");
    await writeFile(cut, whole.subarray(0, whole.length >> 2));
    const out = join(dir, "cli.trace.gz");
    const truncated = await runCli(["import-qemu", cut, "-o", out]);
    expect(truncated.code).toBe(2);
    expect(truncated.stderr).toMatch(/^blmv: import-qemu: .*cli-cut\.log\.gz: corrupt or truncated gzip data after \d+ complete lines \(unexpected end of file\); nothing imported$/m);
    expect(existsSync(out)).toBe(false);
    const conflicting = join(dir, "cli-conflict.log");
    await writeFile(conflicting, [pio(100), portWrite(0x21, 0xfb, "pic"), ...pageFault(dataFault), ...pageFault(dataFault), pio(101), portWrite(0x21, 0xfa, "pic")].join("\n"));
    const conflict = await runCli(["import-qemu", conflicting, "-o", out]);
    expect(conflict.code).toBe(1);
    expect(conflict.stderr).toMatch(/cli-conflict\.log: line 9: clock conflict: .*; no trace written$/m);
    expect(existsSync(out)).toBe(false);
  });

  it("counts garbage lines in a log without failing", async () => {
    const log = join(dir, "garbage.log");
    await writeFile(log, [pio(10), portWrite(0x21, 0xfb, "pic"), "\u0000\u0001 binary junk", "memory_region_ops_read cpu 0 mr 0x55 addr", pio(20), portRead(0x21, 0xfb, "pic")].join("\n"));
    const summary = await importQemuLog(log, join(dir, "garbage.trace"));
    expect(summary).toMatchObject({ unknownLines: 2, events: 2, readsChecked: 1 });
    expect(summary.unknownSamples.map((u) => u.line)).toEqual([3, 4]);
  });

  it("rejects a file that is not a QEMU log, writing nothing", async () => {
    const notLog = join(dir, "notes.txt.gz");
    await writeFile(notLog, gzipSync("blmv-trace 1\n0 outb 0x20 0x11\n"));
    const out = join(dir, "notes.trace.gz");
    await expect(importQemuLog(notLog, out)).rejects.toThrow(NotQemuLogError);
    expect(existsSync(out)).toBe(false);
    const empty = join(dir, "empty.log");
    await writeFile(empty, "");
    await expect(importQemuLog(empty, out)).rejects.toThrow(/is not a QEMU log: it is empty/);
    const broken = join(dir, "broken.log.gz");
    await writeFile(broken, Buffer.from([0x1f, 0x8b, 0x08, 0x00, 0xde, 0xad, 0xbe, 0xef, 0x00, 0x03, 0x01, 0x02]));
    await expect(importQemuLog(broken, out)).rejects.toThrow(/broken\.log\.gz: corrupt or truncated gzip data after 0 complete lines/);
    expect(existsSync(out)).toBe(false);
  });

  it("removes the output when it refuses a timed multi-CPU log", async () => {
    const log = join(dir, "smp.log");
    await writeFile(log, [pio(10), portWrite(0x21, 0xfb, "pic"), mmio(20, "r", 0xfee00020), "memory_region_ops_read cpu 1 mr 0x55 addr 0xfee00020 value 0x1000000 size 4 name 'apic-msi'"].join("\n"));
    const out = join(dir, "smp.trace");
    await expect(importQemuLog(log, out)).rejects.toThrow(MultiCpuLogError);
    expect(existsSync(out)).toBe(false);
  });

  it("can ignore the iotime lines and use the synthetic clock", async () => {
    const summary = await importQemuLog(FIXTURE, join(dir, "untimed.trace.gz"), { timing: "untimed" });
    expect(summary.timing).toBe("synthetic");
    expect(summary.ignoredLines["iotime (untimed import)"]).toBeGreaterThan(0);
    expect(summary.readsUnchecked).toBeGreaterThan(5000);
  });
});

describe("replaying imported QEMU logs against the model", () => {
  it.each(POLICIES)("replays the imported log slice with zero mismatches (policy %s)", async (policy) => {
    const out = join(dir, `slice-${policy}.trace.gz`);
    const summary = await importQemuLog(FIXTURE, out);
    const { header, events } = await readTraceFile(out);
    const report = await replayEvents(header, events, { policy });
    expect(report.mismatches).toEqual([]);
    expect(report.checked).toBe(summary.readsChecked + summary.readsMasked + summary.intas);
  });

  it.each(POLICIES)("replays every trace in traces/qemu with zero mismatches (policy %s)", async (policy) => {
    const names = (await readdir(QEMU_TRACES)).filter((n) => n.endsWith(".trace.gz"));
    expect(names.length).toBe(7);
    for (const name of names) {
      const { header, events } = await readTraceFile(join(QEMU_TRACES, name));
      const report = await replayEvents(header, events, { policy });
      expect({ name, mismatches: report.mismatches }).toEqual({ name, mismatches: [] });
    }
  });
});
