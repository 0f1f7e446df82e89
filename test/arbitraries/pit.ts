// The 8254 and port 0x61 as tests see them: the spec's clock, typed views of inspect(), and
// random legal guest behaviour as plain steps on the Machine API (every mode, RW mode, BCD,
// counts up to 0xffff, half-written counts, latches, read-backs, gate changes, interleaved time).

import fc from "fast-check";
import { Machine, type MachineOptions } from "../../src/core/machine.js";
import { PIT_HZ as PIT_INPUT_HZ } from "../../assembly/common/hardware.js";
import type { Step } from "./steps.js";

const PIT_HZ = BigInt(PIT_INPUT_HZ);
const NS = 1_000_000_000n;

/** E(t): PIT clock edges at or before t ns. */
export function edgesAt(t: number): number {
  return Number((BigInt(t) * PIT_HZ) / NS);
}
/** Time of PIT clock edge n: the first ns at which E reaches n. */
export function edgeTime(n: number): number {
  return Number((BigInt(n) * NS + PIT_HZ - 1n) / PIT_HZ);
}

export interface PitChannelState {
  mode: number;
  rwMode: number;
  bcd: number;
  countRegister: number;
  countsWritten: number;
  writeMsbNext: number;
  heldLsb: number;
  readMsbNext: number;
  countLatched: number;
  statusLatched: number;
  latchedCount: number;
  latchedStatus: number;
  gate: number;
  count: number;
  out: number;
  nullCount: number;
  counting: number;
  armed: number;
  loadPending: number;
  halfOdd: number;
  nextOutChange: number | bigint;
}
export interface PitState {
  channels: PitChannelState[];
  port61: { speaker: number; nmiEnables: number; refreshToggle: number };
  out0: number;
  nextOut0Change: number | bigint;
}

/** Write-only or hidden register state: what the shadow must mirror, by the same names. */
export const PIT_SHADOW_FIELDS = [
  "mode", "rwMode", "bcd", "countRegister", "countsWritten", "writeMsbNext", "heldLsb", "readMsbNext", "countLatched", "statusLatched",
] as const;

/** A board with the PIT and, unless asked for, no interrupt controllers. */
export function pitMachine(options: MachineOptions = {}): Machine {
  return Machine.create({ pic: false, lapic: false, ioapic: false, ...options });
}

/**
 * The PIT's state at the machine's current time, as the guest sees it: where the hypervisor
 * holds a latch it took over at a capture (and answers its reads), the latch and the read
 * flip-flop are the shadow's, and of a latched count only the bytes still to be read. The board runs the PIT lazily, so a side-effect-free access (a
 * read of the control port) first brings it to now.
 */
export function pitState(m: Machine): PitState {
  m.inb(0x43);
  const state = m.inspect().pit as unknown as PitState;
  const held = (m.shadows().pit as unknown as { channels: HeldLatches[] }).channels;
  state.channels.forEach((c, i) => {
    const h = held[i];
    if (h.heldCount) Object.assign(c, { countLatched: h.countLatched, latchedCount: h.heldCountValue });
    if (h.heldStatus) Object.assign(c, { statusLatched: 1, latchedStatus: h.heldStatusValue });
    if (h.heldCount || h.heldStatus) c.readMsbNext = h.readMsbNext;
    // Of a latched count, the guest can read only the bytes still pending.
    c.latchedCount &= LATCH_BYTES[c.countLatched];
  });
  return state;
}

/** The latched count's bits still to be read, by latch shape (none, LSB, MSB, LSB then MSB). */
const LATCH_BYTES = [0, 0xff, 0xff00, 0xffff];

interface HeldLatches {
  heldCount: number;
  heldStatus: number;
  heldCountValue: number;
  heldStatusValue: number;
  countLatched: number;
  readMsbNext: number;
}

const channel = fc.integer({ min: 0, max: 2 });
const byte = fc.integer({ min: 0, max: 0xff });
/** Counts small enough for their events to happen within a scenario, and any count. */
const countByte = fc.oneof({ weight: 3, arbitrary: fc.integer({ min: 0, max: 40 }) }, { weight: 1, arbitrary: byte });

/** A control word for channel `ch`: any mode (6 and 7 too), RW mode 1–3, binary or BCD. */
const controlWordFor = (ch: number): fc.Arbitrary<Step> =>
  fc
    .record({ rw: fc.integer({ min: 1, max: 3 }), mode: fc.integer({ min: 0, max: 7 }), bcd: fc.constantFrom(0, 0, 0, 1) })
    .map(({ rw, mode, bcd }) => ({ op: "outb", port: 0x43, value: (ch << 6) | (rw << 4) | (mode << 1) | bcd }));
