// The hypervisor's shadow of the two 8259As: the write-only state of each chip, learnt from
// the guest accesses it traps and decoded with the chip's own programming model. Under the
// `blmvisor` policy it traps only what carries that state: every command-port write (ICW1,
// OCW2 and OCW3 share the port, so every EOI exits), data-port writes while an ICW sequence
// runs, and both ports while a poll waits (the next read of either port answers it, and IMR
// cannot be read back until then). ELCR is readable and never trapped.
//
// Two things can move a chip's priority pointer out of the shadow's sight, and the shadow
// flags its copy as stale from then on until the guest sets the pointer explicitly again:
//  - acknowledges in automatic-EOI mode with rotate-in-AEOI on, under `blmvisor`: the INTA
//    cycle is not trapped. Under `full` every acknowledge exits: the shadow reads ISR, IRR and
//    IMR just before it and learns the level taken from the vector, so it follows the rotation
//    (prepareAcknowledge/completeAcknowledge) — except where the IR7 vector may be a default
//    IR7 (a request withdrawn before its acknowledge: no level taken) while IR7 requests too;
//  - a rotate-on-non-specific-EOI while a poll is pending: the pointer becomes the in-service
//    level the EOI clears, which can only be read before the write, and any read of the chip
//    would answer the poll.
// Every other rotate-on-non-specific-EOI is exact: prepareWrite() reads ISR just before it and
// works out the level from the priorities, or, when the pointer is stale (so the priorities are
// not known), completeWrite() reads ISR again just after it: the bit that went is the level.

import { FieldIO } from "../../common/fields";
import {
  PicControl, CASCADE_INPUT, ICW1_INIT, OCW3_SELECT, OCW3_RR, OCW3_RIS, OCW3_POLL, OPEN_BUS_VECTOR, Ocw2, InitStep,
} from "../../registers/pic";
import { HardwareBus } from "../bus";
import { DeviceShadow, IoTraps, TRAP_READ, TRAP_WRITE } from "../traps";

export const ELCR_MASTER_PORT: u32 = 0x4d0;
export const ELCR_SLAVE_PORT: u32 = 0x4d1;
const EOI_LEVEL_NONE: i32 = -1;
const EOI_LEVEL_UNKNOWN: i32 = -2;
/** The level is the ISR bit the write clears, seen by reading ISR after it. */
const EOI_LEVEL_FROM_ISR: i32 = -3;
/** An acknowledge took no level on a chip, or one the vector does not tell. */
const LEVEL_NONE: i32 = -1;
const LEVEL_UNKNOWN: i32 = -2;
const DEFAULT_LEVEL: i32 = 7;

/** The registers software can read from one chip. */
export class PicStatus {
  irr: u32 = 0;
  isr: u32 = 0;
  imr: u32 = 0;

  clear(): void {
    this.irr = 0;
    this.isr = 0;
    this.imr = 0;
  }

  copyFrom(o: PicStatus): void {
    this.irr = o.irr;
    this.isr = o.isr;
    this.imr = o.imr;
  }

  describe(io: FieldIO): void {
    this.irr = io.bits("irr", this.irr, 0xff);
    this.isr = io.bits("isr", this.isr, 0xff);
    this.imr = io.bits("imr", this.imr, 0xff);
  }
}

export class PicChipShadow {
  ctl: PicControl = new PicControl();
  /** The chip's priority pointer may have moved unseen (see the file comment). */
  lowestPriorityStale: bool = false;
  /**
   * The readable registers as they were just before the pending poll command: while a poll
   * waits they cannot be read without answering it. IMR follows trapped writes meanwhile.
   */
  pollStatus: PicStatus = new PicStatus();
  /** What prepareWrite() found a rotate-on-non-specific-EOI will clear. */
  private eoiLevel: i32 = EOI_LEVEL_NONE;
  private probe: PicStatus = new PicStatus();
  /** ISR just before a rotate-on-non-specific-EOI whose level is EOI_LEVEL_FROM_ISR. */
  private isrBefore: u32 = 0;
  /** Whether every acknowledge exits (policy `full`), so the shadow sees each vector. */
  seesAcknowledges: bool = false;
  /** The registers just before an acknowledge, when prepareAcknowledge() could read them. */
  private beforeAcknowledge: PicStatus = new PicStatus();
  private beforeAcknowledgeRead: bool = false;

