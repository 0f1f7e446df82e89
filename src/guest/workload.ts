// A deterministic guest: a tiny kernel whose whole state lives in guest memory, CPU registers
// and the devices, so that moving those three moves the guest.
//
// Everything it does happens at a virtual time fixed by its configuration, its seed and the
// devices: page writes on a fixed period; device-line assertions and register read-backs on
// their own periods; interrupts taken at the instant the devices raise them (the board's next
// timer event, or right after the guest's own accesses). Running in chunks therefore changes
// nothing. At one instant the order is: device timer events and the interrupts they raise, the
// end of a device handler, a device-line assertion, a read-back, then page writes.
//
// Registers as program state (kept in plain numbers while running; syncCpu() writes them back):
//   rip  main loop, or inside the device interrupt handler
//   rsi  xorshift32 PRNG state            rdi  page writes done
//   r12  scan cursor (page in the set)    r13  hash of every device value read back
//   r14  end time of the running device handler (ns), 0 outside it
//   r15  device-line assertions done      rbp  read-backs done
//   rax  the last vector taken

import { createHash } from "node:crypto";
import type { Machine } from "../core/machine.js";
import { CpuState } from "./cpu.js";
import { interruptDriver, type InterruptDriver } from "./drivers.js";
import type { WorkloadConfig } from "./config.js";
import { type BootRecord, type Counter, WORK_BASE_PAGE, counterAddress, readBootRecord, writeBootRecord } from "./layout.js";
import { GuestMemory, PAGE_SIZE } from "./memory.js";

/** The device raises its line every 7.3 ms; its handler runs 150 µs with interrupts enabled. */
const DEVICE_PERIOD_NS = 7_300_000;
const HANDLER_NS = 150_000;
const READBACK_PERIOD_NS = 1_370_000;
const HOT_ONE_IN = 16;
/** More interrupts than this in one instant means the hardware is storming. */
const MAX_INTERRUPTS_AT_ONCE = 256;

const KERNEL_TEXT = 0xffff_ffff_8100_0000n;
const MAIN_LOOP_RIP = KERNEL_TEXT + 0x100n;
const DEVICE_HANDLER_RIP = KERNEL_TEXT + 0x200n;

export class Guest {
  readonly config: WorkloadConfig;
  private driver: InterruptDriver;
  private currentMachine: Machine;
  private readonly bootTime: number;
  /** Derived from the configuration: nothing here needs saving. */
  private readonly writePeriod: number;
  private readonly workingSetPages: number;
  private readonly coldPages: number;
  private readonly firstDeviceTime: number;
  private readonly firstReadbackTime: number;

  // Register-held program state (see the header).
  private prng = 0;
  private writes = 0;
  private cursor = 0;
  private hash = 0;
  private handlerEnd = 0;
  private deviceEvents = 0;
  private readbacks = 0;
  private lastVector = 0;

  private constructor(
    readonly memory: GuestMemory,
    readonly cpu: CpuState,
    machine: Machine,
    boot: BootRecord,
  ) {
    const { name, interrupts, dirtyBytesPerSecond, workingSetBytes, pattern, seed, timerHz, bootTime } = boot;
    this.config = { name, interrupts, dirtyBytesPerSecond, workingSetBytes, pattern, seed, timerHz };
    checkConfig(this.config, memory);
    this.bootTime = bootTime;
    this.currentMachine = machine;
    this.driver = interruptDriver(boot.interrupts, machine);
    this.writePeriod = boot.dirtyBytesPerSecond > 0 ? Math.max(1, Math.round((PAGE_SIZE * 1e9) / boot.dirtyBytesPerSecond)) : Infinity;
    this.workingSetPages = boot.workingSetBytes / PAGE_SIZE;
    this.coldPages = memory.pageCount - WORK_BASE_PAGE - this.workingSetPages;
    this.firstDeviceTime = bootTime + 1 + (mix(boot.seed ^ 0x6465_7631) % DEVICE_PERIOD_NS);
    this.firstReadbackTime = bootTime + 1 + (mix(boot.seed ^ 0x7265_6164) % READBACK_PERIOD_NS);
  }

