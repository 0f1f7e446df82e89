// The 8259A programmable interrupt controller, and the PC's cascaded pair of them with the
// PIIX-style edge/level control registers (ELCR, ports 0x4d0/0x4d1).
//
// Request model. A rising edge on an IR input latches a request in IRR; in level-triggered
// mode (ICW1 LTIM, or the line's ELCR bit) IRR simply follows the input. An edge request
// stays latched when its input falls — the CPU may already have seen INT — until it is
// acknowledged or an ICW1 resets the edge-sense logic. The datasheet requires the input to
// be still high when the acknowledge comes; if it is not, the chip answers with the IR7
// vector and sets no in-service bit (a "default IR7", the spurious interrupt). QEMU 7.2
// honours the latched edge instead (compat).

import { FieldIO } from "../common/fields";
import { CASCADE_INPUT, PicControl, ICW1_INIT, OCW3_SELECT, OPEN_BUS_VECTOR, Ocw2, InitStep } from "../registers/pic";

const SLAVE_INPUT: u32 = <u32>CASCADE_INPUT;
/** The answer of a poll that finds no request. */
const POLL_NONE: u32 = 0;
const POLL_REQUEST: u32 = 0x80;

export class Pic8259 {
  ctl: PicControl = new PicControl();
  irr: u32 = 0;
  isr: u32 = 0;
  imr: u32 = 0;
  /** Levels of the IR input pins. */
  inputs: u32 = 0;
  elcr: u32 = 0;

  /**
   * @param isMaster wired as the cascade master (SP/EN high); the pair never changes it.
   * @param elcrMask ELCR bits that exist: the timer, keyboard, cascade, RTC and FPU lines
   *                 (IRQ 0, 1, 2, 8, 13) are always edge-triggered.
   */
  constructor(
    public isMaster: bool,
    private elcrMask: u32,
  ) {}

  reset(): void {
    this.ctl.reset();
    this.irr = 0;
    this.isr = 0;
    this.imr = 0;
    this.inputs = 0;
    this.elcr = 0;
  }

  /** Inputs whose IRR bit follows the level. QEMU 7.2 ignores ICW1 LTIM (compat). */
  @inline
  private levelInputs(): u32 {
    const c = this.ctl;
    return c.levelTriggered() && !c.compatQemu ? 0xff : this.elcr;
  }

  setInput(level: i32, high: bool): void {
    const bit: u32 = 1 << <u32>level;
    if (((this.inputs & bit) != 0) == high) return;
    if (high) {
      this.inputs |= bit;
      this.irr |= bit;
    } else {
      this.inputs &= ~bit;
      if ((this.levelInputs() & bit) != 0) this.irr &= ~bit;
    }
  }

  // ---- registers ----------------------------------------------------------------------------

  writeCommand(value: u32): void {
    const c = this.ctl;
    if ((value & ICW1_INIT) != 0) {
      c.initialise(value);
      this.isr = 0;
      this.imr = 0;
      // Resetting the edge-sense logic drops every edge request; level requests follow their
      // inputs. QEMU 7.2 keeps IRR bits of ELCR lines as they are (compat).
      this.irr = c.compatQemu ? this.irr & this.elcr : this.inputs & this.levelInputs();
    } else if ((value & OCW3_SELECT) != 0) {
      c.ocw3(value);
    } else {
      const cmd = value >>> 5;
      let level: i32 = -1;
      if (cmd == Ocw2.NonSpecificEoi || cmd == Ocw2.RotateOnNonSpecificEoi) {
        level = c.eoiTarget(this.isr, this.imr);
      } else if (cmd == Ocw2.SpecificEoi || cmd == Ocw2.RotateOnSpecificEoi) {
        level = <i32>(value & 7);
      }
      if (level >= 0) this.isr &= ~(<u32>1 << <u32>level);
      c.ocw2(value, level);
    }
  }

  writeData(value: u32): void {
    if (this.ctl.initStep != InitStep.Ready) this.ctl.initWord(value);
    else this.imr = value;
  }

  /** A read of the command port (`data` false) or data port; a pending poll takes either. */
  read(data: bool): u32 {
    if (this.ctl.pollPending) return this.poll();
    if (data) return this.imr;
    return this.ctl.readIsr ? this.isr : this.irr;
  }

