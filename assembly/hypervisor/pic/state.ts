// Capture and reconstruction of the two 8259As through the port interface and the shadow.
// docs/hypervisor.md (Capture, Reconstruction, What cannot be rebuilt exactly) explains both.

import { FieldIO } from "../../common/fields";
import {
  ICW1_IC4, ICW1_INIT, ICW1_SNGL, OCW3_ESMM, OCW3_POLL, OCW3_RIS, OCW3_RR, OCW3_SELECT, OCW3_SMM,
  InitStep, Ocw2, PicControl,
} from "../../registers/pic";
import { HardwareBus } from "../bus";
import { ELCR_MASTER_PORT, ELCR_SLAVE_PORT, PicChipShadow, PicShadow, PicStatus } from "./shadow";

const CASCADE_LINE: i32 = 2;

export class PicChipRecord {
  status: PicStatus = new PicStatus();
  elcr: u32 = 0;

  describe(io: FieldIO): void {
    this.status.describe(io);
    this.elcr = io.bits("elcr", this.elcr, 0xff);
  }
}

export class PicRecord {
  master: PicChipRecord = new PicChipRecord();
  slave: PicChipRecord = new PicChipRecord();
  shadow: PicShadow = new PicShadow();

  describe(io: FieldIO): void {
    io.begin("master");
    this.master.describe(io);
    io.end();
    io.begin("slave");
    this.slave.describe(io);
    io.end();
    io.begin("shadow");
    this.shadow.describe(io);
    io.end();
  }
}

/**
 * Reads IRR and ISR (OCW3 select, then the select put back), IMR and ELCR; the rest is the
 * shadow's. A chip whose poll is pending cannot be read (a read would answer the poll): its
 * record holds the registers the shadow read just before the poll command, with the IMR
 * writes and specific EOIs trapped since applied.
 */
export function capturePic(bus: HardwareBus, shadow: PicShadow, out: PicRecord): void {
  captureChip(bus, shadow.master, ELCR_MASTER_PORT, out.master);
  captureChip(bus, shadow.slave, ELCR_SLAVE_PORT, out.slave);
  out.shadow.copyFrom(shadow);
}

function captureChip(bus: HardwareBus, shadow: PicChipShadow, elcrPort: u32, out: PicChipRecord): void {
  if (shadow.ctl.pollPending) out.status.copyFrom(shadow.pollStatus);
  else shadow.readStatus(bus, out.status);
  out.elcr = bus.inb(elcrPort);
}

/**
 * On a freshly reset pair, master first, each chip: (1) ICW1–ICW3 but not yet ICW4 (before
 * ICW4 QEMU 7.2 has automatic EOI off, and a poll under AEOI would not set the in-service bit;
 * a chip caught half way through its ICWs gets the same partial sequence); (2) each in-service
 * level by an edge on its input and a poll, with that level made highest by a set-priority;
 * (3) requests from the captured input levels, a taken edge consumed by a poll and a specific
 * EOI; (4) rotation, rotate-in-AEOI, ICW4, IMR, ELCR, then OCW3 for special mask, read select
 * and a pending poll. ISA line 2 is held high from the master's rebuild until the slave is
 * done, so nothing the slave does makes an edge on master IR2.
 */
export function reconstructPic(bus: HardwareBus, rec: PicRecord, isaLevels: u32, shadow: PicShadow): void {
  const compat = bus.config().compatQemu;
  const lineTwo: u32 = 1 << <u32>CASCADE_LINE;
  new ChipBuilder(bus, rec.shadow.master, 0, compat).build(rec.master, (isaLevels & 0xff) | lineTwo, ELCR_MASTER_PORT);
  new ChipBuilder(bus, rec.shadow.slave, 8, compat).build(rec.slave, (isaLevels >>> 8) & 0xff, ELCR_SLAVE_PORT);
  bus.setIsaLine(CASCADE_LINE, (isaLevels & lineTwo) != 0);
  shadow.copyFrom(rec.shadow);
}

/** Drives one chip, through its ports and its eight ISA lines, into a recorded state. */
class ChipBuilder {
  private ctl: PicControl;
  private command: u32;
  private data: u32;
  /** Input levels and latched edge requests as the rebuild has made them so far. */
  private high: u32 = 0;
  private requested: u32 = 0;
  /** Whether IRR follows the inputs while the rebuild runs (ICW1 LTIM; ELCR comes last). */
  private levelMode: bool;