  /**
   * Power-on and boot: resets the CPU into the state the kernel runs in, programs the interrupt
   * hardware through port I/O and MMIO, and writes the configuration into the data page.
   */
  static boot(memory: GuestMemory, config: WorkloadConfig, machine: Machine): Guest {
    checkConfig(config, memory); // before anything is written
    const driver = interruptDriver(config.interrupts, machine);
    const timerCount = driver.timerCount(config.timerHz);
    const boot: BootRecord = {
      name: config.name,
      interrupts: config.interrupts,
      dirtyBytesPerSecond: config.dirtyBytesPerSecond,
      workingSetBytes: config.workingSetBytes,
      pattern: config.pattern,
      seed: config.seed,
      timerHz: config.timerHz,
      timerCount,
      bootTime: machine.now(),
    };
    writeBootRecord(memory, boot);
    driver.program(timerCount);
    const cpu = new CpuState();
    enterLongMode(cpu);
    const guest = new Guest(memory, cpu, machine, boot);
    guest.prng = mix(config.seed) || 1;
    guest.syncCpu();
    return guest;
  }

  /** The destination side: memory, CPU and the rebuilt devices are all there is. */
  static resume(memory: GuestMemory, cpu: CpuState, machine: Machine): Guest {
    const guest = new Guest(memory, cpu, machine, readBootRecord(memory));
    guest.loadRegisters();
    return guest;
  }

  /** The machine the guest runs on; replacing it moves the guest's drivers along. */
  get machine(): Machine {
    return this.currentMachine;
  }

  set machine(machine: Machine) {
    this.driver = interruptDriver(this.config.interrupts, machine);
    this.currentMachine = machine;
  }

  now(): number {
    return this.machine.now();
  }

  ticks(): number {
    return this.counter("ticks");
  }

  /** The guest's own accounting, for checks and reports. */
  counters(): { ticks: number; deviceInterrupts: number; unexpectedInterrupts: number; pageWrites: number; readbacks: number } {
    return {
      ticks: this.ticks(),
      deviceInterrupts: this.counter("deviceInterrupts"),
      unexpectedInterrupts: this.counter("unexpectedInterrupts"),
      pageWrites: this.writes,
      readbacks: this.readbacks,
    };
  }

  /** Runs the guest until virtual time `end`; the CPU state is current when it returns. */
  runUntil(end: number): void {
    const m = this.machine;
    if (!Number.isSafeInteger(end) || end < m.now()) throw new RangeError(`cannot run the guest back to ${end} ns: it is at ${m.now()} ns`);
    for (;;) {
      const deviceTime = m.nextTimerEvent();
      const deviceLine = this.firstDeviceTime + this.deviceEvents * DEVICE_PERIOD_NS;
      const readback = this.firstReadbackTime + this.readbacks * READBACK_PERIOD_NS;
      const handlerEnd = this.handlerEnd > 0 ? this.handlerEnd : Infinity;
      const t = Math.min(deviceTime, deviceLine, readback, handlerEnd);
      this.writePages(Math.min(t - 1, end));
      if (t > end) break;
      if (t < m.now()) throw new Error(`device timer event at ${t} ns lies in the past (now ${m.now()} ns)`);
      m.advanceTo(t);
      this.takeInterrupts();
      if (handlerEnd === t) this.finishDeviceHandler();
      if (deviceLine === t) this.assertDeviceLine();
      if (readback === t) {
        this.hash = this.driver.readBack(this.hash);
        this.readbacks++;
      }
    }
    m.advanceTo(end);
    this.syncCpu();
  }

  /** Writes the register-held state back into `cpu`; runUntil() does this before returning. */
  syncCpu(): CpuState {
    const g = this.cpu.gpr;
    g.rsi = BigInt(this.prng);
    g.rdi = BigInt(this.writes);
    g.r12 = BigInt(this.cursor);
    g.r13 = BigInt(this.hash);
    g.r14 = BigInt(this.handlerEnd);
    g.r15 = BigInt(this.deviceEvents);
    g.rbp = BigInt(this.readbacks);
    g.rax = BigInt(this.lastVector);
    this.cpu.rip = this.handlerEnd > 0 ? DEVICE_HANDLER_RIP : MAIN_LOOP_RIP;
    // The TSC counts with the machine's clock.
    this.cpu.msr.tsc = (BigInt(this.machine.now()) * BigInt(this.machine.config.tscHz)) / 1_000_000_000n;
    return this.cpu;
  }

  /** Stops the guest for stop-and-copy: it runs only inside runUntil(), so this is syncCpu(). */
  pause(): CpuState {
    return this.syncCpu();
  }

