import { describe, expect, it } from "vitest";
import { INTA_NMI, Machine } from "../src/core/machine.js";
import { IOAPIC_EOI, IOREGSEL, IOWIN, ioEntry, ioRead, ioWrite } from "./arbitraries/apic-registers.js";

const LAPIC_SVR = 0xfee000f0;
const LAPIC_EOI = 0xfee000b0;

// Redirection entry, low word.
const ACTIVE_LOW = 1 << 13;
const REMOTE_IRR = 1 << 14;
const LEVEL = 1 << 15;
const MASKED = 1 << 16;
const LOGICAL = 1 << 11;
const DELIVERY_STATUS = 1 << 12;

/** A machine whose only interrupt path is I/O APIC → local APIC (enabled by SVR) → CPU. */
function machine(compatQemu = false, enableLapic = true): Machine {
  const m = Machine.create({ pic: false, pit: false, lapic: true, ioapic: true, compatQemu });
  if (enableLapic) m.writel(LAPIC_SVR, 0x1ff);
  return m;
}

const low = (m: Machine, pin: number) => ioRead(m, 0x10 + 2 * pin);
const remoteIrr = (m: Machine, pin: number) => (low(m, pin) & REMOTE_IRR) !== 0;

describe("I/O APIC registers", () => {
  it("resets to ID 0, version 0x170020 and every entry masked", () => {
    const m = machine();
    expect(ioRead(m, 0x00)).toBe(0);
    expect(ioRead(m, 0x01)).toBe(0x00170020);
    expect(ioRead(m, 0x02)).toBe(0);
    for (let pin = 0; pin < 24; pin++) {
      expect(low(m, pin)).toBe(MASKED);
      expect(ioRead(m, 0x11 + 2 * pin)).toBe(0);
    }
  });

  it("keeps 8 bits of IOREGSEL", () => {
    const m = machine();
    m.writel(IOREGSEL, 0x12345);
    expect(m.readl(IOREGSEL)).toBe(0x45);
  });

  it("writes ID bits 27–24 only; arbitration ID follows; version is read-only", () => {
    const m = machine();
    ioWrite(m, 0x00, 0xffffffff);
    expect(ioRead(m, 0x00)).toBe(0x0f000000);
    expect(ioRead(m, 0x02)).toBe(0x0f000000);
    ioWrite(m, 0x01, 0);
    ioWrite(m, 0x02, 0);
    expect(ioRead(m, 0x01)).toBe(0x00170020);
    expect(ioRead(m, 0x02)).toBe(0x0f000000);
    expect(m.inspect().ioapic).toMatchObject({ id: 0x0f000000 });
  });

  it("reads reserved entry bits and read-only bits as 0 and ignores writes to them", () => {
    const m = machine();
    ioWrite(m, 0x10 + 2 * 7, 0xffffffff);
    ioWrite(m, 0x11 + 2 * 7, 0xffffffff);
    expect(low(m, 7)).toBe(0x0001ffff & ~(DELIVERY_STATUS | REMOTE_IRR));
    expect(ioRead(m, 0x11 + 2 * 7)).toBe(0xff000000);
  });

  it("has nothing at registers 0x03–0x0f and above 0x3f, nor at other offsets", () => {
    const m = machine();
    for (const reg of [0x03, 0x0f, 0x40, 0xff]) {
      ioWrite(m, reg, 0xffffffff);
      expect(ioRead(m, reg)).toBe(0);
    }
    m.writel(IOREGSEL, 0x01);
    expect(m.readl(IOREGSEL + 0x110) >>> 0).toBe(0);
    expect(m.readl(IOAPIC_EOI)).toBe(0);
  });
});

