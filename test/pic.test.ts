// The 8259A pair against the Intel datasheet, and QEMU 7.2's deviations under compatQemu.
// Without a local APIC the master's INT reaches the CPU directly, so m.inta() is the PICs'
// own acknowledge cycle.

import { describe, expect, it } from "vitest";
import { Machine } from "../src/core/machine.js";
import { type PicChipState, type PicState, initPicPair, picMachine } from "./arbitraries/pic.js";

const M_CMD = 0x20;
const M_DATA = 0x21;
const S_CMD = 0xa0;
const S_DATA = 0xa1;
const ELCR_M = 0x4d0;
const ELCR_S = 0x4d1;

const NON_SPECIFIC_EOI = 0x20;
const specificEoi = (level: number) => 0x60 | level;
const rotateOnSpecificEoi = (level: number) => 0xe0 | level;
const setPriority = (lowest: number) => 0xc0 | lowest;
const ROTATE_ON_NON_SPECIFIC_EOI = 0xa0;
const ROTATE_IN_AEOI_SET = 0x80;
const ROTATE_IN_AEOI_CLEAR = 0x00;
const OCW2_NOP = 0x40;
const READ_IRR = 0x0a;
const READ_ISR = 0x0b;
const POLL = 0x0c;
const SMM_SET = 0x68;
const SMM_RESET = 0x48;

function pic(m: Machine): PicState {
  return m.inspect().pic as unknown as PicState;
}
const master = (m: Machine): PicChipState => pic(m).master;
const slave = (m: Machine): PicChipState => pic(m).slave;

function irr(m: Machine, cmd = M_CMD): number {
  m.outb(cmd, READ_IRR);
  return m.inb(cmd);
}
function isr(m: Machine, cmd = M_CMD): number {
  m.outb(cmd, READ_ISR);
  return m.inb(cmd);
}

/** A PC pair as Linux sets it up: vectors 0x20 and 0x28, cascade on IR2, 8086 mode. */
function linux(compatQemu = false, masterIcw4 = 0x01, slaveIcw4 = 0x01): Machine {
  const m = picMachine({ compatQemu });
  initPicPair(m, { masterIcw4, slaveIcw4 });
  return m;
}

/** Raises ISA line `line` and takes the interrupt; the line stays high. */
function take(m: Machine, line: number): number {
  m.setIrq(line, 1);
  return m.inta();
}