  constructor(
    public command: u32,
    public data: u32,
  ) {}

  reset(): void {
    this.ctl.reset();
    this.lowestPriorityStale = false;
    this.pollStatus.clear();
    this.eoiLevel = EOI_LEVEL_NONE;
  }

  copyFrom(o: PicChipShadow): void {
    this.ctl.copyFrom(o.ctl);
    this.lowestPriorityStale = o.lowestPriorityStale;
    this.pollStatus.copyFrom(o.pollStatus);
    this.eoiLevel = EOI_LEVEL_NONE;
  }

  /**
   * Reads IRR, ISR and IMR through the ports and puts the read-register select back. Must not
   * be called while a poll is pending: the first read would answer it.
   */
  readStatus(bus: HardwareBus, out: PicStatus): void {
    const isrSelected = this.ctl.readIsr;
    const selected = bus.inb(this.command);
    bus.outb(this.command, OCW3_SELECT | OCW3_RR | (isrSelected ? 0 : OCW3_RIS));
    const other = bus.inb(this.command);
    bus.outb(this.command, OCW3_SELECT | OCW3_RR | (isrSelected ? OCW3_RIS : 0));
    out.irr = isrSelected ? other : selected;
    out.isr = isrSelected ? selected : other;
    out.imr = bus.inb(this.data);
  }

  prepareCommand(bus: HardwareBus, value: u32): void {
    const c = this.ctl;
    if ((value & (ICW1_INIT | OCW3_SELECT)) == OCW3_SELECT) {
      if ((value & OCW3_POLL) != 0 && !c.pollPending) this.readStatus(bus, this.pollStatus);
    } else if ((value & ICW1_INIT) == 0 && value >>> 5 == Ocw2.RotateOnNonSpecificEoi) {
      if (c.pollPending) {
        this.eoiLevel = EOI_LEVEL_UNKNOWN;
      } else {
        const status = this.probe;
        this.readStatus(bus, status);
        this.isrBefore = status.isr;
        this.eoiLevel = this.lowestPriorityStale ? EOI_LEVEL_FROM_ISR : c.eoiTarget(status.isr, status.imr);
      }
    }
  }

  /** Just after a command write: a rotate whose level only ISR can tell reads it again. */
  completeCommand(bus: HardwareBus): void {
    if (this.eoiLevel != EOI_LEVEL_FROM_ISR) return;
    this.readStatus(bus, this.probe);
    const cleared = this.isrBefore & ~this.probe.isr;
    this.eoiLevel = cleared == 0 ? EOI_LEVEL_NONE : <i32>ctz(cleared);
  }

  observeCommand(value: u32): void {
    const c = this.ctl;
    if ((value & ICW1_INIT) != 0) {
      c.initialise(value);
      this.lowestPriorityStale = false;
    } else if ((value & OCW3_SELECT) != 0) {
      c.ocw3(value);
    } else {
      const cmd = value >>> 5;
      let level: i32 = EOI_LEVEL_NONE;
      if (cmd == Ocw2.RotateOnNonSpecificEoi) {
        level = this.eoiLevel;
        this.eoiLevel = EOI_LEVEL_NONE;
        if (level == EOI_LEVEL_UNKNOWN) this.lowestPriorityStale = true;
      }
      if (c.pollPending) this.endWhilePolling(cmd, value);
      c.ocw2(value, level);
      if (level >= 0 || cmd == Ocw2.SetPriority || cmd == Ocw2.RotateOnSpecificEoi) {
        this.lowestPriorityStale = false;
      }
    }
    this.noteUnseenRotation();
  }