describe("I/O APIC delivery (datasheet)", () => {
  it("sends an edge interrupt on each asserting transition", () => {
    const m = machine();
    ioEntry(m, 5, 0x31);
    expect(m.inta()).toBe(-1);
    m.setGsi(5, 1);
    expect(m.inta()).toBe(0x31);
    m.writel(LAPIC_EOI, 0);
    m.setGsi(5, 1); // no transition
    expect(m.inta()).toBe(-1);
    m.setGsi(5, 0);
    expect(m.inta()).toBe(-1);
    m.setGsi(5, 1);
    expect(m.inta()).toBe(0x31);
    expect(remoteIrr(m, 5)).toBe(false);
  });

  it("loses an edge that arrives while masked", () => {
    const m = machine();
    ioEntry(m, 6, MASKED | 0x32);
    m.setGsi(6, 1);
    ioEntry(m, 6, 0x32);
    expect(m.inta()).toBe(-1);
    m.setGsi(6, 0);
    m.setGsi(6, 1);
    expect(m.inta()).toBe(0x32);
  });

  it("delivers a level interrupt once until EOI, then again while still asserted", () => {
    const m = machine();
    ioEntry(m, 9, LEVEL | 0x41);
    m.setGsi(9, 1);
    expect(remoteIrr(m, 9)).toBe(true);
    expect(m.inta()).toBe(0x41);
    m.setGsi(9, 0);
    m.setGsi(9, 1);
    expect(m.inta()).toBe(-1);
    m.writel(LAPIC_EOI, 0); // broadcast EOI for a level interrupt clears remote IRR ...
    expect(m.inta()).toBe(0x41); // ... and the asserted line is sent again
    expect(remoteIrr(m, 9)).toBe(true);
    m.setGsi(9, 0);
    m.writel(LAPIC_EOI, 0);
    expect(remoteIrr(m, 9)).toBe(false);
    expect(m.inta()).toBe(-1);
  });

  it("treats an NMI entry programmed level-triggered as edge-triggered: one NMI per asserting edge, no remote IRR", () => {
    const m = machine();
    m.setGsi(10, 1);
    ioEntry(m, 10, LEVEL | (4 << 8)); // unmasked with the line already high: no edge, nothing sent
    expect(m.inta()).toBe(-1);
    m.setGsi(10, 0);
    m.setGsi(10, 1);
    expect(remoteIrr(m, 10)).toBe(false);
    expect(m.inta()).toBe(INTA_NMI);
    expect(m.inta()).toBe(-1); // the line stays high: no second NMI
    m.setGsi(10, 0);
    m.setGsi(10, 1);
    expect(m.inta()).toBe(INTA_NMI);
  });

  it("clears remote IRR through the EOI register only for the entry's vector", () => {
    const m = machine();
    ioEntry(m, 10, LEVEL | 0x50);
    m.setGsi(10, 1);
    expect(m.inta()).toBe(0x50);
    m.setGsi(10, 0);
    m.writel(IOAPIC_EOI, 0x51);
    expect(remoteIrr(m, 10)).toBe(true);
    m.writel(IOAPIC_EOI, 0x150); // vector in bits 7–0
    expect(remoteIrr(m, 10)).toBe(false);
  });

  it("holds a masked level line and sends it when unmasked", () => {
    const m = machine();
    ioEntry(m, 11, MASKED | LEVEL | 0x60);
    m.setGsi(11, 1);
    expect(m.inta()).toBe(-1);
    expect(remoteIrr(m, 11)).toBe(false);
    ioEntry(m, 11, LEVEL | 0x60);
    expect(remoteIrr(m, 11)).toBe(true);
    expect(m.inta()).toBe(0x60);
  });

  it("keeps remote IRR across rewrites of the entry, whatever is written to it", () => {
    const m = machine();
    ioEntry(m, 12, LEVEL | 0x61);
    m.setGsi(12, 1);
    expect(m.inta()).toBe(0x61);
    ioEntry(m, 12, MASKED | LEVEL | 0x61);
    ioEntry(m, 12, LEVEL | 0x61);
    ioEntry(m, 12, 0x61); // to edge: remote IRR stays (its meaning is undefined for edge)
    expect(remoteIrr(m, 12)).toBe(true);
    expect(m.inta()).toBe(-1);
  });

  it("inverts an active-low pin", () => {
    const m = machine();
    ioEntry(m, 13, ACTIVE_LOW | LEVEL | 0x70); // line low = asserted
    expect(m.inta()).toBe(0x70);
    m.setGsi(13, 1);
    m.writel(LAPIC_EOI, 0);
    expect(remoteIrr(m, 13)).toBe(false);
    expect(m.inta()).toBe(-1);

    ioEntry(m, 14, ACTIVE_LOW | 0x71);
    m.setGsi(14, 1);
    expect(m.inta()).toBe(-1);
    m.setGsi(14, 0); // falling edge asserts
    expect(m.inta()).toBe(0x71);
  });

  it("sends only to a matching destination; remote IRR waits for acceptance", () => {
    const m = machine();
    ioEntry(m, 15, LEVEL | 0x80, 1); // physical APIC ID 1: no such CPU
    m.setGsi(15, 1);
    expect(m.inta()).toBe(-1);
    expect(remoteIrr(m, 15)).toBe(false);
    ioEntry(m, 15, LEVEL | 0x80, 0);
    expect(m.inta()).toBe(0x80);
    m.setGsi(15, 0);
    m.writel(LAPIC_EOI, 0);
    ioEntry(m, 16, 0x81, 0xff); // physical broadcast
    m.setGsi(16, 1);
    expect(m.inta()).toBe(0x81);
  });

  it("sets no remote IRR when a software-disabled local APIC refuses the message", () => {
    const m = machine(false, false);
    ioEntry(m, 17, LEVEL | 0x90);
    m.setGsi(17, 1);
    expect(remoteIrr(m, 17)).toBe(false);
  });

  it("never shows delivery status set, and shows state through inspect", () => {
    const m = machine();
    ioEntry(m, 18, LEVEL | LOGICAL | 0xa0, 0x01);
    ioWrite(m, 0x00, 0x02000000);
    m.setGsi(18, 1);
    m.setGsi(3, 1);
    expect(low(m, 18) & DELIVERY_STATUS).toBe(0);
    const io = m.inspect().ioapic as { id: number; levels: number; entries: { low: number; high: number }[] };
    expect(io.id).toBe(0x02000000);
    expect(io.levels).toBe((1 << 18) | (1 << 3));
    expect(io.entries[18]).toEqual({ low: low(m, 18), high: 0x01000000 });
  });
});