describe("8259A power-on and initialisation", () => {
  it("powers on uninitialised: nothing masked, IR7 lowest, IRR selected, ELCR edge", () => {
    const m = picMachine();
    for (const chip of [master(m), slave(m)]) {
      expect(chip).toMatchObject({ irr: 0, isr: 0, imr: 0, elcr: 0, icw1: 0, icw4: 0, initStep: 0 });
      expect(chip).toMatchObject({ readIsr: 0, specialMask: 0, pollPending: 0, lowestPriority: 7, rotateInAeoi: 0 });
    }
  });

  it("walks ICW1–ICW4 in cascade mode and stores every field", () => {
    const m = picMachine();
    m.outb(M_CMD, 0xf5); // A7-5 = 111, ADI, IC4, edge, cascade
    expect(master(m)).toMatchObject({ icw1: 0xf5, initStep: 1, icw3: 7 });
    m.outb(M_DATA, 0x27);
    expect(master(m)).toMatchObject({ icw2: 0x27, initStep: 2 });
    m.outb(M_DATA, 0x04);
    expect(master(m)).toMatchObject({ icw3: 0x04, initStep: 3 });
    m.outb(M_DATA, 0x1f); // SFNM, BUF, M/S, AEOI, µPM
    expect(master(m)).toMatchObject({ icw4: 0x1f, initStep: 0 });
    m.outb(M_DATA, 0x5a);
    expect(master(m).imr).toBe(0x5a);
    expect(m.inb(M_DATA)).toBe(0x5a);
  });

  it("skips ICW3 in single mode and ICW4 when IC4 = 0", () => {
    const m = picMachine();
    m.outb(M_CMD, 0x13);
    m.outb(M_DATA, 0x40);
    expect(master(m).initStep).toBe(3);
    m.outb(M_DATA, 0x01);
    expect(master(m).initStep).toBe(0);
    m.outb(M_CMD, 0x12);
    m.outb(M_DATA, 0x48);
    expect(master(m)).toMatchObject({ initStep: 0, icw2: 0x48, icw4: 0, icw3: 7 });
    m.outb(M_CMD, 0x10);
    m.outb(M_DATA, 0x50);
    expect(master(m).initStep).toBe(2);
    m.outb(M_DATA, 0x04);
    expect(master(m)).toMatchObject({ initStep: 0, icw3: 0x04 });
  });

  it("ICW1 clears IMR and ISR, resets priority, special mask, poll and the read select", () => {
    const m = linux();
    m.outb(M_DATA, 0xf0);
    expect(take(m, 1)).toBe(0x21);
    m.outb(M_CMD, setPriority(3));
    m.outb(M_CMD, SMM_SET);
    m.outb(M_CMD, READ_ISR);
    m.outb(M_CMD, POLL);
    m.outb(M_CMD, 0x11);
    expect(master(m)).toMatchObject({
      imr: 0, isr: 0, lowestPriority: 7, specialMask: 0, pollPending: 0, readIsr: 0, initStep: 1, icw3: 7,
    });
  });

  it("restarts the sequence at an ICW1 half way through; the datasheet chip keeps ICW2 and ICW4", () => {
    const m = linux(false, 0x03);
    m.outb(M_CMD, 0x11);
    m.outb(M_DATA, 0x60);
    m.outb(M_CMD, 0x11);
    expect(master(m)).toMatchObject({ initStep: 1, icw2: 0x60, icw4: 0x03 });
    m.outb(M_DATA, 0x30);
    m.outb(M_DATA, 0x04);
    m.outb(M_DATA, 0x01);
    expect(master(m)).toMatchObject({ initStep: 0, icw2: 0x30, icw4: 0x01 });
  });

  it("zeroes the ICW4 functions at ICW1 when IC4 = 0", () => {
    const m = linux(false, 0x1f);
    m.outb(M_CMD, 0x10);
    expect(master(m).icw4).toBe(0);
  });

  it("compat: QEMU's ICW1 zeroes ICW2, ICW4 and rotate-in-AEOI even when ICW4 follows", () => {
    const m = linux(true, 0x03);
    m.outb(M_CMD, ROTATE_IN_AEOI_SET);
    m.outb(M_CMD, 0x11);
    expect(master(m)).toMatchObject({ initStep: 1, icw2: 0, icw4: 0, rotateInAeoi: 0 });
  });

  it("decodes OCW2 and OCW3 in the middle of an ICW sequence and answers IMR on the data port", () => {
    const m = linux();
    m.outb(M_DATA, 0x0f);
    m.outb(M_CMD, 0x11);
    m.outb(M_CMD, READ_ISR);
    m.outb(M_CMD, setPriority(2));
    expect(master(m)).toMatchObject({ readIsr: 1, lowestPriority: 2, initStep: 1 });
    expect(m.inb(M_DATA)).toBe(0);
    m.outb(M_DATA, 0x20);
    expect(master(m)).toMatchObject({ icw2: 0x20, initStep: 2, imr: 0 });
  });

  it("answers an acknowledge during initialisation with the vector base so far", () => {
    const m = picMachine();
    m.outb(M_CMD, 0x13);
    m.outb(M_DATA, 0x48);
    m.setIrq(5, 1);
    // Half way, ICW4 is not yet written: µPM is 0, the MCS-80/85 format (interval 8).
    expect(m.inta()).toBe(5 << 3);
    m.outb(M_DATA, 0x01);
    m.setIrq(4, 1); // outranks IR5, still in service
    expect(m.inta()).toBe(0x4c);
  });
});

