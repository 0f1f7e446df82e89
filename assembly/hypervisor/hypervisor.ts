// The thin hypervisor: it sits between every guest access and the hardware. An access it does
// not intercept goes straight to the device; one it does is a VM exit — counted, performed,
// and shown to the shadow of the device it touched. What it intercepts is its policy:
//   none      bare metal: nothing, so hidden PIC/PIT state is lost and migration must refuse;
//   full      a commodity VMM: every port, MMIO and MSR access and every external interrupt;
//   blmvisor  the minimum that still captures every write-only state, as each shadow asks,
//             plus temporary traps a reconstruction leaves behind (see fixup.ts). The xAPIC
//             page and the x2APIC MSRs pass through (EPT, MSR bitmaps).
// On every CPU it runs on: an INIT signal to a CPU in the guest, and a start-up IPI to a CPU
// waiting for one, always exit (as on VMX); the hypervisor counts them and carries them out.

import { Board, CpuSignals, IOAPIC_BASE, isPicPort, isPitPort } from "../board/board";
import { NEVER } from "../common/clock";
import { ApicRecord } from "./apic/record";
import { TimerPhaseProbe } from "./apic/timer-phase";
import { BoardBus } from "./board-bus";
import { ExitCounters } from "./exits";
import { ExitReason, MmioRegion, Policy } from "../abi/codes";
import { FixupTable, PendingFixup } from "./fixup";
import { MSR_X2APIC_FIRST, REG_ICR_HIGH, REG_ICR_LOW, X2APIC_ICR, isX2ApicMsr } from "../registers/lapic";
import { PicShadow } from "./pic/shadow";
import { COMMAND as PIT_COMMAND, PitShadow } from "./pit/shadow";
import { PIT_CONTROL_PORT } from "../registers/pit";
import { IoTraps, TRAP_READ, TRAP_WRITE } from "./traps";

const MSR_APIC_BASE: u32 = 0x1b;
const PORT_61: u32 = 0x61;
const APIC_BASE_MASK: u64 = 0xfffff000;
const APIC_GLOBAL_ENABLE: u64 = 1 << 11;
const APIC_X2APIC: u64 = 1 << 10;
const APIC_ISR_OFFSET: u32 = 0x100;
const X2APIC_ISR_MSR: u32 = 0x810;

/** INIT and start-up signals reach the CPU through the hypervisor: each is an exit. */
class InterceptedCpuSignals extends CpuSignals {
  constructor(board: Board, private hypervisor: Hypervisor) {
    super(board);
  }
  init(cpu: i32): void {
    const hv = this.hypervisor;
    if (hv.policy != Policy.None) hv.exits.cpuSignal(ExitReason.InitSignal, cpu);
    this.board.performInit(cpu);
    // An APIC a reconstruction left work on is back in its INIT state: nothing left to do.
    hv.dropFixup(cpu);
  }
  startUp(cpu: i32, vector: u32): void {
    if (this.hypervisor.policy != Policy.None) this.hypervisor.exits.cpuSignal(ExitReason.Sipi, cpu);
    this.board.performStartUp(cpu, vector);
  }
}

export class Hypervisor {
  policy: Policy = Policy.Blmvisor;
  traps: IoTraps = new IoTraps();
  exits: ExitCounters = new ExitCounters();
  picShadow: PicShadow = new PicShadow();
  pitShadow: PitShadow = new PitShadow();
  bus: BoardBus;
  /** Work a reconstruction left for after the resume, per CPU. */
  fixups: FixupTable = new FixupTable();
  /** The current CPU's fixup, or null. */
  fixup: PendingFixup | null = null;
  /** The local APIC page as this hypervisor knows it (from a trapped or its own MSR access). */
  private lapicPage: u32 = 0xfee00000;

  constructor(public board: Board) {
    this.bus = new BoardBus(board);
    board.signals = new InterceptedCpuSignals(board, this);
  }

  /** The guest operations that follow run on CPU `cpu`. */
  selectCpu(cpu: i32): void {
    this.board.selectCpu(cpu);
    this.exits.cpu = cpu;
    this.fixup = this.fixups.get(cpu);
  }

  dropFixup(cpu: i32): void {
    this.fixups.set(cpu, null);
    if (cpu == this.board.cpu) this.fixup = null;
  }