  /**
   * ELCR write. The datasheet chip's level inputs take their IRR bit from the pin at once;
   * QEMU 7.2 leaves IRR alone until the line next changes (compat).
   */
  writeElcr(value: u32): void {
    this.elcr = value & this.elcrMask;
    if (this.ctl.compatQemu) return;
    const level = this.levelInputs();
    this.irr = (this.irr & ~level) | (this.inputs & level);
  }

  // ---- priority resolution ------------------------------------------------------------------

  /** IR inputs that are cascade inputs in special fully nested mode. */
  @inline
  private nestedSlaveInputs(): u32 {
    const c = this.ctl;
    if (!this.isMaster || !c.specialFullyNested() || c.single()) return 0;
    return c.icw3;
  }

  /** The request this chip would signal on INT now, or -1. */
  resolve(): i32 {
    const c = this.ctl;
    const requests = this.irr & ~this.imr & 0xff;
    if (requests == 0) return -1;
    if (c.compatQemu) return this.resolveQemu(requests);
    if (c.specialMask) {
      // Special mask mode: every unmasked level not itself in service may interrupt, lower
      // as well as higher. (An in-service slave input stays open under SFNM.)
      return c.highest(requests & ~(this.isr & ~this.nestedSlaveInputs()));
    }
    const top = c.highest(requests);
    const current = c.highest(this.isr);
    if (current < 0 || c.rank(top) < c.rank(current)) return top;
    // SFNM: a slave whose request is in service may still interrupt through the same input.
    if (top == current && ((this.nestedSlaveInputs() >>> <u32>top) & 1) != 0) return top;
    return -1;
  }

  /**
   * QEMU 7.2: in special mask mode only the masked in-service levels stop blocking lower
   * ones; under SFNM the master ignores its IR2 in-service bit entirely (so an in-service
   * slave no longer blocks IR3–7 either), whatever ICW3 says.
   */
  private resolveQemu(requests: u32): i32 {
    const c = this.ctl;
    let blocking = this.isr;
    if (c.specialMask) blocking &= ~this.imr;
    if (this.isMaster && c.specialFullyNested()) blocking &= ~(<u32>1 << SLAVE_INPUT);
    const top = c.highest(requests);
    const current = c.highest(blocking);
    return current < 0 || c.rank(top) < c.rank(current) ? top : -1;
  }

  @inline
  intOutput(): bool {
    return this.resolve() >= 0;
  }

  // ---- acknowledge --------------------------------------------------------------------------

  /**
   * Samples the resolved request `level` at the acknowledge: whether it is still there. One
   * whose input already fell is dropped from IRR (datasheet; QEMU 7.2 keeps it, compat).
   */
  sampleRequest(level: i32): bool {
    const bit: u32 = 1 << <u32>level;
    if (this.ctl.compatQemu || (this.inputs & bit) != 0) return true;
    this.irr &= ~bit;
    return false;
  }

  /**
   * Marks `level` in service, as the first INTA pulse or a poll does. QEMU 7.2 never sets the
   * ISR bit in AEOI mode, for polls too, and rotates to `level` at once (compat).
   */
  accept(level: i32): void {
    const c = this.ctl;
    const bit: u32 = 1 << <u32>level;
    if ((this.levelInputs() & bit) == 0) this.irr &= ~bit;
    if (!c.compatQemu) this.isr |= bit;
    else if (!c.autoEoi()) this.isr |= bit;
    else if (c.rotateInAeoi) c.lowestPriority = <u32>level;
  }

  /**
   * The trailing edge of the last INTA pulse, after this chip accepted a level. Datasheet:
   * in AEOI mode a non-specific EOI, rotating in rotate-in-AEOI mode (QEMU 7.2: done at
   * accept). A poll is no INTA sequence and has none.
   */
  endAcknowledge(): void {
    const c = this.ctl;
    if (c.compatQemu || !c.autoEoi()) return;
    const done = c.eoiTarget(this.isr, this.imr);
    if (done < 0) return;
    this.isr &= ~(<u32>1 << <u32>done);
    if (c.rotateInAeoi) c.lowestPriority = <u32>done;
  }

  /** The poll command's answer: 0x80 | level, acknowledging it, or 0 when nothing requests. */
  private poll(): u32 {
    this.ctl.pollPending = false;
    const level = this.resolve();
    if (level < 0) return POLL_NONE;
    if (!this.sampleRequest(level)) return POLL_REQUEST | 7;
    this.accept(level);
    return POLL_REQUEST | <u32>level;
  }

