// Capture and reconstruction of the local APICs and the I/O APIC, through the HardwareBus only.
// docs/hypervisor.md (Capture, Reconstruction, What cannot be rebuilt exactly, Several CPUs)
// explains both.

import { HardwareBus } from "../bus";
import { FixupTable, PendingFixup } from "../fixup";
import { ApicTimerFixup } from "./timer-fixup";
import { IoApicPort, LapicPort, lapicEnabled, lapicPage, lapicX2 } from "./access";
import { runDuringRebuild } from "../cpu-state";
import { ApicRecord, IoApicRecord, LocalApicRecord } from "./record";
import { LapicRebuild } from "./lapic-rebuild";
import { ENTRY_LEVEL, ENTRY_MASKED, ENTRY_REMOTE_IRR, IOAPIC_PIN_COUNT, IOAPIC_REG_ID } from "../../registers/ioapic";
import {
  APIC_BASE_ENABLE, APIC_BASE_X2APIC, LVT_COUNT, MSR_APIC_BASE, MSR_TSC_DEADLINE, REG_DFR, REG_DIVIDE, REG_ESR,
  REG_ICR_HIGH, REG_ICR_LOW, REG_ID, REG_INITIAL_COUNT, REG_CURRENT_COUNT, REG_IRR, REG_ISR,
  REG_LDR, REG_LVT_FIRST, REG_SVR, REG_TMR, REG_TPR,
} from "../../registers/lapic";

export { ApicRecord, IoApicRecord, LocalApicRecord } from "./record";
export { ApicTimerFixup } from "./timer-fixup";

/**
 * Reads every CPU's local APIC (each on its own CPU) and the I/O APIC into `out`. `fixups`
 * hold the work a previous reconstruction may still have pending on this machine: registers
 * they answer for are taken as the guest would read them. The bus is left on its CPU.
 *
 * Reads registers with the clock stopped, each local APIC on its own CPU (an x2APIC one through
 * its MSRs); no read has a side effect, IOREGSEL is put back, and the ESR is read without the
 * write that would latch newer errors.
 */
export function captureApics(bus: HardwareBus, out: ApicRecord, fixups: FixupTable): void {
  const c = bus.config();
  const current = bus.cpu();
  out.count = c.cpus;
  out.ioapic.clear();
  for (let k = 0; k < c.cpus; k++) {
    const rec = unchecked(out.lapics[k]);
    rec.clear();
    if (!c.lapic) continue;
    bus.selectCpu(k);
    captureLocalApic(bus, rec, fixups.get(k));
  }
  bus.selectCpu(current);
  if (c.ioapic) captureIoApic(bus, out.ioapic);
}

function captureLocalApic(bus: HardwareBus, rec: LocalApicRecord, fixup: PendingFixup | null): void {
  rec.apicBase = bus.rdmsr(MSR_APIC_BASE);
  rec.tscDeadline = bus.rdmsr(MSR_TSC_DEADLINE);
  if (!lapicEnabled(bus)) return;
  rec.pageCaptured = true;
  const lapic = new LapicPort(bus, lapicPage(bus));
  if (lapicX2(bus)) {
    rec.id = <u32>bus.cpu() << 24;
  } else {
    rec.id = lapic.read(REG_ID);
    rec.ldr = lapic.read(REG_LDR);
    rec.dfr = lapic.read(REG_DFR);
  }
  rec.tpr = lapic.read(REG_TPR);
  rec.svr = lapic.read(REG_SVR);
  for (let i = 0; i < 8; i++) {
    const offset = <u32>i << 4;
    unchecked((rec.isr[i] = lapic.read(REG_ISR + offset)));
    unchecked((rec.tmr[i] = lapic.read(REG_TMR + offset)));
    unchecked((rec.irr[i] = lapic.read(REG_IRR + offset)));
  }
  rec.esr = lapic.read(REG_ESR);
  rec.icrLow = lapic.readAsGuest(REG_ICR_LOW, fixup);
  rec.icrHigh = lapic.readAsGuest(REG_ICR_HIGH, fixup);
  for (let i = 0; i < LVT_COUNT; i++) unchecked((rec.lvt[i] = lapic.read(REG_LVT_FIRST + (<u32>i << 4))));
  rec.initialCount = lapic.readAsGuest(REG_INITIAL_COUNT, fixup);
  rec.currentCount = lapic.readAsGuest(REG_CURRENT_COUNT, fixup);
  rec.divideConfig = lapic.readAsGuest(REG_DIVIDE, fixup);
}