  /** Sets the policy on a freshly reset board: shadows start from power-on state. */
  start(policy: Policy): void {
    this.policy = policy;
    this.fixups.clear();
    this.fixup = null;
    this.lapicPage = 0xfee00000;
    this.picShadow.compatQemu = this.board.config.compatQemu;
    this.picShadow.reset();
    this.picShadow.seesAcknowledges = policy == Policy.Full;
    this.pitShadow.compatQemu = this.board.config.compatQemu;
    this.pitShadow.reset();
    this.exits.clear();
    this.armTraps();
  }

  /** Whether the shadows have seen every access that carries hidden state since reset. */
  shadowsValid(): bool {
    return this.policy != Policy.None;
  }

  armTraps(): void {
    const t = this.traps;
    t.clear();
    if (this.policy == Policy.Full) {
      t.setAll(TRAP_READ | TRAP_WRITE);
    } else if (this.policy == Policy.Blmvisor) {
      const c = this.board.config;
      if (c.pic) this.picShadow.armTraps(t);
      if (c.pit) this.pitShadow.armTraps(t);
    }
  }

  /**
   * A reconstruction has filled `fixups`: the current CPU's is in force now, and the page
   * they trap is CPU 0's (the page is where every CPU's registers decode).
   */
  fixupsInstalled(): void {
    const current = this.board.cpu;
    this.board.selectCpu(0);
    this.lapicPage = <u32>(this.bus.rdmsr(MSR_APIC_BASE) & APIC_BASE_MASK);
    this.selectCpu(current);
  }

  // ---- port I/O ---------------------------------------------------------------------------

  @inline
  portIn(port: u32, size: i32): u32 {
    if (!this.intercepts(port, size, TRAP_READ)) return this.board.portRead(port, size);
    return this.trappedIn(port, size);
  }

  private trappedIn(port: u32, size: i32): u32 {
    this.exits.io(port, false);
    let v: u32 = 0;
    const c = this.board.config;
    for (let i = 0; i < size; i++) {
      const p = (port + <u32>i) & 0xffff;
      let b: u32;
      if (c.pit && isPitPort(p)) {
        // A latch this hypervisor took over at a capture is answered here, not by the chip.
        const held = this.pitShadow.heldRead(p);
        b = held >= 0 ? <u32>held : this.board.inByte(p);
        this.observePit(p, b, false);
      } else {
        b = this.board.inByte(p);
        if (c.pic && isPicPort(p)) this.observePic(p, b, false);
      }
      v |= b << (<u32>i * 8);
    }
    return v;
  }

  @inline
  portOut(port: u32, value: u32, size: i32): void {
    if (!this.intercepts(port, size, TRAP_WRITE)) this.board.portWrite(port, value, size);
    else this.trappedOut(port, value, size);
  }

  private trappedOut(port: u32, value: u32, size: i32): void {
    this.exits.io(port, true);
    const c = this.board.config;
    for (let i = 0; i < size; i++) {
      const p = (port + <u32>i) & 0xffff;
      const b = (value >>> (<u32>i * 8)) & 0xff;
      if (c.pit && isPitPort(p)) {
        if (p == PORT_61) this.pitShadow.prepareGateWrite(this.bus, b);
        if (p == PIT_CONTROL_PORT) this.forwardPitCommand(b);
        else this.board.outByte(p, b);
        this.observePit(p, b, true);
      } else if (c.pic && isPicPort(p)) {
        // A rotate-on-EOI or a poll command changes hidden state that only the registers as
        // they stand around the write can tell: the PIC shadow reads them (bus reads, no exits).
        this.picShadow.prepareWrite(this.bus, p, b);
        this.board.outByte(p, b);
        this.picShadow.completeWrite(this.bus, p);
        this.observePic(p, b, true);
      } else {
        this.board.outByte(p, b);
      }
    }
  }

  /** A control-port write, less the latches of what the PIT shadow holds (pit/shadow.ts). */
  private forwardPitCommand(value: u32): void {
    for (let commands = this.pitShadow.forwardedCommands(value); commands & PIT_COMMAND; commands >>>= 16) {
      this.board.outByte(PIT_CONTROL_PORT, commands & 0xff);
    }
  }

  /** Like the VMX I/O bitmap: an access exits if any port it covers is intercepted. */
  @inline
  private intercepts(port: u32, size: i32, mask: u8): bool {
    if (size == 1) return this.traps.traps(port, mask);
    for (let i = 0; i < size; i++) if (this.traps.traps(port + <u32>i, mask)) return true;
    return false;
  }