  /** Whether this slave answers the cascade address `id` (ICW3 holds its own). */
  answersCascade(id: i32): bool {
    const c = this.ctl;
    if (c.compatQemu) return true;
    return !c.single() && <i32>(c.icw3 & 7) == id;
  }

  /** The first INTA pulse for this chip's own request: the level it accepted, or -1 (none). */
  takeRequest(): i32 {
    const level = this.resolve();
    if (level < 0 || !this.sampleRequest(level)) return -1;
    this.accept(level);
    return level;
  }

  inspect(io: FieldIO): void {
    io.field("irr", this.irr);
    io.field("isr", this.isr);
    io.field("imr", this.imr);
    io.field("inputs", this.inputs);
    io.field("elcr", this.elcr);
    this.ctl.describe(io);
  }
}

/** The PC's two 8259As: the slave's INT drives master IR2, ORed with ISA line 2. */
export class PicPair {
  master: Pic8259 = new Pic8259(true, 0xf8);
  slave: Pic8259 = new Pic8259(false, 0xde);
  private line2: bool = false;

  get compatQemu(): bool {
    return this.master.ctl.compatQemu;
  }
  set compatQemu(on: bool) {
    this.master.ctl.compatQemu = on;
    this.slave.ctl.compatQemu = on;
  }

  reset(): void {
    this.master.reset();
    this.slave.reset();
    this.line2 = false;
  }

  ioWrite(port: u32, value: u32): void {
    if (port == 0x20) this.master.writeCommand(value);
    else if (port == 0x21) this.master.writeData(value);
    else if (port == 0xa0) this.slave.writeCommand(value);
    else if (port == 0xa1) this.slave.writeData(value);
    else if (port == 0x4d0) this.master.writeElcr(value);
    else if (port == 0x4d1) this.slave.writeElcr(value);
    this.followSlave();
  }

  ioRead(port: u32): u32 {
    let v: u32 = 0xff;
    if (port == 0x20 || port == 0x21) v = this.master.read(port == 0x21);
    else if (port == 0xa0 || port == 0xa1) v = this.slave.read(port == 0xa1);
    else if (port == 0x4d0) v = this.master.elcr;
    else if (port == 0x4d1) v = this.slave.elcr;
    this.followSlave();
    return v;
  }

  setIrq(line: i32, level: bool): void {
    if (line >= 8) {
      this.slave.setInput(line - 8, level);
    } else if (line == <i32>SLAVE_INPUT) {
      this.line2 = level;
    } else {
      this.master.setInput(line, level);
      return;
    }
    this.followSlave();
  }

  @inline
  intOutput(): bool {
    return this.master.intOutput();
  }

  /**
   * A full INTA cycle, as the datasheet times it. First pulse: the master takes its highest
   * request in service; for a cascade input it puts the slave's address on CAS0–2 and the
   * addressed slave takes its own (nobody answers: open bus). A request that vanished gives
   * the IR7 vector of the chip that lost it, with no level taken there (for a slave request,
   * with the master's IR2 in service: the cascaded default IR7). The slave's INT, and so the
   * master's IR2, now shows the new in-service level. Trailing edge of the last pulse: each
   * chip that took a level ends it in AEOI mode, and IR2 follows the slave's INT again — a
   * slave whose next request was held off only by the level just ended raises a new edge.
   */
  acknowledge(): i32 {
    const m = this.master;
    const s = this.slave;
    const level = m.takeRequest();
    let slaveLevel: i32 = -1;
    let vector: i32;
    if (level < 0) vector = m.ctl.vector(7);
    else if (!m.ctl.cascades(level)) vector = m.ctl.vector(level);
    else if (!s.answersCascade(level)) vector = OPEN_BUS_VECTOR;
    else {
      slaveLevel = s.takeRequest();
      vector = s.ctl.vector(slaveLevel < 0 ? 7 : slaveLevel);
    }
    this.followSlave();
    if (level >= 0) m.endAcknowledge();
    if (slaveLevel >= 0) s.endAcknowledge();
    this.followSlave();
    return vector;
  }

  /** Master IR2 follows the slave's INT output ORed with ISA line 2. */
  @inline
  private followSlave(): void {
    this.master.setInput(<i32>SLAVE_INPUT, this.line2 || this.slave.intOutput());
  }

  inspect(io: FieldIO): void {
    io.begin("master");
    this.master.inspect(io);
    io.end();
    io.begin("slave");
    this.slave.inspect(io);
    io.end();
  }
}