function captureIoApic(bus: HardwareBus, rec: IoApicRecord): void {
  const io = new IoApicPort(bus);
  rec.ioregsel = io.selected();
  rec.id = io.read(IOAPIC_REG_ID);
  for (let pin = 0; pin < IOAPIC_PIN_COUNT; pin++) {
    unchecked((rec.low[pin] = io.readLow(pin)));
    unchecked((rec.high[pin] = io.readHigh(pin)));
  }
  io.select(rec.ioregsel);
}

/**
 * Rebuilds every local APIC and the I/O APIC at the current time T. `gsiLevels` bit p is the
 * captured level driven directly onto I/O APIC pin p; every such line is left at that level.
 * Each CPU's work left for after the resume (an ApicTimerFixup) goes into `fixups`. Leaves
 * every CPU running (cpu-state.ts puts their activity back) and the bus on CPU 0.
 *
 * At T on a freshly reset destination whose PICs and PIT are rebuilt and whose ISA lines stand
 * at their captured levels: IA32_APIC_BASE; each local APIC on its own CPU (LapicRebuild:
 * ISR/IRR/TMR with the I/O APIC entries waiting for an EOI, ESR, ICR, timer, LDR, DFR); the
 * I/O APIC once (entries masked, pin levels, unmasking, IOREGSEL); then every local APIC's
 * LVTs, TPR and SVR, and x2APIC mode last. The ICR's command is not written when other CPUs
 * could receive it: the fixup answers its reads until the guest writes it.
 */
export function reconstructApics(bus: HardwareBus, rec: ApicRecord, gsiLevels: u32, fixups: FixupTable): void {
  const c = bus.config();
  const n = c.cpus;
  const rebuilds = new Array<LapicRebuild>(n);
  for (let k = 0; k < n; k++) {
    bus.selectCpu(k);
    runDuringRebuild(bus);
    const saved = unchecked(rec.lapics[k]);
    if (c.lapic) bus.wrmsr(MSR_APIC_BASE, (saved.apicBase & ~APIC_BASE_X2APIC) | APIC_BASE_ENABLE);
    const rebuild = new LapicRebuild(bus, lapicPage(bus), saved, rec.ioapic);
    if (c.lapic) rebuild.prepare();
    unchecked((rebuilds[k] = rebuild));
  }
  if (n > 1) sharePins(rebuilds);
  for (let k = 0; k < n; k++) {
    bus.selectCpu(k);
    const rebuild = unchecked(rebuilds[k]);
    if (!c.lapic || !unchecked(rec.lapics[k]).pageCaptured) continue;
    const f = new ApicTimerFixup(bus);
    rebuild.rebuildVectors();
    rebuild.rebuildErrorsAndIcr(f, n > 1);
    rebuild.rebuildTimer(f, 0);
    if (f.active()) fixups.set(k, f);
  }
  // Entries still waiting for an EOI that no local APIC accounted for (it was disabled, or
  // absent: QEMU sets remote IRR even when nobody accepts).
  bus.selectCpu(0);
  if (c.ioapic) {
    let left: u32 = 0;
    for (let k = 0; k < n; k++) left |= unchecked(rebuilds[k]).pins;
    unchecked(rebuilds[0]).pins = left;
    unchecked(rebuilds[0]).deliverPendingPins();
  }
  for (let k = 0; k < n; k++) {
    bus.selectCpu(k);
    const saved = unchecked(rec.lapics[k]);
    if (c.lapic && saved.pageCaptured) unchecked(rebuilds[k]).quiesce();
    else if (c.lapic && (saved.apicBase & APIC_BASE_ENABLE) == 0) bus.wrmsr(MSR_APIC_BASE, saved.apicBase);
  }
  bus.selectCpu(0);
  if (c.ioapic) reconstructIoApic(bus, rec.ioapic, gsiLevels);
  else driveGsiLines(bus, gsiLevels);
  for (let k = 0; k < n; k++) {
    const saved = unchecked(rec.lapics[k]);
    if (!c.lapic || !saved.pageCaptured) continue;
    bus.selectCpu(k);
    unchecked(rebuilds[k]).finish();
    if ((saved.apicBase & APIC_BASE_X2APIC) != 0) bus.wrmsr(MSR_APIC_BASE, saved.apicBase);
  }
  bus.selectCpu(0);
}