  /** Shows a trapped PIC access to the PIC shadow, which may re-arm its traps. */
  @inline
  private observePic(port: u32, value: u32, write: bool): void {
    if (write) this.picShadow.observeWrite(port, value);
    else this.picShadow.observeRead(port, value);
    if (this.policy == Policy.Blmvisor) this.picShadow.armChipTraps(port, this.traps);
  }

  /** Shows a trapped PIT access to the PIT shadow, which may re-arm its traps. */
  @inline
  private observePit(port: u32, value: u32, write: bool): void {
    this.pitShadow.now = this.board.now;
    if (write) this.pitShadow.observeWrite(port, value);
    else this.pitShadow.observeRead(port, value);
    if (this.policy == Policy.Blmvisor) this.pitShadow.armPortTraps(port, value, this.traps);
  }

  // ---- MMIO -------------------------------------------------------------------------------

  @inline
  private mmioIntercepted(addr: u32): bool {
    return this.policy == Policy.Full || (this.fixup != null && (addr & 0xfffff000) == this.lapicPage);
  }

  private regionOf(addr: u32): MmioRegion {
    if ((addr & 0xfffff000) == this.lapicPage) return MmioRegion.LocalApic;
    if ((addr & 0xfffff000) == IOAPIC_BASE) return MmioRegion.IoApic;
    return MmioRegion.Other;
  }

  @inline
  readl(addr: u32): u32 {
    if (!this.mmioIntercepted(addr)) return this.board.mmioRead(addr);
    return this.trappedReadl(addr);
  }

  private trappedReadl(addr: u32): u32 {
    this.exits.mmio(this.regionOf(addr), addr & 0xfff, false);
    const fixup = this.fixup;
    if (fixup && (addr & 0xfffff000) == this.lapicPage) {
      const emulated = fixup.emulateRead(addr & 0xfff);
      if (emulated >= 0) return <u32>emulated;
    }
    return this.board.mmioRead(addr);
  }

  @inline
  writel(addr: u32, value: u32): void {
    if (!this.mmioIntercepted(addr)) this.board.mmioWrite(addr, value);
    else this.trappedWritel(addr, value);
  }

  private trappedWritel(addr: u32, value: u32): void {
    this.exits.mmio(this.regionOf(addr), addr & 0xfff, true);
    this.board.mmioWrite(addr, value);
    const fixup = this.fixup;
    if (fixup && (addr & 0xfffff000) == this.lapicPage) {
      fixup.guestWrote(addr & 0xfff, value);
      if (!fixup.active()) this.dropFixup(this.board.cpu);
    }
  }

  // ---- MSRs -------------------------------------------------------------------------------

  /**
   * MSRs exit under `full`; while a fixup watches the current CPU's APIC, IA32_APIC_BASE
   * writes and the x2APIC registers (its page, in x2APIC mode) exit too.
   */
  @inline
  private msrIntercepted(msr: u32, write: bool): bool {
    if (this.policy == Policy.Full) return true;
    return this.fixup != null && ((write && msr == MSR_APIC_BASE) || isX2ApicMsr(msr));
  }

  rdmsr(msr: u32): u64 {
    if (!this.msrIntercepted(msr, false)) return this.board.rdmsr(msr);
    this.exits.msr(msr, false);
    const fixup = this.fixup;
    if (fixup && isX2ApicMsr(msr)) {
      const index = msr - MSR_X2APIC_FIRST;
      if (index == X2APIC_ICR) return this.emulatedX2Icr(fixup, this.board.rdmsr(msr));
      const emulated = fixup.emulateRead(index << 4);
      if (emulated >= 0) return <u64>emulated;
    }
    return this.board.rdmsr(msr);
  }

  /** The x2APIC ICR as the guest should read it: each half from the fixup if it answers for it. */
  private emulatedX2Icr(fixup: PendingFixup, hardware: u64): u64 {
    const low = fixup.emulateRead(REG_ICR_LOW);
    const high = fixup.emulateRead(REG_ICR_HIGH);
    return ((high >= 0 ? <u64>high : hardware >>> 32) << 32) | (low >= 0 ? <u64>low : hardware & 0xffff_ffff);
  }