const controlWord: fc.Arbitrary<Step[]> = channel.chain(controlWordFor).map((s) => [s]);
/** An MSB: mostly 0 or 1 (short counts), else any, for counts up to 0xffff. */
const msbByte = fc.oneof({ weight: 3, arbitrary: fc.constant(0) }, { weight: 1, arbitrary: fc.constant(1) }, { weight: 2, arbitrary: byte });
/** A count: one byte, or an LSB and an MSB, sometimes only half of it. */
const countWrite: fc.Arbitrary<Step[]> = fc
  .tuple(channel, countByte, msbByte, fc.integer({ min: 0, max: 5 }))
  .map(([ch, lsb, msb, shape]) => {
    const port = 0x40 + ch;
    if (shape === 0) return [{ op: "outb", port, value: lsb }];
    return [
      { op: "outb", port, value: lsb },
      { op: "outb", port, value: msb },
    ];
  });
const latch: fc.Arbitrary<Step[]> = channel.map((ch) => [{ op: "outb", port: 0x43, value: ch << 6 }]);
/** A read-back command: count and/or status of any channels (sometimes a no-op). */
const readBack: fc.Arbitrary<Step[]> = fc
  .record({ noCount: fc.constantFrom(0, 1), noStatus: fc.constantFrom(0, 1), channels: fc.integer({ min: 1, max: 7 }) })
  .map(({ noCount, noStatus, channels }) => [{ op: "outb", port: 0x43, value: 0xc0 | (noCount << 5) | (noStatus << 4) | (channels << 1) }]);
const dataRead: fc.Arbitrary<Step[]> = fc
  .tuple(channel, fc.integer({ min: 1, max: 3 }))
  .map(([ch, n]) => Array.from({ length: n }, (): Step => ({ op: "inb", port: 0x40 + ch })));
/** Port 0x61: gate 2 and the other writable bits, then sometimes a read. */
const port61: fc.Arbitrary<Step[]> = fc
  .tuple(fc.integer({ min: 0, max: 0x0f }), fc.boolean())
  .map(([value, read]) => [{ op: "outb", port: 0x61, value }, ...(read ? [{ op: "inb", port: 0x61 } as Step] : [])]);

/** Time steps: within a PIT clock, a few clocks, or (long) up to 20 ms. */
function advance(long: boolean): fc.Arbitrary<Step[]> {
  const ns = fc.oneof(
    { weight: 3, arbitrary: fc.integer({ min: 0, max: 900 }) },
    { weight: 3, arbitrary: fc.integer({ min: 1, max: 3_000 }) },
    { weight: long ? 2 : 0, arbitrary: fc.integer({ min: 1, max: 20_000_000 }) },
  );
  return ns.map((n) => [{ op: "advance", ns: n }]);
}

function pitAction(long: boolean): fc.Arbitrary<Step[]> {
  return fc.oneof(
    { weight: 3, arbitrary: controlWord },
    { weight: 4, arbitrary: countWrite },
    { weight: 2, arbitrary: latch },
    { weight: 2, arbitrary: readBack },
    { weight: 3, arbitrary: dataRead },
    { weight: 2, arbitrary: port61 },
    { weight: 5, arbitrary: advance(long) },
  );
}

/** Whether a step is a control word that programs channel `ch` (not a latch or read-back). */
const programs = (s: Step, ch: number) => s.op === "outb" && s.port === 0x43 && s.value >> 6 === ch && (s.value & 0x30) !== 0;

/**
 * Puts a control word before any count written to a channel no control word has programmed yet
 * (such counts are undefined on a real 8254): `firstWords[ch]` for channel `ch`.
 */
function programmedFirst(steps: Step[], firstWords: Step[]): Step[] {
  const programmed = [false, false, false];
  return steps.flatMap((s) => {
    for (let ch = 0; ch < 3; ch++) if (programs(s, ch)) programmed[ch] = true;
    const ch = s.op === "outb" ? s.port - 0x40 : -1;
    if (ch < 0 || ch > 2 || programmed[ch]) return [s];
    programmed[ch] = true;
    return [firstWords[ch], s];
  });
}

/**
 * Random guest behaviour, every count after a control word for its channel. A short scenario
 * (`long` false) of at most 30 actions spans at most 90 µs, so all of it lies inside a
 * reconstruction window of 100 µs or more; long ones jump up to 20 ms at a time.
 */
export function pitScenario(long: boolean, maxActions = 30): fc.Arbitrary<Step[]> {
  return fc
    .tuple(fc.array(pitAction(long), { maxLength: maxActions, size: "max" }), fc.tuple(controlWordFor(0), controlWordFor(1), controlWordFor(2)))
    .map(([actions, firstWords]) => programmedFirst(actions.flat(), firstWords));
}