describe("I/O APIC with compatQemu (QEMU 7.2 behaviour)", () => {
  it("keeps reserved entry bits as written", () => {
    const m = machine(true);
    ioWrite(m, 0x10, 0xffffffff);
    ioWrite(m, 0x11, 0xffffffff);
    expect(low(m, 0)).toBe((0xffffffff & ~(DELIVERY_STATUS | REMOTE_IRR)) >>> 0);
    expect(ioRead(m, 0x11)).toBe(0xffffffff);
  });

  it("clears remote IRR when the entry is rewritten as edge-triggered", () => {
    const m = machine(true);
    ioEntry(m, 9, LEVEL | 0x41);
    m.setGsi(9, 1);
    expect(m.inta()).toBe(0x41);
    ioEntry(m, 9, MASKED | 0x41);
    expect(remoteIrr(m, 9)).toBe(false);
  });

  it("ignores the polarity bit", () => {
    const m = machine(true);
    ioEntry(m, 13, ACTIVE_LOW | LEVEL | 0x70);
    expect(m.inta()).toBe(-1);
    m.setGsi(13, 1);
    expect(m.inta()).toBe(0x70);
  });

  it("sets remote IRR when it sends, accepted or not", () => {
    const m = machine(true, false);
    ioEntry(m, 17, LEVEL | 0x90);
    m.setGsi(17, 1);
    expect(remoteIrr(m, 17)).toBe(true);
  });

  it("matches the whole EOI register value against the vector", () => {
    for (const [compat, cleared] of [
      [true, false],
      [false, true],
    ] as const) {
      const m = machine(compat);
      ioEntry(m, 10, LEVEL | 0x50);
      m.setGsi(10, 1);
      m.setGsi(10, 0);
      m.writel(IOAPIC_EOI, 0x150);
      expect(remoteIrr(m, 10)).toBe(!cleared);
    }
  });

  it("latches a request by the trigger mode the entry had when the line changed", () => {
    // A line raised while its entry is a masked edge entry is not seen when it becomes level.
    for (const [compat, vector] of [
      [true, -1],
      [false, 0x42],
    ] as const) {
      const m = machine(compat);
      ioEntry(m, 8, MASKED | 0x42);
      m.setGsi(8, 1);
      ioEntry(m, 8, LEVEL | 0x42);
      expect(m.inta()).toBe(vector);
    }
    // A level request latched while masked fires as an edge when the entry becomes edge.
    for (const [compat, vector] of [
      [true, 0x43],
      [false, -1],
    ] as const) {
      const m = machine(compat);
      ioEntry(m, 8, MASKED | LEVEL | 0x43);
      m.setGsi(8, 1);
      ioEntry(m, 8, 0x43);
      expect(m.inta()).toBe(vector);
    }
  });

  it("repeats its registers every 256 bytes of the window", () => {
    const m = machine(true);
    m.writel(IOREGSEL + 0x100, 0x01);
    expect(m.readl(IOWIN + 0x100) >>> 0).toBe(0x00170020);
  });
});

describe("I/O APIC across a migration", () => {
  it("is rebuilt with its entries, ID, IOREGSEL and the remote IRR of a line in service", () => {
    for (const compat of [false, true]) {
      const m = machine(compat);
      ioWrite(m, 0x00, 0x05000000);
      ioEntry(m, 9, LEVEL | 0x41);
      ioEntry(m, 4, 0x35, 0xff);
      ioEntry(m, 20, MASKED | LEVEL | ACTIVE_LOW | LOGICAL | 0x66, 0x03);
      m.setGsi(9, 1);
      expect(m.inta()).toBe(0x41); // in service: remote IRR set, line still asserted
      m.writel(IOREGSEL, 0x13);
      const before = m.inspect().ioapic;

      const rebuilt = Machine.reconstruct(m.capture());
      expect(rebuilt.inspect().ioapic).toEqual(before);
      // The rebuilt machine behaves on: EOI re-delivers the still-asserted level line.
      rebuilt.writel(LAPIC_EOI, 0);
      expect(rebuilt.inta()).toBe(0x41);
    }
  });
});
