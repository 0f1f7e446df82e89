// The 8254 and port 0x61 against the 82C54 datasheet on the spec's clock (a count loads at the
// first PIT clock edge after its write; E(t) = floor(t * 1193182 / 1e9)), and QEMU 7.2's
// deviations under compatQemu.

import { describe, expect, it } from "vitest";
import { Machine, type MachineOptions } from "../src/core/machine.js";
import { edgeTime, edgesAt, pitMachine, pitState } from "./arbitraries/pit.js";

const CONTROL = 0x43;
const PORT_61 = 0x61;
const data = (ch: number) => 0x40 + ch;
const control = (ch: number, rw: number, mode: number, bcd = 0) => (ch << 6) | (rw << 4) | (mode << 1) | bcd;

/** Counter latch command, then the two bytes (RW mode 3). */
function latchedCount(m: Machine, ch: number): number {
  m.outb(CONTROL, ch << 6);
  const lo = m.inb(data(ch));
  return lo | (m.inb(data(ch)) << 8);
}
/** Read-back of one channel's status byte. */
function status(m: Machine, ch: number): number {
  m.outb(CONTROL, 0xe0 | (2 << ch));
  return m.inb(data(ch));
}
const outOf = (m: Machine, ch: number) => status(m, ch) >> 7;

/** Programs channel `ch` (RW 3) at time `at` and returns the edge at which the count loads. */
function program(m: Machine, ch: number, mode: number, count: number, at = 1000, bcd = 0): number {
  m.advanceTo(at);
  m.outb(CONTROL, control(ch, 3, mode, bcd));
  m.outb(data(ch), count & 0xff);
  m.outb(data(ch), count >> 8);
  return edgesAt(at) + 1;
}

/** Runs `m` to the start of PIT clock edge `n` (or `offset` ns from it). */
function toEdge(m: Machine, n: number, offset = 0): void {
  m.advanceTo(edgeTime(n) + offset);
}