describe("8259A vectors", () => {
  it("8086 mode: ICW2 bits 7..3 and the level", () => {
    const m = linux();
    m.outb(M_CMD, 0x11);
    m.outb(M_DATA, 0x9f);
    m.outb(M_DATA, 0x04);
    m.outb(M_DATA, 0x01);
    expect(take(m, 6)).toBe(0x9e);
  });

  it("MCS-80/85 mode: the low byte of the CALL address, interval 4 or 8", () => {
    const m = picMachine();
    m.outb(M_CMD, 0xb6); // A7-5 = 101, interval 4, single, no ICW4
    m.outb(M_DATA, 0x12);
    expect(take(m, 3)).toBe(0xa0 | (3 << 2));
    m.outb(M_CMD, NON_SPECIFIC_EOI);
    m.outb(M_CMD, 0xd2); // A7-6 = 11, interval 8
    m.outb(M_DATA, 0x12);
    m.setIrq(3, 0);
    expect(take(m, 3)).toBe(0xc0 | (3 << 3));
  });

  it("compat: QEMU answers in 8086 format whatever µPM says", () => {
    const m = picMachine({ compatQemu: true });
    m.outb(M_CMD, 0xb6);
    m.outb(M_DATA, 0x12);
    expect(take(m, 3)).toBe(0x13);
  });
});

describe("8259A masking, nesting and EOI", () => {
  it("holds a masked request in IRR and delivers it when unmasked", () => {
    const m = linux();
    m.outb(M_DATA, 0x08);
    m.setIrq(3, 1);
    expect(irr(m)).toBe(0x08);
    expect(m.inta()).toBe(-1);
    m.outb(M_DATA, 0x00);
    expect(m.inta()).toBe(0x23);
    expect(irr(m)).toBe(0);
    expect(isr(m)).toBe(0x08);
  });

  it("lets a higher level nest, blocks lower levels until the EOI", () => {
    const m = linux();
    expect(take(m, 3)).toBe(0x23);
    m.setIrq(5, 1);
    expect(m.inta()).toBe(-1);
    expect(take(m, 1)).toBe(0x21);
    expect(isr(m)).toBe(0x0a);
    m.outb(M_CMD, NON_SPECIFIC_EOI); // clears IR1, the highest
    expect(isr(m)).toBe(0x08);
    expect(m.inta()).toBe(-1);
    m.outb(M_CMD, specificEoi(3));
    expect(isr(m)).toBe(0);
    expect(m.inta()).toBe(0x25);
  });

  it("does not re-request an edge input that stays high", () => {
    const m = linux();
    expect(take(m, 4)).toBe(0x24);
    m.outb(M_CMD, NON_SPECIFIC_EOI);
    expect(m.inta()).toBe(-1);
    m.setIrq(4, 0);
    expect(take(m, 4)).toBe(0x24);
  });

  it("ignores a specific EOI for a level not in service and the OCW2 no-op", () => {
    const m = linux();
    take(m, 3);
    m.outb(M_CMD, specificEoi(5));
    m.outb(M_CMD, OCW2_NOP);
    expect(master(m)).toMatchObject({ isr: 0x08, lowestPriority: 7 });
  });
});

describe("8259A priority rotation", () => {
  /** Raises `lines` together and returns the vectors in the order the CPU takes them. */
  function order(m: Machine, lines: number[]): number[] {
    for (const l of lines) m.setIrq(l, 1);
    const out: number[] = [];
    for (let v = m.inta(); v >= 0; v = m.inta()) {
      out.push(v & 7);
      m.outb(M_CMD, NON_SPECIFIC_EOI);
    }
    for (const l of lines) m.setIrq(l, 0);
    return out;
  }

  it("set priority makes the next level the highest", () => {
    const m = linux();
    m.outb(M_CMD, setPriority(4));
    expect(master(m).lowestPriority).toBe(4);
    expect(order(m, [1, 3, 6])).toEqual([6, 1, 3]);
  });

  it("rotate on specific EOI makes that level the lowest", () => {
    const m = linux();
    take(m, 1);
    m.setIrq(1, 0);
    m.outb(M_CMD, rotateOnSpecificEoi(1));
    expect(master(m)).toMatchObject({ isr: 0, lowestPriority: 1 });
    expect(order(m, [0, 1, 3])).toEqual([3, 0, 1]);
  });

  it("rotate on non-specific EOI makes the cleared level the lowest, and without ISR does nothing", () => {
    const m = linux();
    m.outb(M_CMD, setPriority(2));
    take(m, 5);
    take(m, 3); // IR3 outranks IR5 with IR2 lowest
    m.outb(M_CMD, ROTATE_ON_NON_SPECIFIC_EOI);
    expect(master(m)).toMatchObject({ isr: 0x20, lowestPriority: 3 });
    m.outb(M_CMD, specificEoi(5));
    m.outb(M_CMD, ROTATE_ON_NON_SPECIFIC_EOI);
    expect(master(m).lowestPriority).toBe(3);
  });

  it("automatic EOI leaves nothing in service; rotate-in-AEOI rotates at each acknowledge", () => {
    const m = linux(false, 0x03);
    expect(take(m, 3)).toBe(0x23);
    expect(master(m)).toMatchObject({ isr: 0, lowestPriority: 7 });
    m.outb(M_CMD, ROTATE_IN_AEOI_SET);
    expect(take(m, 5)).toBe(0x25);
    expect(master(m)).toMatchObject({ isr: 0, lowestPriority: 5, rotateInAeoi: 1 });
    m.outb(M_CMD, ROTATE_IN_AEOI_CLEAR);
    m.setIrq(3, 0);
    take(m, 3);
    expect(master(m)).toMatchObject({ lowestPriority: 5, rotateInAeoi: 0 });
  });
});

