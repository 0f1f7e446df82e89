// Random legal guest behaviour for the 8259A pair, as plain steps on the Machine API, so that
// device, migration and combined all-device properties can share it: initialisation in every
// variant (and sometimes left half done), masks, all OCW2 commands, OCW3 modes and polls,
// reads, ELCR, ISA line changes, acknowledges and the passage of time.

import fc from "fast-check";
import { Machine, type MachineOptions } from "../../src/core/machine.js";
import { type Step, applyStep } from "./steps.js";

export interface PicChipState {
  irr: number;
  isr: number;
  imr: number;
  inputs: number;
  elcr: number;
  icw1: number;
  icw2: number;
  icw3: number;
  icw4: number;
  initStep: number;
  readIsr: number;
  specialMask: number;
  pollPending: number;
  lowestPriority: number;
  rotateInAeoi: number;
}
export interface PicState {
  master: PicChipState;
  slave: PicChipState;
}

/** Written only through the ports, never readable: what the shadow must mirror. */
export const PIC_HIDDEN_FIELDS = [
  "icw1", "icw2", "icw3", "icw4", "initStep", "readIsr", "specialMask", "pollPending", "lowestPriority", "rotateInAeoi",
] as const;

/** A board with only the PICs: the master's INT goes straight to the CPU, ISA lines are free. */
export function picMachine(options: MachineOptions = {}): Machine {
  return Machine.create({ lapic: false, ioapic: false, pit: false, pitIrq0: false, ...options });
}

/** The PC initialisation (vectors 0x20/0x28, slave on IR2), every level unmasked. */
export function pcInitSteps(masterIcw4 = 0x01, slaveIcw4 = 0x01): Step[] {
  const chips = [
    [0x20, 0x20, 0x04, masterIcw4],
    [0xa0, 0x28, 0x02, slaveIcw4],
  ];
  return chips.flatMap(([cmd, base, icw3, icw4]): Step[] => [
    { op: "outb", port: cmd, value: 0x11 },
    ...[base, icw3, icw4, 0x00].map((value): Step => ({ op: "outb", port: cmd + 1, value })),
  ]);
}

export function initPicPair(m: Machine, { masterIcw4 = 0x01, slaveIcw4 = 0x01 } = {}): void {
  for (const s of pcInitSteps(masterIcw4, slaveIcw4)) applyStep(m, s);
}

const commandPort = fc.constantFrom(0x20, 0xa0);
const byte = fc.integer({ min: 0, max: 0xff });
const level = fc.integer({ min: 0, max: 7 });

/** ICW1: vector address bits A7–A5, LTIM, ADI, SNGL, IC4 — cascade with ICW4 most often. */
const icw1 = fc.oneof(
  { weight: 3, arbitrary: fc.constantFrom(0x11, 0x19) },
  { weight: 2, arbitrary: byte.map((v) => v | 0x10) },
);
const icw3For = (cmd: number) => fc.oneof({ weight: 3, arbitrary: fc.constant(cmd === 0x20 ? 0x04 : 0x02) }, { weight: 1, arbitrary: byte });
/** ICW4: 8086 mode, sometimes AEOI, SFNM, buffered; now and then MCS-80/85 mode. */
const icw4 = fc.oneof(
  { weight: 3, arbitrary: fc.constantFrom(0x01, 0x03, 0x11, 0x13) },
  { weight: 1, arbitrary: fc.integer({ min: 0, max: 0x1f }) },
);

/** A whole ICW sequence for one chip, or (one time in five) only its first part. */
export const picInitSteps: fc.Arbitrary<Step[]> = commandPort.chain((cmd) =>
  fc.tuple(icw1, byte, icw3For(cmd), icw4, fc.integer({ min: 0, max: 4 }), fc.integer({ min: 1, max: 3 })).map(
    ([w1, w2, w3, w4, cutChance, cutAt]) => {
      const words = [w2];
      if ((w1 & 0x02) === 0) words.push(w3);
      if ((w1 & 0x01) !== 0) words.push(w4);
      const kept = cutChance === 0 ? Math.min(cutAt, words.length) - 1 : words.length;
      return [
        { op: "outb", port: cmd, value: w1 },
        ...words.slice(0, kept).map((value): Step => ({ op: "outb", port: cmd + 1, value })),
      ];
    },
  ),
);

/** OCW1: mostly all open or one level masked, sometimes any mask. */
const mask = fc.oneof(fc.constant(0), level.map((l) => 1 << l), byte);
const ocw1: fc.Arbitrary<Step> = fc.record({ cmd: commandPort, value: mask }).map(({ cmd, value }) => ({ op: "outb", port: cmd + 1, value }));
/** OCW2: any of the eight commands with any level. */
const ocw2: fc.Arbitrary<Step> = fc
  .record({ cmd: commandPort, command: fc.integer({ min: 0, max: 7 }), level })
  .map(({ cmd, command, level }) => ({ op: "outb", port: cmd, value: (command << 5) | level }));