  /** SHA-256 (hex) over the memory digest, the CPU record and the captured device state. */
  digest(): string {
    return createHash("sha256")
      .update(this.memory.digest())
      .update("\n")
      .update(stableJson(this.syncCpu().toRecord()))
      .update("\n")
      .update(stableJson(this.machine.capture()))
      .digest("hex");
  }

  // ---- the guest's work ---------------------------------------------------------------------

  /** Every page write due at or before `until`. */
  private writePages(until: number): void {
    const period = this.writePeriod;
    const base = this.bootTime + period;
    let k = this.writes;
    if (period === Infinity || base + k * period > until) return;
    const mem = this.memory;
    const ws = this.workingSetPages;
    const pattern = this.config.pattern;
    let x = this.prng;
    let cursor = this.cursor;
    // A store may fault (a page not yet migrated in post-copy): the state kept is that before
    // the store that faulted, so the guest redoes exactly that store once the page is in.
    try {
      do {
        let next = x;
        next ^= next << 13;
        next ^= next >>> 17;
        next ^= next << 5;
        next >>>= 0;
        let page: number;
        let nextCursor = cursor;
        if (pattern === "scan") {
          page = cursor;
          nextCursor = cursor + 1 === ws ? 0 : cursor + 1;
        } else if (pattern === "hot" && this.coldPages > 0 && next % HOT_ONE_IN === 0) {
          page = ws + ((next >>> 4) % this.coldPages);
        } else {
          page = (next >>> 4) % ws;
        }
        mem.write32((WORK_BASE_PAGE + page) * PAGE_SIZE + (k & 1023) * 4, (next ^ this.hash) >>> 0);
        x = next;
        cursor = nextCursor;
        k++;
      } while (base + k * period <= until);
    } finally {
      this.prng = x;
      this.cursor = cursor;
      this.writes = k;
    }
  }

  private assertDeviceLine(): void {
    this.deviceEvents++;
    this.driver.setDeviceLine(1);
    this.takeInterrupts();
  }

  /** The handler has serviced the device: the line drops before the EOI, so it does not re-fire. */
  private finishDeviceHandler(): void {
    this.handlerEnd = 0;
    this.driver.setDeviceLine(0);
    this.driver.eoiDevice();
    this.takeInterrupts();
  }

  /** Takes every interrupt the CPU's pin presents now (interrupts are always enabled). */
  private takeInterrupts(): void {
    const m = this.machine;
    for (let n = 0; ; n++) {
      const vector = m.inta();
      if (vector < 0) return;
      if (n === MAX_INTERRUPTS_AT_ONCE) throw new Error(`interrupt storm: vector ${vector} keeps arriving at ${m.now()} ns`);
      this.lastVector = vector;
      if (vector === this.driver.timerVector) {
        this.bump("ticks");
        this.driver.eoiTimer();
      } else if (vector === this.driver.deviceVector && this.handlerEnd === 0) {
        this.bump("deviceInterrupts");
        this.handlerEnd = m.now() + HANDLER_NS;
      } else {
        // Spurious or foreign: counted, and (as for a spurious vector) no EOI.
        this.bump("unexpectedInterrupts");
      }
    }
  }

  private counter(c: Counter): number {
    return this.memory.read32(counterAddress(c));
  }

  private bump(c: Counter): void {
    const addr = counterAddress(c);
    this.memory.write32(addr, (this.memory.read32(addr) + 1) >>> 0);
  }

  /** The inverse of syncCpu(), checking that the registers hold a state this guest can be in. */
  private loadRegisters(): void {
    const g = this.cpu.gpr;
    const reg = (name: keyof typeof g, max: number): number => {
      const v = g[name];
      if (v > BigInt(max)) throw new RangeError(`cpu.gpr.${name} = ${v} is not a state of this guest`);
      return Number(v);
    };
    this.prng = reg("rsi", 0xffff_ffff);
    this.writes = reg("rdi", Number.MAX_SAFE_INTEGER);
    this.cursor = reg("r12", Math.max(0, this.workingSetPages - 1));
    this.hash = reg("r13", 0xffff_ffff);
    this.handlerEnd = reg("r14", Number.MAX_SAFE_INTEGER);
    this.deviceEvents = reg("r15", Number.MAX_SAFE_INTEGER);
    this.readbacks = reg("rbp", Number.MAX_SAFE_INTEGER);
    this.lastVector = reg("rax", 0xff);
    const inHandler = this.cpu.rip === DEVICE_HANDLER_RIP;
    if (this.prng === 0 || (!inHandler && this.cpu.rip !== MAIN_LOOP_RIP) || inHandler !== this.handlerEnd > 0) {
      throw new RangeError(`cpu: rip ${this.cpu.rip.toString(16)}, rsi and r14 do not describe a state of this guest`);
    }
  }
}