describe("8259A special mask mode", () => {
  it("opens lower levels while a masked level is in service, and a non-specific EOI skips it", () => {
    const m = linux();
    take(m, 3);
    m.outb(M_DATA, 0x08);
    m.outb(M_CMD, SMM_SET);
    expect(master(m).specialMask).toBe(1);
    expect(take(m, 5)).toBe(0x25);
    expect(isr(m)).toBe(0x28);
    m.outb(M_CMD, NON_SPECIFIC_EOI);
    expect(isr(m)).toBe(0x08);
    m.outb(M_CMD, SMM_RESET);
    expect(master(m).specialMask).toBe(0);
  });

  it("datasheet: every unmasked level not in service may interrupt, even below an unmasked ISR bit", () => {
    const m = linux();
    take(m, 3);
    m.outb(M_CMD, SMM_SET);
    expect(take(m, 5)).toBe(0x25);
  });

  it("compat: QEMU still blocks below an unmasked in-service level, and its EOI ignores the mask", () => {
    const m = linux(true);
    take(m, 3);
    m.outb(M_CMD, SMM_SET);
    expect(take(m, 5)).toBe(-1);
    m.outb(M_DATA, 0x08);
    expect(m.inta()).toBe(0x25);
    m.outb(M_CMD, NON_SPECIFIC_EOI);
    expect(isr(m)).toBe(0x20);
  });

  it("datasheet: automatic EOI is a non-specific EOI, so under special mask it clears the highest level", () => {
    const m = linux(false, 0x03);
    m.outb(M_CMD, SMM_SET);
    m.setIrq(1, 1);
    m.outb(M_CMD, POLL);
    expect(m.inb(M_CMD)).toBe(0x81); // a poll is no INTA sequence: IR1 stays in service
    expect(take(m, 5)).toBe(0x25);
    expect(isr(m)).toBe(0x20);
  });
});

describe("8259A poll command", () => {
  it("answers 0 with nothing pending", () => {
    const m = linux();
    m.outb(M_CMD, POLL);
    expect(master(m).pollPending).toBe(1);
    expect(m.inb(M_CMD)).toBe(0);
    expect(master(m).pollPending).toBe(0);
  });

  it("answers 0x80 | level and acknowledges it, on either port", () => {
    const m = linux();
    m.outb(M_DATA, 0x80);
    m.setIrq(3, 1);
    m.setIrq(5, 1);
    m.outb(M_CMD, POLL);
    expect(m.inb(M_DATA)).toBe(0x83);
    expect(master(m)).toMatchObject({ isr: 0x08, irr: 0x20, imr: 0x80, pollPending: 0 });
    expect(m.inb(M_DATA)).toBe(0x80);
  });

  it("polls the master and the slave separately", () => {
    const m = linux();
    m.setIrq(12, 1);
    m.outb(M_CMD, POLL);
    expect(m.inb(M_CMD)).toBe(0x82);
    m.outb(S_CMD, POLL);
    expect(m.inb(S_CMD)).toBe(0x84);
    expect(master(m).isr).toBe(0x04);
    expect(slave(m).isr).toBe(0x10);
  });

  it("datasheet: a poll sets the in-service bit even in AEOI mode; compat: QEMU's does not", () => {
    for (const compat of [false, true]) {
      const m = linux(compat, 0x03);
      m.setIrq(4, 1);
      m.outb(M_CMD, POLL);
      expect(m.inb(M_CMD)).toBe(0x84);
      expect(master(m).isr).toBe(compat ? 0 : 0x10);
    }
  });

  it("datasheet: polling a request whose input fell answers IR7 and sets nothing", () => {
    const m = linux();
    m.setIrq(3, 1);
    m.setIrq(3, 0);
    m.outb(M_CMD, POLL);
    expect(m.inb(M_CMD)).toBe(0x87);
    expect(master(m)).toMatchObject({ isr: 0, irr: 0 });
  });
});