/** OCW3: any mix of poll, read-register select and special-mask set/reset. */
const ocw3: fc.Arbitrary<Step> = fc
  .record({ cmd: commandPort, bits: fc.integer({ min: 0, max: 0x67 }) })
  .map(({ cmd, bits }) => ({ op: "outb", port: cmd, value: 0x08 | (bits & 0x67) }));
const eoi: fc.Arbitrary<Step> = commandPort.map((cmd) => ({ op: "outb", port: cmd, value: 0x20 }));
/** A poll: the command, then the read that answers it (sometimes left pending). */
const poll: fc.Arbitrary<Step[]> = fc.tuple(commandPort, fc.constantFrom(0, 1, 1, 1, 1, 2)).map(([cmd, read]) => [
  { op: "outb", port: cmd, value: 0x0c },
  ...(read === 0 ? [] : [{ op: "inb", port: cmd + read - 1 } as Step]),
]);
const read: fc.Arbitrary<Step> = fc.constantFrom(0x20, 0x21, 0xa0, 0xa1, 0x4d0, 0x4d1).map((port) => ({ op: "inb", port }));
const elcr: fc.Arbitrary<Step> = fc.record({ port: fc.constantFrom(0x4d0, 0x4d1), value: byte }).map(({ port, value }) => ({ op: "outb", port, value }));
const isaLine = fc.integer({ min: 0, max: 15 });
const line: fc.Arbitrary<Step> = fc
  .record({ line: isaLine, level: fc.constantFrom<0 | 1>(0, 1, 1) })
  .map(({ line, level }) => ({ op: "irq", line, level }));
const inta: fc.Arbitrary<Step> = fc.constant({ op: "inta" });
/** A device raises its line and the CPU takes an interrupt (not necessarily that one). */
const interrupt: fc.Arbitrary<Step[]> = isaLine.map((line) => [{ op: "irq", line, level: 1 }, { op: "inta" }]);
/** A short pulse: an edge request whose input is gone before any acknowledge. */
const pulse: fc.Arbitrary<Step[]> = isaLine.map((line) => [
  { op: "irq", line, level: 1 },
  { op: "irq", line, level: 0 },
]);
const advance: fc.Arbitrary<Step> = fc.integer({ min: 1, max: 20_000 }).map((ns) => ({ op: "advance", ns }));

/** One guest action, as one or more steps. */
export const picAction: fc.Arbitrary<Step[]> = fc.oneof(
  { weight: 1, arbitrary: picInitSteps },
  { weight: 2, arbitrary: ocw1.map((s) => [s]) },
  { weight: 3, arbitrary: ocw2.map((s) => [s]) },
  { weight: 2, arbitrary: ocw3.map((s) => [s]) },
  { weight: 2, arbitrary: eoi.map((s) => [s]) },
  { weight: 2, arbitrary: poll },
  { weight: 1, arbitrary: read.map((s) => [s]) },
  { weight: 1, arbitrary: elcr.map((s) => [s]) },
  { weight: 6, arbitrary: line.map((s) => [s]) },
  { weight: 1, arbitrary: pulse },
  { weight: 5, arbitrary: interrupt },
  { weight: 2, arbitrary: inta.map((s) => [s]) },
  { weight: 1, arbitrary: advance.map((s) => [s]) },
);

/** A PC-style initialisation (most of the time), then random actions. */
export function picScenario(maxActions = 40): fc.Arbitrary<Step[]> {
  const pcInit = pcInitSteps();
  return fc
    .tuple(fc.constantFrom(true, true, true, false), fc.array(picAction, { maxLength: maxActions, size: "max" }))
    .map(([standard, actions]) => [...(standard ? pcInit : []), ...actions.flat()]);
}

/**
 * Device and driver activity on an initialised pair that leaves nothing out of the shadow's
 * sight (no polls, no rotation): ISA line changes and pulses, interrupts taken, acknowledges,
 * EOIs and masks.
 */
export const picLineAction: fc.Arbitrary<Step[]> = fc.oneof(
  { weight: 6, arbitrary: line.map((s) => [s]) },
  { weight: 1, arbitrary: pulse },
  { weight: 4, arbitrary: interrupt },
  { weight: 2, arbitrary: inta.map((s) => [s]) },
  { weight: 3, arbitrary: eoi.map((s) => [s]) },
  { weight: 1, arbitrary: ocw1.map((s) => [s]) },
);