describe("82C54 counting per mode", () => {
  it("loads a count at the edge after its write, with NULL COUNT set until then (mode 2)", () => {
    const m = pitMachine();
    const L = program(m, 0, 2, 1000, 1100);
    expect(L).toBe(2);
    expect(status(m, 0)).toBe(0xf4); // OUT high, NULL COUNT, RW 3, mode 2
    toEdge(m, L, -1);
    expect(status(m, 0) & 0x40).toBe(0x40);
    toEdge(m, L);
    expect(status(m, 0)).toBe(0xb4);
    expect(latchedCount(m, 0)).toBe(1000);
    m.advanceTo(500_000);
    expect(latchedCount(m, 0)).toBe(1000 - (edgesAt(500_000) - L));
  });

  it("mode 2 drives OUT low for one clock at count 1 and reloads every N clocks", () => {
    const m = pitMachine();
    const L = program(m, 0, 2, 5);
    for (let period = 0; period < 3; period++) {
      const base = L + 5 * period;
      toEdge(m, base + 3);
      expect([latchedCount(m, 0), outOf(m, 0)]).toEqual([2, 1]);
      toEdge(m, base + 4);
      expect([latchedCount(m, 0), outOf(m, 0)]).toEqual([1, 0]);
      toEdge(m, base + 5);
      expect([latchedCount(m, 0), outOf(m, 0)]).toEqual([5, 1]);
    }
  });

  it("mode 0 holds OUT low until terminal count, then high while the count wraps", () => {
    const m = pitMachine();
    m.outb(CONTROL, control(0, 3, 0));
    expect(outOf(m, 0)).toBe(0);
    const L = program(m, 0, 0, 10);
    toEdge(m, L + 9, 837);
    expect([latchedCount(m, 0), outOf(m, 0)]).toEqual([1, 0]);
    toEdge(m, L + 10);
    expect([latchedCount(m, 0), outOf(m, 0)]).toEqual([0, 1]);
    toEdge(m, L + 13);
    expect([latchedCount(m, 0), outOf(m, 0)]).toEqual([0xfffd, 1]);
  });

  it("mode 0: the first byte of a two-byte count stops counting and drives OUT low; the second reloads", () => {
    const m = pitMachine();
    const L = program(m, 0, 0, 3);
    toEdge(m, L + 5);
    expect(outOf(m, 0)).toBe(1);
    m.outb(data(0), 0x20);
    const frozen = latchedCount(m, 0);
    expect(outOf(m, 0)).toBe(0);
    toEdge(m, L + 50);
    expect(latchedCount(m, 0)).toBe(frozen);
    expect(status(m, 0) & 0x40).toBe(0); // NULL COUNT only once the count is complete
    m.outb(data(0), 0x00);
    const reload = edgesAt(m.now()) + 1;
    toEdge(m, reload);
    expect(latchedCount(m, 0)).toBe(0x20);
    toEdge(m, reload + 0x20);
    expect(outOf(m, 0)).toBe(1);
  });

  it("mode 1 (channel 2): a gate rising edge triggers an N-clock low pulse and retriggers", () => {
    const m = pitMachine();
    program(m, 2, 1, 4);
    expect(outOf(m, 2)).toBe(1);
    m.advanceTo(10_000);
    m.outb(PORT_61, 0x01);
    const T = edgesAt(10_000) + 1;
    toEdge(m, T);
    expect([latchedCount(m, 2), outOf(m, 2)]).toEqual([4, 0]);
    toEdge(m, T + 3);
    m.outb(PORT_61, 0x00);
    m.outb(PORT_61, 0x01); // retrigger just before terminal count
    toEdge(m, T + 4);
    expect([latchedCount(m, 2), outOf(m, 2)]).toEqual([4, 0]);
    toEdge(m, T + 8);
    expect([latchedCount(m, 2), outOf(m, 2)]).toEqual([0, 1]);
  });

  it("mode 3 square wave: even counts count down by 2, odd counts are high (N+1)/2 and low (N-1)/2 clocks", () => {
    for (const [n, high, highCounts, lowCounts] of [
      [6, 3, [6, 4, 2], [6, 4, 2]],
      [7, 4, [6, 4, 2, 0], [6, 4, 2]],
    ] as [number, number, number[], number[]][]) {
      const m = pitMachine();
      const L = program(m, 0, 3, n);
      const seen: [number, number][] = [];
      for (let k = 0; k < 2 * n; k++) {
        toEdge(m, L + k);
        seen.push([latchedCount(m, 0), outOf(m, 0)]);
      }
      const cycle = [...highCounts.map((c) => [c, 1]), ...lowCounts.map((c) => [c, 0])];
      expect(seen).toEqual([...cycle, ...cycle]);
      expect(highCounts.length).toBe(high);
    }
  });

  it("mode 4 strobes OUT low for exactly one clock at terminal count, once", () => {
    const m = pitMachine();
    const L = program(m, 0, 4, 3);
    const outs = [];
    for (let k = 0; k < 6; k++) {
      toEdge(m, L + k);
      outs.push(outOf(m, 0));
    }
    expect(outs).toEqual([1, 1, 1, 0, 1, 1]);
  });

  it("mode 5 (channel 2) strobes N clocks after a gate trigger", () => {
    const m = pitMachine();
    program(m, 2, 5, 2);
    m.outb(PORT_61, 0x01);
    const T = edgesAt(m.now()) + 1;
    const outs = [];
    for (let k = 0; k < 4; k++) {
      toEdge(m, T + k);
      outs.push(outOf(m, 2));
    }
    expect(outs).toEqual([1, 1, 0, 1]);
  });

  it("modes 6 and 7 act as 2 and 3 and read back as written", () => {
    const m = pitMachine();
    const L = program(m, 0, 6, 4);
    toEdge(m, L + 3);
    expect(outOf(m, 0)).toBe(0);
    expect(status(m, 0) & 0x0e).toBe(0x0c);
    const L1 = program(m, 1, 7, 4, m.now());
    toEdge(m, L1 + 2);
    expect([latchedCount(m, 1), outOf(m, 1)]).toEqual([4, 0]);
  });

  it("counts in BCD: 0 means 10000 and the count wraps from 0 to 9999", () => {
    const m = pitMachine();
    const L = program(m, 0, 2, 0x0000, 1000, 1);
    toEdge(m, L + 1);
    expect(latchedCount(m, 0)).toBe(0x9999);
    toEdge(m, L + 9999);
    expect(outOf(m, 0)).toBe(0);
    toEdge(m, L + 10000);
    expect([latchedCount(m, 0), outOf(m, 0)]).toEqual([0x0000, 1]);
    const L0 = program(m, 1, 0, 0x0012, m.now(), 1);
    toEdge(m, L0 + 13);
    expect(latchedCount(m, 1)).toBe(0x9999);
  });

  it("takes a new count at the next period in mode 2, at the next edge in mode 4, at the next trigger in mode 1", () => {
    const m = pitMachine();
    const L = program(m, 0, 2, 10);
    toEdge(m, L + 3);
    m.outb(data(0), 4);
    m.outb(data(0), 0);
    expect(status(m, 0) & 0x40).toBe(0x40);
    toEdge(m, L + 9);
    expect(latchedCount(m, 0)).toBe(1);
    toEdge(m, L + 10);
    expect([latchedCount(m, 0), status(m, 0) & 0x40]).toEqual([4, 0]);

    const L4 = program(m, 1, 4, 100, m.now());
    toEdge(m, L4 + 10);
    m.outb(data(1), 7);
    m.outb(data(1), 0);
    toEdge(m, L4 + 11);
    expect(latchedCount(m, 1)).toBe(7);

    program(m, 2, 1, 5, m.now());
    m.outb(PORT_61, 1);
    const T = edgesAt(m.now()) + 1;
    toEdge(m, T + 1);
    m.outb(data(2), 9);
    m.outb(data(2), 0);
    toEdge(m, T + 2);
    expect(latchedCount(m, 2)).toBe(3);
    m.outb(PORT_61, 0);
    m.outb(PORT_61, 1);
    toEdge(m, edgesAt(m.now()) + 1);
    expect(latchedCount(m, 2)).toBe(9);
  });

  it("a control word resets OUT (low in mode 0, high otherwise), sets NULL COUNT and releases a latch", () => {
    const m = pitMachine();
    const L = program(m, 0, 2, 10);
    toEdge(m, L + 9);
    expect(outOf(m, 0)).toBe(0);
    m.outb(CONTROL, 0x00); // latch
    m.outb(CONTROL, control(0, 3, 3));
    expect(status(m, 0)).toBe(0xf6);
    expect(pitState(m).channels[0].countLatched).toBe(0);
    m.outb(CONTROL, control(0, 3, 0));
    expect(status(m, 0)).toBe(0x70);
  });
});

