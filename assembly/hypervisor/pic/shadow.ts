// The hypervisor's shadow of the two 8259As: the write-only state of each chip, learnt from
// the guest accesses it traps and decoded with the chip's own programming model. Under the
// `blmvisor` policy it traps only what carries that state: every command-port write (ICW1,
// OCW2 and OCW3 share the port, so every EOI exits), data-port writes while an ICW sequence
// runs, and both ports while a poll waits (the next read of either port answers it, and IMR
// cannot be read back until then). ELCR is readable and never trapped.
//
// Two things can move a chip's priority pointer out of the shadow's sight, and the shadow
// flags its copy as stale from then on until the guest sets the pointer explicitly again:
//  - acknowledges in automatic-EOI mode with rotate-in-AEOI on: the INTA cycle is not trapped;
//  - a rotate-on-non-specific-EOI while a poll is pending: the pointer becomes the in-service
//    level the EOI clears, which can only be read before the write, and any read of the chip
//    would answer the poll.
// Every other rotate-on-non-specific-EOI is exact: prepareWrite() reads ISR just before it and
// works out the level from the priorities, or, when the pointer is stale (so the priorities are
// not known), completeWrite() reads ISR again just after it: the bit that went is the level.

import { FieldIO } from "../../common/fields";
import {
  PicControl, ICW1_INIT, OCW3_SELECT, OCW3_RR, OCW3_RIS, OCW3_POLL, Ocw2, InitStep,
} from "../../registers/pic";
import { HardwareBus } from "../bus";
import { DeviceShadow, IoTraps, TRAP_READ, TRAP_WRITE } from "../traps";

export const ELCR_MASTER_PORT: u32 = 0x4d0;
export const ELCR_SLAVE_PORT: u32 = 0x4d1;
const EOI_LEVEL_NONE: i32 = -1;
const EOI_LEVEL_UNKNOWN: i32 = -2;
/** The level is the ISR bit the write clears, seen by reading ISR after it. */
const EOI_LEVEL_FROM_ISR: i32 = -3;

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
      c.ocw2(value, level);
      if (level >= 0 || cmd == Ocw2.SetPriority || cmd == Ocw2.RotateOnSpecificEoi) {
        this.lowestPriorityStale = false;
      }
    }
    this.noteUnseenRotation();
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
    const c = this.ctl;
    if (c.autoEoi() && c.rotateInAeoi) this.lowestPriorityStale = true;
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
