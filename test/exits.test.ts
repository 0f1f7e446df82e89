// What each intercept policy costs a guest in VM exits: the claim BLMVisor rests on is that an
// APIC-driven guest needs no traps in steady state, while a PIC-driven guest pays one exit per
// interrupt (its EOI) because OCW2 shares a port with the write-only ICW1 and OCW3.

import { describe, expect, it } from "vitest";
import { Machine, type Policy } from "../src/core/machine.js";

const LAPIC = 0xfee00000;
const TICKS = 200;

/** A Linux-like PIC+PIT guest: init, then TICKS timer interrupts at 1 kHz, each with an EOI. */
function picGuest(policy: Policy): { m: Machine; setupExits: number } {
  const m = Machine.create({ lapic: false, ioapic: false, policy });
  m.outb(0x43, 0x34); // PIT channel 0, mode 2
  m.outb(0x40, 0xa9);
  m.outb(0x40, 0x04); // 1193 clocks: about 1 ms
  m.outb(0x20, 0x11);
  m.outb(0x21, 0x20);
  m.outb(0x21, 0x04);
  m.outb(0x21, 0x01);
  m.outb(0xa0, 0x11);
  m.outb(0xa1, 0x28);
  m.outb(0xa1, 0x02);
  m.outb(0xa1, 0x01);
  m.outb(0x21, 0xfe);
  m.outb(0xa1, 0xff);
  const setupExits = m.exits().total;
  for (let i = 1; i <= TICKS; i++) {
    m.advanceTo(i * 1_000_000 + 10_000);
    expect(m.inta()).toBe(0x20);
    m.inb(0x21); // the handler reads the mask, as Linux's mask_and_ack does
    m.outb(0x20, 0x20); // non-specific EOI
  }
  return { m, setupExits };
}

/** An APIC guest: local APIC periodic timer at 1 kHz, EOI through the APIC page. */
function apicGuest(policy: Policy): { m: Machine; setupExits: number } {
  const m = Machine.create({ pic: false, pit: false, policy });
  m.writel(LAPIC + 0xf0, 0x1ff); // software enable
  m.writel(LAPIC + 0x3e0, 0xb); // divide by 1
  m.writel(LAPIC + 0x320, 0x20030); // periodic, vector 0x30
  m.writel(LAPIC + 0x380, 1_000_000); // 1 ms at 1 GHz
  const setupExits = m.exits().total;
  for (let i = 1; i <= TICKS; i++) {
    m.advanceTo(i * 1_000_000 + 10_000);
    expect(m.inta()).toBe(0x30);
    m.readl(LAPIC + 0x390);
    m.writel(LAPIC + 0xb0, 0); // EOI
  }
  return { m, setupExits };
}

describe("VM exits per policy", () => {
  it("an APIC-only guest causes no exit at all under blmvisor", () => {
    const { m } = apicGuest("blmvisor");
    expect(m.exits().total).toBe(0);
  });

  it("a PIC-driven timer guest costs one exit per interrupt under blmvisor: its EOI", () => {
    const { m, setupExits } = picGuest("blmvisor");
    const exits = m.exits();
    expect(exits.total - setupExits).toBe(TICKS);
    expect(exits.byPort.find((p) => p.port === 0x20)?.out).toBe(TICKS + 1); // EOIs + ICW1
    expect(exits.byPort.find((p) => p.port === 0x21)?.in ?? 0).toBe(0); // IMR is readable: no trap
  });

  it("a commodity VMM (full) traps every access and every interrupt", () => {
    const pic = picGuest("full").m.exits();
    expect(pic.byReason["io-out"]).toBe(13 + TICKS);
    expect(pic.byReason["io-in"]).toBe(TICKS);
    expect(pic.byReason["external-interrupt"]).toBe(TICKS);
    const apic = apicGuest("full").m.exits();
    expect(apic.byReason["mmio-write"]).toBe(4 + TICKS);
    expect(apic.byReason["mmio-read"]).toBe(TICKS);
    expect(apic.byReason["external-interrupt"]).toBe(TICKS);
    expect(apic.byRegister.find((r) => r.region === "lapic" && r.offset === 0xb0)?.write).toBe(TICKS);
  });

  it("bare metal (none) traps nothing, and so cannot migrate", () => {
    const { m } = picGuest("none");
    expect(m.exits().total).toBe(0);
    expect(() => m.capture()).toThrow(/capture refused/);
  });
});