describe("82C54 read and write formats", () => {
  it("LSB-only and MSB-only counts write and read one byte", () => {
    const m = pitMachine();
    m.advanceTo(1000);
    m.outb(CONTROL, control(0, 1, 2));
    m.outb(data(0), 0x34);
    m.outb(CONTROL, control(1, 2, 2));
    m.outb(data(1), 0x12);
    const L = edgesAt(1000) + 1;
    toEdge(m, L + 4);
    expect(m.inb(data(0))).toBe(0x34 - 4);
    expect(m.inb(data(1))).toBe(0x11); // 0x1200 - 4 = 0x11fc
    expect(pitState(m).channels.map((c) => c.countRegister)).toEqual([0x34, 0x1200, 0]);
  });

  it("LSB-then-MSB reads alternate through the read flip-flop, also across a latch", () => {
    const m = pitMachine();
    const L = program(m, 0, 2, 0x1234);
    toEdge(m, L + 2);
    expect(m.inb(data(0))).toBe(0x32); // live LSB of 0x1232
    m.outb(CONTROL, 0x00); // latch 0x1232 with the flip-flop at the MSB
    toEdge(m, L + 0x100);
    expect(m.inb(data(0))).toBe(0x12); // the latch's MSB, and the latch is released
    expect(m.inb(data(0))).toBe(0x34); // live: 0x1234 - 0x100 = 0x1134
    expect(m.inb(data(0))).toBe(0x11);
  });

  it("a second latch before the first is read is ignored", () => {
    const m = pitMachine();
    const L = program(m, 0, 2, 500);
    toEdge(m, L + 10);
    m.outb(CONTROL, 0x00);
    toEdge(m, L + 20);
    m.outb(CONTROL, 0x00);
    m.outb(CONTROL, 0xd2); // read-back of channel 0's count: also ignored
    expect(m.inb(data(0)) | (m.inb(data(0)) << 8)).toBe(490);
    expect(latchedCount(m, 0)).toBe(480);
  });

  it("read-back latches counts and statuses of several channels; status reads first; first latch wins", () => {
    const m = pitMachine();
    const L = program(m, 0, 2, 300);
    program(m, 1, 3, 300, m.now());
    toEdge(m, L + 50);
    m.outb(CONTROL, 0xe4); // status of channel 1 only
    m.outb(CONTROL, 0xc6); // count and status of channels 0 and 1: channel 1's status is kept
    toEdge(m, L + 70);
    m.outb(CONTROL, 0xe2); // status of channel 0 again: ignored
    expect(m.inb(data(0))).toBe(0xb4);
    expect(m.inb(data(0)) | (m.inb(data(0)) << 8)).toBe(250);
    expect(m.inb(data(1))).toBe(0xb6);
    const c1 = m.inb(data(1)) | (m.inb(data(1)) << 8);
    expect(c1).toBe(300 - 2 * 50);
    expect(pitState(m).channels.map((c) => [c.countLatched, c.statusLatched])).toEqual([[0, 0], [0, 0], [0, 0]]);
  });

  it("status latches independently of the count and survives count writes", () => {
    const m = pitMachine();
    const L = program(m, 0, 0, 100);
    toEdge(m, L + 1);
    m.outb(CONTROL, 0xe2);
    m.outb(data(0), 5);
    m.outb(data(0), 0);
    expect(m.inb(data(0))).toBe(0x30); // OUT low, count loaded when latched
    expect(status(m, 0)).toBe(0x70); // now NULL COUNT: the new count is not loaded yet
  });
});