  /**
   * A specific EOI while a poll waits ends its level in the registers saved at the poll
   * command too. (A non-specific one ends the highest level in service now, which an
   * acknowledge since the poll command, not trapped under `blmvisor`, may have changed.)
   */
  private endWhilePolling(cmd: u32, value: u32): void {
    if (cmd == Ocw2.SpecificEoi || cmd == Ocw2.RotateOnSpecificEoi) this.pollStatus.isr &= ~(<u32>1 << (value & 7));
  }

  observeData(value: u32): void {
    const c = this.ctl;
    if (c.initStep != InitStep.Ready) c.initWord(value);
    else if (c.pollPending) this.pollStatus.imr = value;
    this.noteUnseenRotation();
  }

  /** A read of either port answers a pending poll. */
  observeRead(value: u32): void {
    const c = this.ctl;
    if (!c.pollPending) return;
    c.pollPending = false;
    // QEMU 7.2 applies automatic EOI to a poll too, rotating to the polled level.
    if (c.compatQemu && c.autoEoi() && c.rotateInAeoi && (value & 0x80) != 0) c.lowestPriority = value & 7;
  }

  private noteUnseenRotation(): void {
    if (this.rotatesOnAcknowledge() && !this.seesAcknowledges) this.lowestPriorityStale = true;
  }

  @inline
  rotatesOnAcknowledge(): bool {
    return this.ctl.autoEoi() && this.ctl.rotateInAeoi;
  }

  /** Before an acknowledge that exits: what its rotation depends on (unless a poll waits). */
  prepareAcknowledge(bus: HardwareBus): void {
    this.beforeAcknowledgeRead = false;
    if (!this.rotatesOnAcknowledge() || this.ctl.pollPending) return;
    this.readStatus(bus, this.beforeAcknowledge);
    this.beforeAcknowledgeRead = true;
  }

  /**
   * After it: `level` is the level this chip took in service (LEVEL_NONE, LEVEL_UNKNOWN). The
   * automatic EOI ended the highest in-service level then and made it the lowest priority
   * (QEMU 7.2: `level` itself, compat).
   */
  completeAcknowledge(level: i32): void {
    const c = this.ctl;
    if (!this.rotatesOnAcknowledge() || level == LEVEL_NONE) return;
    const before = this.beforeAcknowledge;
    if (level == LEVEL_UNKNOWN || !this.beforeAcknowledgeRead) {
      this.lowestPriorityStale = true;
      return;
    }
    const bit: u32 = 1 << <u32>level;
    const next = c.compatQemu ? <u32>level : <u32>c.eoiTarget(before.isr | bit, before.imr);
    if (level == DEFAULT_LEVEL) {
      // No request on IR7: the IR7 vector was a default IR7, which takes no level.
      if ((before.irr & bit) == 0) return;
      // IR7 requested, but a withdrawn request gives the same vector.
      if (next != c.lowestPriority || this.lowestPriorityStale) {
        this.lowestPriorityStale = true;
        return;
      }
    }
    c.lowestPriority = next;
    this.lowestPriorityStale = false;
  }

  armTraps(traps: IoTraps): void {
    const c = this.ctl;
    const reads: u8 = c.pollPending ? TRAP_READ : 0;
    traps.put(this.command, TRAP_WRITE | reads);
    traps.put(this.data, (c.initStep != InitStep.Ready || c.pollPending ? TRAP_WRITE : 0) | reads);
  }

  describe(io: FieldIO): void {
    this.ctl.describe(io);
    this.lowestPriorityStale = io.flag("lowestPriorityStale", this.lowestPriorityStale);
    io.begin("pollStatus");
    this.pollStatus.describe(io);
    io.end();
  }
}

export class PicShadow extends DeviceShadow {
  master: PicChipShadow = new PicChipShadow(0x20, 0x21);
  slave: PicChipShadow = new PicChipShadow(0xa0, 0xa1);

