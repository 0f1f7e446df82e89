// The 8259A's programming model: the registers software writes but cannot read back (the
// initialisation words, the position in their sequence, the OCW3 modes, the priority
// rotation) and how each command-port or data-port byte changes them. One 8259A chip keeps
// one of these; so does the hypervisor's shadow of that chip, which is how the shadow decodes
// trapped writes exactly as the chip does. In-service and request bits are not here: the
// chip holds them, and the few commands whose effect depends on them take them as arguments.

import { FieldIO } from "../common/fields";

export const ICW1_IC4: u32 = 0x01;
export const ICW1_SNGL: u32 = 0x02;
export const ICW1_ADI: u32 = 0x04;
export const ICW1_LTIM: u32 = 0x08;
/** Bit 4 on the command port marks ICW1; else bit 3 tells OCW3 (1) from OCW2 (0). */
export const ICW1_INIT: u32 = 0x10;
export const OCW3_SELECT: u32 = 0x08;
/** What the CPU reads when no chip drives the data bus during an acknowledge. */
export const OPEN_BUS_VECTOR: i32 = 0xff;
/** The master's input the PC wires the slave's INT to. */
export const CASCADE_INPUT: i32 = 2;

export const ICW4_UPM: u32 = 0x01;
export const ICW4_AEOI: u32 = 0x02;
export const ICW4_SFNM: u32 = 0x10;

export const OCW3_RIS: u32 = 0x01;
export const OCW3_RR: u32 = 0x02;
export const OCW3_POLL: u32 = 0x04;
export const OCW3_SMM: u32 = 0x20;
export const OCW3_ESMM: u32 = 0x40;

/** OCW2 commands (bits 7..5: R, SL, EOI). */
export const enum Ocw2 {
  RotateInAeoiClear = 0,
  NonSpecificEoi = 1,
  NoOp = 2,
  SpecificEoi = 3,
  RotateInAeoiSet = 4,
  RotateOnNonSpecificEoi = 5,
  SetPriority = 6,
  RotateOnSpecificEoi = 7,
}

/** Which initialisation word the data port expects next; 0 when initialisation is complete. */
export const enum InitStep {
  Ready = 0,
  Icw2 = 1,
  Icw3 = 2,
  Icw4 = 3,
}

export class PicControl {
  /** QEMU 7.2's deviations instead of the datasheet's (see the differences noted below). */
  compatQemu: bool = false;
  icw1: u32 = 0;
  icw2: u32 = 0;
  icw3: u32 = 0;
  /** Bits 4..0 of ICW4: SFNM, BUF, M/S, AEOI, µPM. */
  icw4: u32 = 0;
  initStep: u32 = InitStep.Ready;
  /** OCW3 read-register select: the command port reads ISR (true) or IRR (false). */
  readIsr: bool = false;
  specialMask: bool = false;
  /** An OCW3 poll command waits for the next read of this chip's ports. */
  pollPending: bool = false;
  /** The IR level with the lowest priority; the next one round has the highest. */
  lowestPriority: u32 = 7;
  rotateInAeoi: bool = false;

  /** Power-on state. */
  reset(): void {
    this.icw1 = 0;
    this.icw2 = 0;
    this.icw3 = 0;
    this.icw4 = 0;
    this.initStep = InitStep.Ready;
    this.readIsr = false;
    this.specialMask = false;
    this.pollPending = false;
    this.lowestPriority = 7;
    this.rotateInAeoi = false;
  }

  /** Copies the register state; the compat setting is the board's and stays. */
  copyFrom(o: PicControl): void {
    this.icw1 = o.icw1;
    this.icw2 = o.icw2;
    this.icw3 = o.icw3;
    this.icw4 = o.icw4;
    this.initStep = o.initStep;
    this.readIsr = o.readIsr;
    this.specialMask = o.specialMask;
    this.pollPending = o.pollPending;
    this.lowestPriority = o.lowestPriority;
    this.rotateInAeoi = o.rotateInAeoi;
  }

  @inline single(): bool {
    return (this.icw1 & ICW1_SNGL) != 0;
  }
  @inline levelTriggered(): bool {
    return (this.icw1 & ICW1_LTIM) != 0;
  }
  @inline autoEoi(): bool {
    return (this.icw4 & ICW4_AEOI) != 0;
  }
  @inline specialFullyNested(): bool {
    return (this.icw4 & ICW4_SFNM) != 0;
  }
  @inline x86Mode(): bool {
    return (this.icw4 & ICW4_UPM) != 0;
  }

  /**
   * ICW1: starts (or restarts, even half way) the initialisation sequence. Datasheet: the
   * slave address becomes 7, IR7 the lowest priority, special mask and poll are cancelled,
   * the status read selects IRR, and the ICW4 functions are zeroed only when no ICW4 follows;
   * ICW2 and the rotate-in-AEOI flag keep their values until rewritten.
   * QEMU 7.2 zeroes ICW2 (the vector base), every ICW4 function and rotate-in-AEOI on every
   * ICW1 (compat).
   */
  initialise(value: u32): void {
    this.icw1 = value & 0xff;
    this.icw3 = 7;
    this.initStep = InitStep.Icw2;
    this.readIsr = false;
    this.specialMask = false;
    this.pollPending = false;
    this.lowestPriority = 7;
    if (this.compatQemu) {
      this.icw2 = 0;
      this.icw4 = 0;
      this.rotateInAeoi = false;
    } else if ((value & ICW1_IC4) == 0) {
      this.icw4 = 0;
    }
  }