describe("gates and port 0x61", () => {
  it("gate low pauses modes 0/4; in modes 2/3 it forces OUT high and a rising edge reloads", () => {
    const m = pitMachine();
    m.outb(PORT_61, 0x01);
    const L = program(m, 2, 0, 50);
    toEdge(m, L + 10);
    m.outb(PORT_61, 0x00);
    toEdge(m, L + 30);
    expect(latchedCount(m, 2)).toBe(40);
    m.outb(PORT_61, 0x01);
    toEdge(m, L + 40);
    expect(latchedCount(m, 2)).toBe(30);

    const L2 = program(m, 2, 2, 6, m.now());
    toEdge(m, L2 + 5);
    expect(outOf(m, 2)).toBe(0);
    m.outb(PORT_61, 0x00);
    expect(outOf(m, 2)).toBe(1);
    toEdge(m, L2 + 20);
    expect(latchedCount(m, 2)).toBe(1);
    m.outb(PORT_61, 0x01);
    const T = edgesAt(m.now()) + 1;
    toEdge(m, T + 2);
    expect(latchedCount(m, 2)).toBe(4);
  });

  it("reads back gate 2, speaker and NMI enables, toggles refresh every 18 clocks, shows OUT2", () => {
    const m = pitMachine();
    m.outb(PORT_61, 0xff);
    toEdge(m, 18 * 5);
    expect(m.inb(PORT_61)).toBe(0x1f); // OUT2 low: channel 2 never programmed
    toEdge(m, 18 * 6);
    expect(m.inb(PORT_61)).toBe(0x0f);
    const L = program(m, 2, 0, 4, m.now());
    toEdge(m, L + 4);
    expect(m.inb(PORT_61) & 0x20).toBe(0x20);
    expect(m.inb(CONTROL)).toBe(0xff);
  });

  it("OUT0 drives IRQ0: a programmed PIC takes vector 0x20 when the period ends", () => {
    const m = pitMachine({ pic: true });
    m.advanceTo(1000);
    m.outb(CONTROL, control(0, 3, 2)); // OUT0 rises before the PIC starts watching edges
    for (const [port, value] of [[0x20, 0x11], [0x21, 0x20], [0x21, 0x04], [0x21, 0x01], [0x21, 0xfe]]) m.outb(port, value);
    m.outb(data(0), 100);
    m.outb(data(0), 0);
    const L = edgesAt(1000) + 1;
    toEdge(m, L + 100, -1);
    expect(m.inta()).toBe(-1);
    toEdge(m, L + 100);
    expect(m.inta()).toBe(0x20);
  });
});