  constructor(
    private bus: HardwareBus,
    shadow: PicChipShadow,
    private firstLine: i32,
    private compat: bool,
  ) {
    this.ctl = shadow.ctl;
    this.command = shadow.command;
    this.data = shadow.data;
    // QEMU 7.2 ignores LTIM.
    this.levelMode = !compat && shadow.ctl.levelTriggered();
  }

  /** `inputs`: the level each input must have at the end; `rec`: the readable registers. */
  build(rec: PicChipRecord, inputs: u32, elcrPort: u32): void {
    const c = this.ctl;
    const bus = this.bus;
    const initialised = (c.icw1 & ICW1_INIT) != 0;
    const complete = c.initStep == InitStep.Ready;
    if (initialised) this.initialiseUpToIcw4();
    const status = rec.status;
    for (let level = 0; level < 8; level++) {
      if (((status.isr >>> <u32>level) & 1) != 0) this.putInService(level);
    }
    for (let level = 0; level < 8; level++) {
      this.settleRequest(level, ((inputs >>> <u32>level) & 1) != 0, ((status.irr >>> <u32>level) & 1) != 0);
    }
    bus.outb(this.command, (Ocw2.SetPriority << 5) | c.lowestPriority);
    if (c.rotateInAeoi) bus.outb(this.command, Ocw2.RotateInAeoiSet << 5);
    if (initialised && complete && (c.icw1 & ICW1_IC4) != 0) bus.outb(this.data, c.icw4);
    // Half way through the ICWs, IMR is the zero ICW1 left and OCW1 cannot be written yet.
    if (complete) bus.outb(this.data, status.imr);
    bus.outb(elcrPort, rec.elcr);
    let ocw3 = OCW3_SELECT;
    if (c.specialMask) ocw3 |= OCW3_ESMM | OCW3_SMM;
    if (c.readIsr) ocw3 |= OCW3_RR | OCW3_RIS;
    if (c.pollPending) ocw3 |= OCW3_POLL;
    if (ocw3 != OCW3_SELECT) bus.outb(this.command, ocw3);
  }

  /** The recorded ICWs before ICW4, or the recorded part of an unfinished sequence. */
  private initialiseUpToIcw4(): void {
    const c = this.ctl;
    const bus = this.bus;
    const complete = c.initStep == InitStep.Ready;
    if (!complete && !this.compat) {
      // A datasheet ICW1 keeps ICW2 and ICW4 until they are rewritten: put the recorded ones
      // in place with a complete single-mode sequence first.
      bus.outb(this.command, ICW1_INIT | ICW1_SNGL | ICW1_IC4);
      bus.outb(this.data, c.icw2);
      bus.outb(this.data, c.icw4);
    }
    bus.outb(this.command, c.icw1);
    const single = (c.icw1 & ICW1_SNGL) != 0;
    if (complete || c.initStep >= <u32>InitStep.Icw3) bus.outb(this.data, c.icw2);
    if (!single && (complete || c.initStep == InitStep.Icw4)) bus.outb(this.data, c.icw3);
  }

  private drive(level: i32, high: bool): void {
    const bit: u32 = 1 << <u32>level;
    if (((this.high & bit) != 0) == high) return;
    this.bus.setIsaLine(this.firstLine + level, high);
    if (high) {
      this.high |= bit;
      this.requested |= bit;
    } else {
      this.high &= ~bit;
      if (this.levelMode) this.requested &= ~bit;
    }
  }

  /** A fresh rising edge on `level`'s input: a new request. */
  private edge(level: i32): void {
    this.drive(level, false);
    this.drive(level, true);
  }

  /** Acknowledges `level`'s request by a poll, with `level` the highest priority for it. */
  private pollAcknowledge(level: i32): void {
    const bus = this.bus;
    bus.outb(this.command, (Ocw2.SetPriority << 5) | ((<u32>level + 7) & 7));
    bus.outb(this.command, OCW3_SELECT | OCW3_POLL);
    bus.inb(this.command);
    if (!this.levelMode) this.requested &= ~(<u32>1 << <u32>level);
  }

  private putInService(level: i32): void {
    this.edge(level);
    this.pollAcknowledge(level);
  }

  private settleRequest(level: i32, high: bool, requested: bool): void {
    const bit: u32 = 1 << <u32>level;
    if (this.levelMode) {
      this.drive(level, high);
      return;
    }
    if (requested) {
      if ((this.requested & bit) == 0) this.edge(level);
      this.drive(level, high);
      return;
    }
    this.drive(level, high);
    if ((this.requested & bit) != 0) {
      this.pollAcknowledge(level);
      this.bus.outb(this.command, (Ocw2.SpecificEoi << 5) | <u32>level);
    }
  }
}
