// The whole device-state record, and the order in which it is captured on the source and
// rebuilt on the destination. Everything here goes through the HardwareBus and the shadows:
// no device module is imported.

import { BoardConfig, MAX_CPUS } from "../board/config";
import { FieldIO } from "../common/fields";
import { HardwareBus } from "./bus";
import { FixupTable } from "./fixup";
import { ApicRecord, captureApics, reconstructApics } from "./apic/state";
import { PicRecord, capturePic, reconstructPic } from "./pic/state";
import { PicShadow } from "./pic/shadow";
import { PitRecord, capturePit, reconstructPit } from "./pit/state";
import { PitShadow } from "./pit/shadow";
import { CpuRecord, captureCpus, reconstructCpus } from "./cpu-state";

/** Above this the clock arithmetic (clock.ts) would overflow 64 bits. */
const MAX_HZ: u64 = 9_000_000_000;

export class DeviceRecord {
  config: BoardConfig = new BoardConfig();
  /** Virtual time T at which the state was captured; the destination resumes at T. */
  time: i64 = 0;
  /** Levels of ISA lines 0–15 and of the directly driven I/O APIC pins 0–23. */
  isaLevels: u32 = 0;
  gsiLevels: u32 = 0;
  pitRouted: bool = true;
  pic: PicRecord = new PicRecord();
  pit: PitRecord = new PitRecord();
  apic: ApicRecord = new ApicRecord();
  /** Each CPU's activity state and pending NMI (VMCS state, not device state). */
  cpu: CpuRecord = new CpuRecord();

  describe(io: FieldIO): void {
    io.begin("config");
    const c = this.config;
    c.pic = io.flag("pic", c.pic);
    c.pit = io.flag("pit", c.pit);
    c.lapic = io.flag("lapic", c.lapic);
    c.ioapic = io.flag("ioapic", c.ioapic);
    c.cpus = <i32>io.field("cpus", <u32>c.cpus, MAX_CPUS);
    if (c.cpus == 0 && io.error < 0) io.error = io.count - 1;
    c.pitIrq0 = io.flag("pitIrq0", c.pitIrq0);
    c.compatQemu = io.flag("compatQemu", c.compatQemu);
    c.apicBusHz = <i64>clampHz(io, io.wide("apicBusHz", <u64>c.apicBusHz));
    c.tscHz = <i64>clampHz(io, io.wide("tscHz", <u64>c.tscHz));
    io.end();
    this.cpu.count = max(c.cpus, 1);
    this.apic.count = this.cpu.count;
    this.time = io.time("time", this.time);
    io.begin("lines");
    this.isaLevels = io.field("isa", this.isaLevels, 0xffff);
    this.gsiLevels = io.field("gsi", this.gsiLevels, 0xffffff);
    this.pitRouted = io.flag("pitRouted", this.pitRouted);
    io.end();
    io.begin("pic");
    this.pic.describe(io);
    io.end();
    io.begin("pit");
    this.pit.describe(io);
    io.end();
    io.begin("apic");
    this.apic.describe(io);
    io.end();
    io.begin("cpu");
    this.cpu.describe(io);
    io.end();
  }
}

/** A clock rate must be 1 Hz .. 9 GHz; anything else in a record is rejected. */
function clampHz(io: FieldIO, hz: u64): u64 {
  if (hz == 0 || hz > MAX_HZ) {
    if (io.error < 0) io.error = io.count - 1;
    return 1_000_000_000;
  }
  return hz;
}

/**
 * Captures every device with the guest paused and the clock stopped. A fixup still pending
 * from an earlier reconstruction knows register values the hardware does not hold yet.
 */
export function captureDevices(bus: HardwareBus, pic: PicShadow, pit: PitShadow, fixups: FixupTable, out: DeviceRecord): void {
  const c = bus.config();
  copyConfig(c, out.config);
  out.time = bus.now();
  let isa: u32 = 0;
  for (let line = 0; line < 16; line++) if (bus.isaLine(line)) isa |= 1 << <u32>line;
  let gsi: u32 = 0;
  for (let pin = 0; pin < 24; pin++) if (bus.gsiLine(pin)) gsi |= 1 << <u32>pin;
  out.isaLevels = isa;
  out.gsiLevels = gsi;
  out.pitRouted = bus.pitIrq0Routed();
  if (c.pic) capturePic(bus, pic, out.pic);
  if (c.pit) capturePit(bus, pit, out.pit);
  if (c.lapic || c.ioapic) captureApics(bus, out.apic, fixups);
  captureCpus(bus, out.cpu);
}

/**
 * Rebuilds every device on a freshly reset destination whose clock stands before rec.time
 * (see RECONSTRUCT_WINDOW_NS). Order: lines held quiet and the PIT's window first (it needs
 * clock edges), then at time T the PICs, the PIT's wire to ISA line 0, the APICs (each CPU's
 * work left for after the resume goes into `fixups`) and the CPUs' own state.
 */
export function reconstructDevices(bus: HardwareBus, rec: DeviceRecord, pic: PicShadow, pit: PitShadow, fixups: FixupTable): void {
  const c = bus.config();
  bus.setPitIrq0Route(false);
  bus.setIsaLine(0, false);
  if (c.pit) reconstructPit(bus, rec.pit, pit);
  bus.advanceTo(rec.time);
  if (c.pic) reconstructPic(bus, rec.pic, rec.isaLevels, pic);
  else for (let line = 0; line < 16; line++) bus.setIsaLine(line, ((rec.isaLevels >>> <u32>line) & 1) != 0);
  // Reconnecting OUT0 raises no edge: line 0 already stands at OUT0's captured level.
  bus.setPitIrq0Route(rec.pitRouted);
  if (c.lapic || c.ioapic) reconstructApics(bus, rec.apic, rec.gsiLevels, fixups);
  else for (let pin = 0; pin < 24; pin++) bus.setGsiLine(pin, ((rec.gsiLevels >>> <u32>pin) & 1) != 0);
  reconstructCpus(bus, rec.cpu);
}

export function copyConfig(from: BoardConfig, to: BoardConfig): void {
  to.pic = from.pic;
  to.pit = from.pit;
  to.lapic = from.lapic;
  to.ioapic = from.ioapic;
  to.cpus = from.cpus;
  to.pitIrq0 = from.pitIrq0;
  to.compatQemu = from.compatQemu;
  to.apicBusHz = from.apicBusHz;
  to.tscHz = from.tscHz;
}