  /** A data-port byte while initStep != Ready: the next ICW in the sequence. */
  initWord(value: u32): void {
    const needsIcw4 = (this.icw1 & ICW1_IC4) != 0;
    if (this.initStep == InitStep.Icw2) {
      this.icw2 = value & 0xff;
      if (!this.single()) this.initStep = InitStep.Icw3;
      else this.initStep = needsIcw4 ? InitStep.Icw4 : InitStep.Ready;
    } else if (this.initStep == InitStep.Icw3) {
      this.icw3 = value & 0xff;
      this.initStep = needsIcw4 ? InitStep.Icw4 : InitStep.Ready;
    } else {
      this.icw4 = value & 0x1f;
      this.initStep = InitStep.Ready;
    }
  }

  /** OCW3: poll command, read-register select (RR), special mask (ESMM). */
  ocw3(value: u32): void {
    if ((value & OCW3_POLL) != 0) this.pollPending = true;
    if ((value & OCW3_RR) != 0) this.readIsr = (value & OCW3_RIS) != 0;
    if ((value & OCW3_ESMM) != 0) this.specialMask = (value & OCW3_SMM) != 0;
  }

  /**
   * The part of OCW2 that is this register file's: the rotate-in-AEOI flag and the priority
   * pointer. `eoiLevel` is the in-service level a non-specific EOI cleared (-1 if none).
   */
  ocw2(value: u32, eoiLevel: i32): void {
    const cmd = value >>> 5;
    if (cmd == Ocw2.RotateInAeoiClear) this.rotateInAeoi = false;
    else if (cmd == Ocw2.RotateInAeoiSet) this.rotateInAeoi = true;
    else if (cmd == Ocw2.RotateOnNonSpecificEoi) {
      if (eoiLevel >= 0) this.lowestPriority = <u32>eoiLevel;
    } else if (cmd == Ocw2.SetPriority || cmd == Ocw2.RotateOnSpecificEoi) {
      this.lowestPriority = value & 7;
    }
  }

  /** Priority rank of IR `level`: 0 is the highest. */
  @inline rank(level: i32): u32 {
    return (<u32>level - this.lowestPriority - 1) & 7;
  }

  /** The highest-priority level set in `mask` (8 bits), or -1. */
  highest(mask: u32): i32 {
    if (mask == 0) return -1;
    const first = (this.lowestPriority + 1) & 7;
    const m = mask & 0xff;
    const rotated = ((m >>> first) | (m << (8 - first))) & 0xff;
    return <i32>((ctz(rotated) + first) & 7);
  }

  /** Whether acknowledging `level` makes this chip, as a master, hand the vector to a slave. */
  cascades(level: i32): bool {
    // QEMU 7.2 always sends IR2 to the slave, in single mode and whatever ICW3 says (compat).
    if (this.compatQemu) return level == CASCADE_INPUT;
    return !this.single() && ((this.icw3 >>> <u32>level) & 1) != 0;
  }

  /**
   * The byte the chip puts on the data bus for IR `level` during the CPU's acknowledge.
   * 8086 mode: ICW2 bits 7..3 and the level. MCS-80/85 mode (µPM = 0): the x86 takes the byte
   * of the second INTA pulse, the low byte of the CALL address — ICW1 bits 7..5 and the level
   * times 4 (ADI = 1), or ICW1 bits 7..6 and the level times 8. QEMU 7.2 always answers in
   * 8086 format (compat).
   */
  vector(level: i32): i32 {
    if (this.x86Mode() || this.compatQemu) return <i32>((this.icw2 & 0xf8) | <u32>level);
    if ((this.icw1 & ICW1_ADI) != 0) return <i32>((this.icw1 & 0xe0) | (<u32>level << 2));
    return <i32>((this.icw1 & 0xc0) | (<u32>level << 3));
  }

  /**
   * The in-service level a non-specific EOI clears: the highest-priority ISR bit. Datasheet:
   * in special mask mode, in-service levels that are masked are skipped. QEMU 7.2 ignores the
   * mask (compat).
   */
  eoiTarget(isr: u32, imr: u32): i32 {
    return this.highest(this.specialMask && !this.compatQemu ? isr & ~imr : isr);
  }

  /** The write-only registers, under the same names in the chip and in its shadow. */
  describe(io: FieldIO): void {
    this.icw1 = io.bits("icw1", this.icw1, 0xff);
    this.icw2 = io.bits("icw2", this.icw2, 0xff);
    this.icw3 = io.bits("icw3", this.icw3, 0xff);
    this.icw4 = io.bits("icw4", this.icw4, 0x1f);
    this.initStep = io.field("initStep", this.initStep, InitStep.Icw4);
    this.readIsr = io.flag("readIsr", this.readIsr);
    this.specialMask = io.flag("specialMask", this.specialMask);
    this.pollPending = io.flag("pollPending", this.pollPending);
    this.lowestPriority = io.field("lowestPriority", this.lowestPriority, 7);
    this.rotateInAeoi = io.flag("rotateInAeoi", this.rotateInAeoi);
  }
}