/**
 * Several CPUs: a pin waiting for an EOI is delivered by the last CPU (in rebuild order) whose
 * record holds its vector. The other holders of that vector take it through the borrowed pin,
 * whose freeing EOI ends every entry of the vector: rebuilt before the pin's own delivery, they
 * leave its remote IRR set. A pin nobody holds is left to CPU 0 (its rebuild lets it pass, or
 * leaves it for the end).
 */
function sharePins(rebuilds: Array<LapicRebuild>): void {
  const all = unchecked(rebuilds[0]).pins;
  let unclaimed = all;
  for (let k = 0; k < rebuilds.length; k++) unchecked(rebuilds[k]).pins = 0;
  let pending = all;
  while (pending != 0) {
    const pin = <i32>ctz(pending);
    pending &= pending - 1;
    const vector = unchecked(rebuilds[0]).pinVector(pin);
    for (let k = rebuilds.length - 1; k >= 0; k--) {
      const r = unchecked(rebuilds[k]);
      if (!r.holds(vector)) continue;
      r.pins = r.pins | (1 << <u32>pin);
      unclaimed &= ~(1 << <u32>pin);
      break;
    }
  }
  unchecked(rebuilds[0]).pins = unchecked(rebuilds[0]).pins | unclaimed;
}

/**
 * CPU `cpu`'s timer phase, learnt after the reconstruction (the source measures it only once
 * it has left the guest for good) and applied at the resume time itself, before anything ran:
 * the timer is loaded again, now at that phase. Updates that CPU's fixup in `fixups`.
 */
export function applyTimerPhase(bus: HardwareBus, rec: ApicRecord, fixups: FixupTable, cpu: i32, phase: u32): void {
  const lapic = unchecked(rec.lapics[cpu]);
  if (!bus.config().lapic || !lapic.pageCaptured || phase == 0) return;
  const current = bus.cpu();
  bus.selectCpu(cpu);
  const fixup = fixups.get(cpu);
  const f = fixup instanceof ApicTimerFixup ? <ApicTimerFixup>fixup : new ApicTimerFixup(bus);
  new LapicRebuild(bus, lapicPage(bus), lapic, rec.ioapic).rebuildTimer(f, <i64>phase);
  if (f.active()) fixups.set(cpu, f);
  bus.selectCpu(current);
}

function reconstructIoApic(bus: HardwareBus, rec: IoApicRecord, gsiLevels: u32): void {
  const io = new IoApicPort(bus);
  const qemu = bus.config().compatQemu;
  io.write(IOAPIC_REG_ID, rec.id);
  let unlatched: u32 = 0;
  for (let pin = 0; pin < IOAPIC_PIN_COUNT; pin++) {
    const low = unchecked(rec.low[pin]);
    io.writeHigh(pin, unchecked(rec.high[pin]));
    // QEMU: an unmasked level entry whose line is high and that is not waiting for an EOI
    // cannot have latched the line (it would have sent it): its line must rise while the
    // entry is not level-triggered, or the unmasking below would send.
    if (qemu && (low & (ENTRY_LEVEL | ENTRY_MASKED | ENTRY_REMOTE_IRR)) == ENTRY_LEVEL && ((gsiLevels >>> <u32>pin) & 1) != 0) {
      unlatched |= 1 << <u32>pin;
      io.writeLow(pin, (low & ~ENTRY_LEVEL) | ENTRY_MASKED);
    } else {
      io.writeLow(pin, low | ENTRY_MASKED);
    }
  }
  // Lines rise while their entries are masked: a level entry latches its request (QEMU) or
  // sees it at the unmasking (datasheet); a masked edge entry ignores it, as on the source.
  driveGsiLines(bus, gsiLevels);
  for (let pin = 0; pin < IOAPIC_PIN_COUNT; pin++) {
    const low = unchecked(rec.low[pin]);
    if ((low & ENTRY_MASKED) == 0 || (unlatched & (1 << <u32>pin)) != 0) io.writeLow(pin, low);
  }
  io.select(rec.ioregsel);
}

function driveGsiLines(bus: HardwareBus, gsiLevels: u32): void {
  for (let pin = 0; pin < IOAPIC_PIN_COUNT; pin++) bus.setGsiLine(pin, ((gsiLevels >>> <u32>pin) & 1) != 0);
}