describe("8259A spurious interrupts (default IR7)", () => {
  it("datasheet: an edge request whose input fell before the acknowledge gets IR7's vector, no ISR bit", () => {
    const m = linux();
    m.setIrq(3, 1);
    m.setIrq(3, 0);
    expect(irr(m)).toBe(0x08);
    expect(m.inta()).toBe(0x27);
    expect(master(m)).toMatchObject({ isr: 0, irr: 0 });
    expect(m.inta()).toBe(-1);
  });

  it("datasheet: on the slave the master's IR2 goes in service and the slave answers its IR7 vector", () => {
    const m = linux();
    m.setIrq(10, 1);
    m.setIrq(10, 0);
    expect(m.inta()).toBe(0x2f);
    expect(master(m).isr).toBe(0x04);
    expect(slave(m)).toMatchObject({ isr: 0, irr: 0 });
  });

  it("datasheet: a slave request masked after INT leaves the master with a vanished IR2: IR7", () => {
    const m = linux();
    m.setIrq(9, 1);
    m.outb(S_DATA, 0x02);
    expect(m.inta()).toBe(0x27);
    expect(master(m).isr).toBe(0);
  });

  it("compat: QEMU keeps the edge latched and delivers it", () => {
    const m = linux(true);
    m.setIrq(3, 1);
    m.setIrq(3, 0);
    expect(m.inta()).toBe(0x23);
    m.setIrq(10, 1);
    m.setIrq(10, 0);
    m.outb(M_CMD, NON_SPECIFIC_EOI);
    expect(m.inta()).toBe(0x2a);
  });

  it("compat: a slave request masked after INT reaches QEMU's slave, which answers IR7", () => {
    const m = linux(true);
    m.setIrq(9, 1);
    m.outb(S_DATA, 0x02);
    expect(m.inta()).toBe(0x2f);
    expect(master(m).isr).toBe(0x04);
    expect(slave(m).isr).toBe(0);
  });
});

describe("8259A cascade", () => {
  it("takes the vector from the slave and puts IR2 and the slave level in service", () => {
    const m = linux();
    expect(take(m, 12)).toBe(0x2c);
    expect(master(m)).toMatchObject({ isr: 0x04, irr: 0 });
    expect(slave(m)).toMatchObject({ isr: 0x10, irr: 0 });
  });

  it("fully nested: a higher slave level waits while the slave's IR2 is in service", () => {
    const m = linux();
    take(m, 12);
    expect(take(m, 9)).toBe(-1);
    m.outb(S_CMD, NON_SPECIFIC_EOI);
    m.outb(M_CMD, NON_SPECIFIC_EOI);
    expect(m.inta()).toBe(0x29);
  });

  it("special fully nested: the master lets a higher slave request through its in-service IR2", () => {
    const m = linux(false, 0x11);
    take(m, 12);
    expect(take(m, 9)).toBe(0x29);
    expect(slave(m).isr).toBe(0x12);
  });

  it("datasheet SFNM still blocks the master's lower levels; compat: QEMU ignores IR2's ISR bit", () => {
    for (const compat of [false, true]) {
      const m = linux(compat, 0x11);
      take(m, 12);
      expect(take(m, 5)).toBe(compat ? 0x25 : -1);
    }
  });

  it("datasheet: IR2 is no cascade input unless ICW3 says so, and an unaddressed slave leaves the bus open", () => {
    const m = linux();
    m.outb(M_CMD, 0x11);
    m.outb(M_DATA, 0x20);
    m.outb(M_DATA, 0x08); // slave on IR3
    m.outb(M_DATA, 0x01);
    expect(take(m, 2)).toBe(0x22);
    m.outb(M_CMD, NON_SPECIFIC_EOI);
    m.setIrq(3, 1);
    expect(m.inta()).toBe(0xff);
  });

  it("datasheet: a master in single mode answers IR2 itself; compat: QEMU cascades anyway", () => {
    for (const compat of [false, true]) {
      const m = linux(compat);
      m.outb(M_CMD, 0x13);
      m.outb(M_DATA, 0x20);
      m.outb(M_DATA, 0x01);
      expect(take(m, 11)).toBe(compat ? 0x2b : 0x22);
    }
  });

  it("ORs ISA line 2 into master IR2 with the slave's INT", () => {
    const m = linux();
    m.outb(S_DATA, 0xff);
    m.setIrq(9, 1);
    expect(master(m).inputs).toBe(0);
    m.setIrq(2, 1);
    expect(master(m).inputs).toBe(0x04);
  });
});