function checkConfig(c: WorkloadConfig, memory: GuestMemory): void {
  const integer = (v: number, name: string, min: number, max: number): void => {
    if (!Number.isSafeInteger(v) || v < min || v > max) throw new RangeError(`workload ${name} must be an integer in ${min}..${max}, got ${v}`);
  };
  if (c.interrupts !== "pic" && c.interrupts !== "apic") throw new RangeError(`workload interrupts must be "pic" or "apic", got ${JSON.stringify(c.interrupts)}`);
  if (c.pattern !== "uniform" && c.pattern !== "hot" && c.pattern !== "scan") throw new RangeError(`workload pattern must be uniform, hot or scan, got ${JSON.stringify(c.pattern)}`);
  integer(c.dirtyBytesPerSecond, "dirtyBytesPerSecond", 0, Number.MAX_SAFE_INTEGER);
  integer(c.seed, "seed", 0, 0xffff_ffff);
  integer(c.timerHz, "timerHz", 1, 1_000_000);
  const room = memory.bytes - WORK_BASE_PAGE * PAGE_SIZE;
  integer(c.workingSetBytes, "workingSetBytes", PAGE_SIZE, room);
  if (c.workingSetBytes % PAGE_SIZE !== 0) throw new RangeError(`workload workingSetBytes must be a multiple of ${PAGE_SIZE}, got ${c.workingSetBytes}`);
}

/** The state an OS has set up by the time its kernel runs: 64-bit mode, flat segments. */
function enterLongMode(cpu: CpuState): void {
  cpu.reset();
  cpu.cr0 = 0x8005_0033n; // PG WP NE ET MP PE
  cpu.cr3 = 0x2000n;
  cpu.cr4 = 0x0035_06b0n; // SMAP SMEP OSXSAVE FSGSBASE OSXMMEXCPT OSFXSR PGE PAE PSE
  cpu.efer = 0xd01n; // NXE LMA LME SCE
  const seg = cpu.segments;
  seg.cs = { selector: 0x10, base: 0n, limit: 0xffff_ffff, attributes: 0xa09b };
  for (const s of ["ds", "es", "ss"] as const) seg[s] = { selector: 0x18, base: 0n, limit: 0xffff_ffff, attributes: 0xc093 };
  seg.fs = { selector: 0, base: 0n, limit: 0xffff_ffff, attributes: 0x1_0000 };
  seg.gs = { selector: 0, base: 0xffff_8880_0001_0000n, limit: 0xffff_ffff, attributes: 0x1_0000 };
  seg.ldtr = { selector: 0, base: 0n, limit: 0, attributes: 0x1_0000 };
  seg.tr = { selector: 0x40, base: 0xffff_fe00_0000_3000n, limit: 0x4087, attributes: 0x8b };
  cpu.gdtr = { base: 0xffff_fe00_0000_1000n, limit: 0x7f };
  cpu.idtr = { base: 0xffff_fe00_0000_0000n, limit: 0xfff };
  cpu.msr.star = 0x0023_0010_0000_0000n;
  cpu.msr.lstar = KERNEL_TEXT + 0xa0_0000n;
  cpu.msr.fmask = 0x4_7700n;
  cpu.gpr.rdx = 0n;
  cpu.gpr.rsp = 0xffff_c900_0000_4000n;
  cpu.rflags = 0x202n; // IF
  cpu.rip = MAIN_LOOP_RIP;
}

/** A 32-bit integer hash (splitmix-style finaliser), for seeds and phases. */
function mix(x: number): number {
  x = Math.imul(x ^ (x >>> 16), 0x7feb_352d);
  x = Math.imul(x ^ (x >>> 15), 0x846c_a68b);
  return (x ^ (x >>> 16)) >>> 0;
}

/** JSON with bigints written as "123n": records are built in a fixed key order, so this is stable. */
function stableJson(value: unknown): string {
  return JSON.stringify(value, (_key, v) => (typeof v === "bigint" ? `${v}n` : v));
}
