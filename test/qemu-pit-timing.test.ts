// QEMU 7.2's 8254 timing is written twice: in the core (assembly/devices/pit-qemu.ts, the device
// under `!compat qemu`) and in the log importer (src/trace/qemu/timers.ts, which dates IRQ0
// changes). This property ties them: over random programs, both signal OUT0 at the same times
// with the same levels. docs/traces.md describes the importer.

import fc from "fast-check";
import { describe, expect, it } from "vitest";
import type { Machine } from "../src/core/machine.js";
import { QemuPitTiming, type TimedLevel } from "../src/trace/qemu/timers.js";
import { pitMachine, pitState } from "./arbitraries/pit.js";

const RUNS = process.env.DEEP ? 100_000 : 1000;
const PROPERTY_TIMEOUT_MS = process.env.DEEP ? 4 * 3_600_000 : 120_000;
const FRAME = 0;

type Write = { port: number; value: number; afterNs: number };

const channel = fc.integer({ min: 0, max: 2 });
/** Counts from 1 (and 0, meaning 0x10000) through every size, the short ones most often. */
const countValue = fc.oneof(
  { weight: 3, arbitrary: fc.integer({ min: 0, max: 40 }) },
  { weight: 2, arbitrary: fc.integer({ min: 0x41, max: 0x1ff }) },
  { weight: 1, arbitrary: fc.integer({ min: 0x200, max: 0xffff }) },
);
/** A control word (any mode, RW mode 1–3), then the count it asks for: the way drivers program. */
const programme = fc
  .record({ ch: channel, rw: fc.integer({ min: 1, max: 3 }), mode: fc.integer({ min: 0, max: 7 }), count: countValue })
  .map(({ ch, rw, mode, count }) => {
    const bytes = rw === 1 ? [count & 0xff] : rw === 2 ? [count >> 8] : [count & 0xff, count >> 8];
    return [{ port: 0x43, value: (ch << 6) | (rw << 4) | (mode << 1) }, ...bytes.map((value) => ({ port: 0x40 + ch, value }))];
  });
/** Any single write the importer follows: a data byte, a control word, a latch or read-back, gate 2. */
const anyWrite = fc.oneof(
  fc.record({ port: fc.integer({ min: 0x40, max: 0x43 }), value: fc.integer({ min: 0, max: 0xff }) }),
  fc.integer({ min: 0, max: 3 }).map((value) => ({ port: 0x61, value })),
);
const gap = fc.oneof(
  { weight: 3, arbitrary: fc.integer({ min: 0, max: 3_000 }) },
  { weight: 2, arbitrary: fc.integer({ min: 0, max: 200_000 }) },
  { weight: 1, arbitrary: fc.integer({ min: 0, max: 10_000_000 }) },
);
const program: fc.Arbitrary<Write[]> = fc
  .array(fc.tuple(fc.oneof({ weight: 2, arbitrary: programme }, { weight: 3, arbitrary: anyWrite.map((w) => [w]) }), gap), { maxLength: 25 })
  .map((parts) => parts.flatMap(([writes, afterNs]) => writes.map((w, i) => ({ ...w, afterNs: i === writes.length - 1 ? afterNs : 0 }))));

/** What the core's channel 0 drives: the IRQ0 level now and QEMU's next IRQ timer run, if any. */
function coreIrq0(m: Machine): { level: number; next: number | null } {
  const { out0, nextOut0Change } = pitState(m);
  return { level: out0, next: typeof nextOut0Change === "bigint" ? null : nextOut0Change };
}

/** Signals compared one by one in each gap; later ones only through the state at its end. */
const SIGNALS_PER_GAP = 6;

/** Runs the core to `until`, collecting the first levels the IRQ timer samples on the way. */
function runCore(m: Machine, until: number, into: TimedLevel[]): void {
  let { next } = coreIrq0(m);
  while (next !== null && next <= until && into.length < SIGNALS_PER_GAP) {
    m.advanceTo(next);
    const now = coreIrq0(m);
    into.push({ time: next, frame: FRAME, level: now.level as 0 | 1 });
    next = now.next;
  }
  m.advanceTo(until);
}

/** The importer's mirror, with the level its last signal set. */
class Mirror {
  readonly pit = new QemuPitTiming(FRAME);
  level = 0;

  /** Takes the signals due by `until`, collecting the first of them. */
  runTo(until: number, into: TimedLevel[] = []): void {
    for (let s = this.pit.peekIrq0(); s !== null && s.time <= until; s = this.pit.peekIrq0()) {
      if (into.length < SIGNALS_PER_GAP) into.push(s);
      this.level = s.level;
      this.pit.takeIrq0();
    }
  }

  irq0(): { level: number; next: number | null } {
    return { level: this.level, next: this.pit.peekIrq0()?.time ?? null };
  }
}

describe("QEMU 8254 timing: the importer's mirror and the core's compat-qemu device", () => {
  it("signal the same OUT0 changes at the same times over random programs", () => {
    fc.assert(
      fc.property(program, (writes) => {
        const m = pitMachine({ compatQemu: true });
        const mirror = new Mirror();
        let t = 0;
        for (const [i, { port, value, afterNs }] of writes.entries()) {
          const label = `after write ${i} (0x${port.toString(16)} ← 0x${value.toString(16)}) at ${t} ns`;
          m.outb(port, value);
          if (port === 0x61) mirror.pit.setGate2((value & 1) !== 0, t, FRAME);
          else mirror.pit.write(port, value, t, FRAME);
          // A count load on channel 0 signals its level at once.
          mirror.runTo(t);
          expect(mirror.irq0(), label).toEqual(coreIrq0(m));
          t += afterNs;
          const [fromCore, fromImporter] = [[] as TimedLevel[], [] as TimedLevel[]];
          runCore(m, t, fromCore);
          mirror.runTo(t, fromImporter);
          expect(fromImporter, `${label}, the next ${afterNs} ns`).toEqual(fromCore);
          expect(mirror.irq0(), `${label}, ${afterNs} ns on`).toEqual(coreIrq0(m));
        }
        m.release();
      }),
      { numRuns: RUNS },
    );
  }, PROPERTY_TIMEOUT_MS);
});