describe("8259A edge and level triggering", () => {
  it("ELCR: a level line's IRR follows the input and re-requests after the EOI while high", () => {
    const m = linux();
    m.outb(ELCR_S, 0x04); // IRQ10 level
    m.setIrq(10, 1);
    expect(irr(m, S_CMD)).toBe(0x04);
    m.setIrq(10, 0);
    expect(irr(m, S_CMD)).toBe(0);
    expect(take(m, 10)).toBe(0x2a);
    m.outb(S_CMD, NON_SPECIFIC_EOI);
    m.outb(M_CMD, NON_SPECIFIC_EOI);
    expect(m.inta()).toBe(0x2a);
  });

  it("ELCR keeps IRQ 0, 1, 2, 8 and 13 edge-triggered", () => {
    const m = linux();
    m.outb(ELCR_M, 0xff);
    m.outb(ELCR_S, 0xff);
    expect(m.inb(ELCR_M)).toBe(0xf8);
    expect(m.inb(ELCR_S)).toBe(0xde);
  });

  it("datasheet: a line switched to level takes its IRR bit from the pin at once; compat: at its next change", () => {
    for (const compat of [false, true]) {
      const m = linux(compat);
      expect(take(m, 5)).toBe(0x25);
      m.outb(M_CMD, NON_SPECIFIC_EOI);
      m.outb(ELCR_M, 0x20);
      expect(irr(m)).toBe(compat ? 0 : 0x20);
    }
  });

  it("datasheet: ICW1 LTIM makes every input level-triggered; compat: QEMU 7.2 ignores LTIM", () => {
    for (const compat of [false, true]) {
      const m = picMachine({ compatQemu: compat });
      m.outb(M_CMD, 0x1b); // LTIM, single, IC4
      m.outb(M_DATA, 0x20);
      m.outb(M_DATA, 0x01);
      m.setIrq(6, 1);
      m.setIrq(6, 0);
      expect(irr(m)).toBe(compat ? 0x40 : 0);
    }
  });

  it("ICW1 drops edge requests but level requests follow their inputs", () => {
    for (const compat of [false, true]) {
      const m = linux(compat);
      m.outb(ELCR_M, 0x08);
      m.setIrq(3, 1);
      m.setIrq(4, 1);
      m.outb(M_CMD, 0x11);
      expect(master(m).irr).toBe(0x08);
      // After ICW1 an input that stayed high must fall and rise again to request.
      m.outb(M_DATA, 0x20);
      m.outb(M_DATA, 0x04);
      m.outb(M_DATA, 0x01);
      m.outb(M_DATA, 0x08);
      expect(m.inta()).toBe(-1);
      m.setIrq(4, 0);
      expect(take(m, 4)).toBe(0x24);
    }
  });

  it("datasheet: ICW1 with LTIM keeps the requests of inputs that are high", () => {
    const m = linux();
    m.setIrq(4, 1);
    m.outb(M_CMD, 0x19);
    expect(master(m).irr).toBe(0x10);
  });
});
