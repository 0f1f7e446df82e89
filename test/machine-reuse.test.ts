// A released machine's core serves the next Machine.create(): it must come back exactly as a
// fresh instance would be — devices, shadows, traps, exit counters and replay counters.

import { describe, expect, it } from "vitest";
import { Machine, type MachineOptions, type Policy } from "../src/core/machine.js";
import { busyMachine } from "../bench/devices.js";

function fresh(options: MachineOptions) {
  const m = Machine.create(options);
  const view = { inspect: m.inspect(), shadows: m.shadows(), exits: m.exits(), replay: [0, 1, 2].map((i) => m.core.replayStatus(i)) };
  return { m, view };
}

describe("machine reuse", () => {
  for (const policy of ["blmvisor", "full", "none"] as Policy[]) {
    it(`a released busy core is reset to power-on state (${policy})`, () => {
      const { m: reference, view: expected } = fresh({ policy, compatQemu: policy === "full" });
      const busy = busyMachine();
      busy.outb(0x80, 1); // an exit on a port no device decodes (counted under full)
      const core = busy.core;
      busy.release();
      const reused = Machine.create({ policy, compatQemu: policy === "full" });
      expect(reused.core).toBe(core);
      expect(reused.inspect()).toEqual(expected.inspect);
      expect(reused.shadows()).toEqual(expected.shadows);
      expect(reused.exits()).toEqual(expected.exits);
      expect([0, 1, 2].map((i) => reused.core.replayStatus(i))).toEqual(expected.replay);
      // And it behaves the same from there: a PIT tick through the PIC, its EOI, its exits.
      for (const m of [reference, reused]) {
        for (const [port, value] of [[0x20, 0x11], [0x21, 0x20], [0x21, 0x04], [0x21, 0x01], [0x21, 0xfe], [0x43, 0x34], [0x40, 0xa9], [0x40, 0x04]]) m.outb(port, value);
        m.writel(0xfee000f0, 0x1ff);
        m.writel(0xfee00350, 0x700);
        m.advanceTo(2_500_000);
      }
      expect(reused.inta()).toBe(reference.inta());
      reused.outb(0x20, 0x20);
      reference.outb(0x20, 0x20);
      expect(reused.inspect()).toEqual(reference.inspect());
      expect(reused.exits()).toEqual(reference.exits());
    });
  }

  it("a machine released twice gives its core away once", () => {
    const m = Machine.create();
    m.release();
    m.release();
    const a = Machine.create();
    const b = Machine.create();
    expect(a.core).not.toBe(b.core);
  });

  it("a reused core's memory stays bounded over thousands of captures and rebuilds", () => {
    // The core collects its garbage only at the exports that allocate: were one to skip it,
    // every round's records and reconstruction helpers would pile up and the memory would grow.
    const source = busyMachine();
    const cores = new Set([source.core]);
    const sizes = () => [...cores].map((core) => core.memory.buffer.byteLength);
    let early: number[] = [];
    for (let round = 0; round < 3000; round++) {
      const copy = Machine.reconstruct(source.capture());
      copy.inspect();
      cores.add(copy.core);
      copy.release();
      if (round === 300) early = sizes();
    }
    expect(cores.size).toBe(2);
    expect(sizes()).toEqual(early);
  });

  it("Machine.prepare leaves cores that create() resets", () => {
    Machine.prepare();
    const m = Machine.create({ lapic: false, ioapic: false });
    expect(m.inspect()).toEqual(Machine.create({ lapic: false, ioapic: false }).inspect());
  });
});