  wrmsr(msr: u32, value: u64): void {
    if (!this.msrIntercepted(msr, true)) {
      this.board.wrmsr(msr, value);
      return;
    }
    this.exits.msr(msr, true);
    if (msr == MSR_APIC_BASE) this.lapicPage = <u32>(value & APIC_BASE_MASK);
    this.board.wrmsr(msr, value);
    const fixup = this.fixup;
    if (fixup && isX2ApicMsr(msr)) {
      fixup.guestWrote((msr - MSR_X2APIC_FIRST) << 4, <u32>value);
      if (!fixup.active()) this.dropFixup(this.board.cpu);
    }
  }

  // ---- interrupts and time ------------------------------------------------------------------

  /**
   * The CPU takes an interrupt; a commodity VMM exits on it to inject it itself, and so sees
   * the vector of every PIC acknowledge: a rotation in automatic-EOI mode follows from it.
   */
  @inline
  inta(): i32 {
    if (this.policy != Policy.Full || !this.board.interruptRequested()) return this.board.inta();
    return this.exitingInta();
  }

  /** inta() when it exits: the pin is asserted under `full`. */
  private exitingInta(): i32 {
    this.exits.externalInterrupt();
    const pic = this.picShadow;
    if (!this.board.config.pic || !pic.followsAcknowledges()) return this.board.inta();
    pic.prepareAcknowledge(this.bus);
    const vector = this.board.inta();
    if (vector >= 0 && !this.apicTook(vector)) pic.completeAcknowledge(vector);
    return vector;
  }

  /** Whether the local APIC delivered `vector` (its ISR bit is set) rather than the PICs. */
  private apicTook(vector: i32): bool {
    if (!this.board.config.lapic) return false;
    const base = this.bus.rdmsr(MSR_APIC_BASE);
    if ((base & APIC_GLOBAL_ENABLE) == 0) return false;
    const word = <u32>vector >>> 5;
    const isr = (base & APIC_X2APIC) != 0 ? <u32>this.bus.rdmsr(X2APIC_ISR_MSR + word) : this.bus.readl(<u32>(base & APIC_BASE_MASK) + APIC_ISR_OFFSET + (word << 4));
    return ((isr >>> (<u32>vector & 31)) & 1) != 0;
  }

  /**
   * After a capture `rec` at the current time, with the guest paused for good: lets the clock
   * run until each local APIC's count changes (at most one divided period) and writes into
   * `phases[k]` how many ns that took on CPU k, or 0 if it did not change.
   */
  probeTimerPhases(rec: ApicRecord, phases: StaticArray<u32>): void {
    const current = this.board.cpu;
    const n = this.board.cpuCount;
    const probes = new Array<TimerPhaseProbe>(n);
    let window: i64 = 0;
    let watching = 0;
    for (let k = 0; k < n; k++) {
      this.selectCpu(k);
      const probe = new TimerPhaseProbe(this.bus, unchecked(rec.lapics[k]));
      unchecked((probes[k] = probe));
      unchecked((phases[k] = 0));
      if (probe.window > 0) watching++;
      if (probe.window > window) window = probe.window;
    }
    const start = this.board.now;
    for (let elapsed: i64 = 1; elapsed <= window && watching > 0; elapsed++) {
      this.advanceTo(start + elapsed);
      for (let k = 0; k < n; k++) {
        const probe = unchecked(probes[k]);
        if (unchecked(phases[k]) != 0 || elapsed > probe.window) continue;
        this.selectCpu(k);
        if (!probe.changed(this.fixups.get(k))) continue;
        unchecked((phases[k] = <u32>elapsed));
        watching--;
      }
    }
    this.selectCpu(current);
  }


  /** Runs the clock, stopping at each fixup's deadline (like a VMX preemption timer) to act. */
  @inline
  advanceTo(t: i64): void {
    if (this.fixups.count > 0) this.advanceThroughFixups(t);
    else this.board.advanceTo(t);
  }

  /** The earliest fixup deadline is served first, on its own CPU. */
  private advanceThroughFixups(t: i64): void {
    const current = this.board.cpu;
    while (this.fixups.count > 0) {
      let due = NEVER;
      let cpu = -1;
      for (let k = 0, n = this.board.cpuCount; k < n; k++) {
        const f = this.fixups.get(k);
        if (f && f.deadline() < due) {
          due = f.deadline();
          cpu = k;
        }
      }
      if (cpu < 0 || due > t) break;
      this.board.advanceTo(due);
      this.board.selectCpu(cpu);
      const fixup = this.fixups.get(cpu)!;
      fixup.fire(this.bus);
      if (!fixup.active()) this.fixups.set(cpu, null);
    }
    this.selectCpu(current);
    this.board.advanceTo(t);
  }
}