describe("QEMU 7.2 compatibility (compatQemu)", () => {
  const qemu = (options: MachineOptions = {}) => pitMachine({ compatQemu: true, ...options });
  /** QEMU's ticks since a write at `w`: floor((t - w) * f / 1e9). */
  const ticks = (t: number, w: number) => edgesAt(t - w);

  it("loads at once, counts from the write time and has no NULL COUNT", () => {
    const m = qemu();
    m.advanceTo(1100);
    m.outb(CONTROL, control(0, 3, 2));
    m.outb(data(0), 0xe8);
    m.outb(data(0), 0x03);
    expect(status(m, 0)).toBe(0x34); // mode 2 OUT low right after the load, no NULL COUNT
    for (const t of [1100, 1938, 1939, 500_000]) {
      m.advanceTo(t);
      expect(latchedCount(m, 0)).toBe(1000 - (ticks(t, 1100) % 1000));
    }
  });

  it("shapes OUT and counts with QEMU's formulas (mode 2 high at multiples of N, mode 3 odd counts)", () => {
    const m = qemu();
    m.outb(CONTROL, control(0, 3, 2));
    m.outb(data(0), 5);
    m.outb(data(0), 0);
    m.outb(CONTROL, control(1, 3, 3));
    m.outb(data(1), 5);
    m.outb(data(1), 0);
    const seen = [];
    for (let d = 0; d < 6; d++) {
      m.advanceTo(edgeTime(d));
      seen.push([outOf(m, 0), latchedCount(m, 1), outOf(m, 1)]);
    }
    expect(seen).toEqual([
      [0, 5, 1],
      [0, 3, 1],
      [0, 1, 1],
      [0, 4, 0],
      [0, 2, 0],
      [1, 5, 1],
    ]);
  });

  it("keeps a latch across a control word and reads a latch without moving the read flip-flop", () => {
    const m = qemu();
    m.outb(CONTROL, control(0, 3, 0));
    m.outb(data(0), 0x00);
    m.outb(data(0), 0x10);
    m.advanceTo(edgeTime(16));
    m.outb(CONTROL, 0x00);
    m.outb(CONTROL, control(0, 3, 0));
    expect(m.inb(data(0))).toBe(0xf0);
    m.advanceTo(edgeTime(32));
    m.inb(data(0)); // the latch's MSB
    expect(m.inb(data(0))).toBe(0xe0); // live LSB of 0x0fe0: the flip-flop was untouched
  });

  it("port 0x61: refresh flips on every read, bits 2-3 read 0; 0x43 reads 0", () => {
    const m = qemu();
    m.outb(PORT_61, 0x0f); // the gate's rising edge restarts channel 2's power-on square wave: OUT2 high
    expect([m.inb(PORT_61), m.inb(PORT_61), m.inb(PORT_61)]).toEqual([0x33, 0x23, 0x33]);
    expect(m.inb(CONTROL)).toBe(0);
  });

  it("powers on counting: mode 3, count 0x10000 from time 0, IRQ0 sampled by QEMU's timer", () => {
    const m = qemu({ pic: true });
    const s = pitState(m).channels[0];
    expect([s.mode, s.rwMode, s.countRegister]).toEqual([3, 0, 0]);
    // The timer first samples at tick 32768 (still high there), then finds OUT low 1 ns later.
    const first = Math.floor((32768 * 1e9) / 1193182);
    expect(Number(pitState(m).nextOut0Change)).toBe(first);
    m.advanceTo(first + 1);
    expect(pitState(m).out0).toBe(0);
  });

  it("restarts on a gate-2 rising edge in modes 1, 2, 3 and 5 only; a low gate never pauses", () => {
    const m = qemu();
    m.outb(CONTROL, control(2, 3, 0));
    m.outb(data(2), 100);
    m.outb(data(2), 0);
    m.advanceTo(10_000);
    m.outb(PORT_61, 1);
    m.outb(PORT_61, 0);
    m.advanceTo(20_000);
    expect(latchedCount(m, 2)).toBe(100 - ticks(20_000, 0));
    m.outb(CONTROL, control(2, 3, 2));
    m.outb(PORT_61, 1);
    m.advanceTo(30_000);
    expect(latchedCount(m, 2)).toBe(100 - (ticks(30_000, 20_000) % 100));
  });
});