  /** Decode as QEMU 7.2 does; set from the board configuration, like the devices. */
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
  }

  /** Whether every acknowledge exits to the hypervisor (policy `full`); kept by reset(). */
  set seesAcknowledges(on: bool) {
    this.master.seesAcknowledges = on;
    this.slave.seesAcknowledges = on;
  }

  /** Whether an acknowledge may rotate a chip's priorities (automatic EOI, rotate-in-AEOI). */
  followsAcknowledges(): bool {
    return this.master.seesAcknowledges && (this.master.rotatesOnAcknowledge() || this.slave.rotatesOnAcknowledge());
  }

  prepareAcknowledge(bus: HardwareBus): void {
    this.master.prepareAcknowledge(bus);
    this.slave.prepareAcknowledge(bus);
  }

  /** An acknowledge the PICs answered with `vector`: which level each chip took, from it. */
  completeAcknowledge(vector: i32): void {
    const m = this.master.ctl;
    const slaveWired = m.compatQemu || (!m.single() && (m.icw3 & 0xff) != 0);
    let own = LEVEL_NONE;
    let fromSlave = LEVEL_NONE;
    for (let level = 0; level < 8; level++) {
      if (!m.cascades(level) && m.vector(level) == vector) own = level;
      if (slaveWired && this.slave.ctl.vector(level) == vector) fromSlave = level;
    }
    // Through the cascade: a slave's vector, or nobody's (open bus).
    const cascaded = slaveWired && (fromSlave != LEVEL_NONE || vector == OPEN_BUS_VECTOR);
    let masterLevel = own;
    let slaveLevel = LEVEL_NONE;
    if (own != LEVEL_NONE && cascaded) {
      // The master's own vector and one through the cascade coincide: neither level is known.
      masterLevel = LEVEL_UNKNOWN;
      slaveLevel = LEVEL_UNKNOWN;
    } else if (cascaded) {
      masterLevel = cascadeInput(m);
      slaveLevel = fromSlave;
    }
    this.master.completeAcknowledge(masterLevel);
    this.slave.completeAcknowledge(slaveLevel);
  }

  copyFrom(o: PicShadow): void {
    this.master.copyFrom(o.master);
    this.slave.copyFrom(o.slave);
  }

  private chipOf(port: u32): PicChipShadow | null {
    if (port == 0x20 || port == 0x21) return this.master;
    if (port == 0xa0 || port == 0xa1) return this.slave;
    return null;
  }

  /**
   * A trapped guest write about to be performed. A rotate-on-non-specific-EOI and a poll
   * command depend on registers the write itself hides, so they are read first.
   */
  prepareWrite(bus: HardwareBus, port: u32, value: u32): void {
    const chip = this.chipOf(port);
    if (chip && port == chip.command) chip.prepareCommand(bus, value);
  }

  /** The same write, just performed, before observeWrite() sees it. */
  completeWrite(bus: HardwareBus, port: u32): void {
    const chip = this.chipOf(port);
    if (chip && port == chip.command) chip.completeCommand(bus);
  }

  observeWrite(port: u32, value: u32): void {
    const chip = this.chipOf(port);
    if (!chip) return;
    if (port == chip.command) chip.observeCommand(value);
    else chip.observeData(value);
  }

  observeRead(port: u32, value: u32): void {
    const chip = this.chipOf(port);
    if (chip) chip.observeRead(value);
  }

  armTraps(traps: IoTraps): void {
    this.master.armTraps(traps);
    this.slave.armTraps(traps);
    traps.put(ELCR_MASTER_PORT, 0);
    traps.put(ELCR_SLAVE_PORT, 0);
  }

  /** After an access to `port`: only that chip's needs can have changed (ELCR has none). */
  armChipTraps(port: u32, traps: IoTraps): void {
    const chip = this.chipOf(port);
    if (chip) chip.armTraps(traps);
  }

  describe(io: FieldIO): void {
    io.begin("master");
    this.master.describe(io);
    io.end();
    io.begin("slave");
    this.slave.describe(io);
    io.end();
  }
}

/** The master's one cascade input, or LEVEL_UNKNOWN when ICW3 names several. */
function cascadeInput(master: PicControl): i32 {
  if (master.compatQemu) return CASCADE_INPUT;
  const inputs = master.icw3 & 0xff;
  return popcnt(inputs) == 1 ? <i32>ctz(inputs) : LEVEL_UNKNOWN;
}
