// A deterministic guest: a tiny kernel whose whole state lives in guest memory, CPU registers
// and the devices, so that moving those three moves the guest.
//
// Everything it does happens at a virtual time fixed by its configuration, its seed and the
// devices: page writes on a fixed period; device-line assertions and register read-backs on
// their own periods; interrupts taken at the instant the devices raise them (the board's next
// timer event, or right after the guest's own accesses). Running in chunks therefore changes
// nothing. At one instant the order is: device timer events and the interrupts they raise, the
// end of a device handler, a device-line assertion, a read-back, an application processor's
// start-up, then page writes.
//
// With several CPUs, CPU 0 sends the others INIT at boot and CPU k its start-up IPI at
// k × 2 ms; CPU k then enables its local APIC, takes a flat logical ID (CPUs 0–7) and runs its
// own periodic timer at (8 + k) / 8 times CPU 0's period. Every timer tick (CPU 0's too) sends a
// fixed IPI to another running CPU, every fourth also a lowest-priority IPI to the logical set of
// the others. Interrupts are taken CPU by CPU in order, again until none is left. The handlers
// count into each CPU's block of the data page; the fixed IPI's handler folds the CPU's timer
// count into its block's hash.
//
// CPU 0's registers as program state (kept in plain numbers while running; syncCpu() writes them back):
//   rip  main loop, or inside the device interrupt handler
//   rsi  xorshift32 PRNG state            rdi  page writes done
//   r12  scan cursor (page in the set)    r13  hash of every device value read back
//   r14  end time of the running device handler (ns), 0 outside it
//   r15  device-line assertions done      rbp  read-backs done
//   rax  the last vector taken            rbx  application processors started
// Another CPU's, once it runs (before, it holds the INIT state and waits for its start-up IPI):
//   rip  its idle loop                    rsi  xorshift32 PRNG state (picks IPI targets)
//   rdi  IPIs it has sent                 rax  the last vector taken

import { createHash } from "node:crypto";
import type { Machine } from "../core/machine.js";
import { CpuState, cpusToRecord, type Gpr } from "./cpu.js";
import { foldWord, interruptDriver, type InterruptDriver } from "./drivers.js";
import type { WorkloadConfig } from "./config.js";
import {
  type BootRecord, type Counter, type PerCpuCounter, WORK_BASE_PAGE, counterAddress, perCpuAddress, readBootRecord, writeBootRecord,
} from "./layout.js";
import { GuestMemory, PAGE_SIZE } from "./memory.js";
import {
  CPU_TIMER_VECTOR, FLAT_LOGICAL_CPUS, IPI_VECTOR, LOWEST_PRIORITY_VECTOR, STARTUP_VECTOR,
  cpuTimerCount, enableCpuApic, endOfInterrupt, initOtherCpus, sendIpi, sendLowestPriorityIpi, startCpu, startCpuTimer, timerCurrentCount,
} from "./smp.js";
import { MAX_CPUS } from "../../assembly/abi/codes.js";

/** The device raises its line every 7.3 ms; its handler runs 150 µs with interrupts enabled. */
const DEVICE_PERIOD_NS = 7_300_000;
const HANDLER_NS = 150_000;
const READBACK_PERIOD_NS = 1_370_000;
const HOT_ONE_IN = 16;
/** More interrupts than this in one instant means the hardware is storming. */
const MAX_INTERRUPTS_AT_ONCE = 256;
/** CPU 0 starts CPU k at k times this after boot. */
const CPU_START_NS = 2_000_000;
/** Every this many timer ticks a CPU also sends a lowest-priority IPI. */
const LOWEST_PRIORITY_EVERY = 4;

const KERNEL_TEXT = 0xffff_ffff_8100_0000n;
const MAIN_LOOP_RIP = KERNEL_TEXT + 0x100n;
const DEVICE_HANDLER_RIP = KERNEL_TEXT + 0x200n;
const IDLE_LOOP_RIP = KERNEL_TEXT + 0x300n;
const KERNEL_STACK_TOP = 0xffff_c900_0000_4000n;
const STACK_BYTES = 0x4000n;
const PER_CPU_AREA = 0xffff_8880_0001_0000n;
const PER_CPU_AREA_BYTES = 0x1_0000n;
/** IA32_APIC_BASE's bootstrap-processor flag. */
const APIC_BASE_BSP = 1n << 8n;

export class Guest {
  readonly config: WorkloadConfig;
  /** CPU k's registers; syncCpu() brings them up to date. */
  readonly cpus: readonly CpuState[];
  private driver: InterruptDriver;
  private currentMachine: Machine;
  private readonly bootTime: number;
  /** Derived from the configuration: nothing here needs saving. */
  private readonly writePeriod: number;
  private readonly workingSetPages: number;
  private readonly coldPages: number;
  private readonly firstDeviceTime: number;
  private readonly firstReadbackTime: number;

  // CPU 0's register-held program state (see the header).
  private prng = 0;
  private writes = 0;
  private cursor = 0;
  private hash = 0;
  private handlerEnd = 0;
  private deviceEvents = 0;
  private readbacks = 0;
  private lastVector = 0;
  /** Application processors started: CPUs 0..started run. */
  private started = 0;
  // The other CPUs' register-held state, by CPU (index 0 unused).
  private readonly cpuPrng: Uint32Array;
  private readonly ipisSent: Float64Array;
  private readonly cpuLastVector: Uint8Array;

  private constructor(
    readonly memory: GuestMemory,
    cpus: readonly CpuState[],
    machine: Machine,
    boot: BootRecord,
  ) {
    const { name, interrupts, dirtyBytesPerSecond, workingSetBytes, pattern, seed, timerHz, cpus: cpuCount, bootTime } = boot;
    this.config = { name, interrupts, dirtyBytesPerSecond, workingSetBytes, pattern, seed, timerHz, cpus: cpuCount };
    checkConfig(this.config, memory, machine);
    if (cpus.length !== cpuCount) throw new RangeError(`the guest runs on ${cpuCount} CPUs, got the registers of ${cpus.length}`);
    this.cpus = cpus;
    this.bootTime = bootTime;
    this.currentMachine = machine;
    this.driver = interruptDriver(boot.interrupts, machine);
    this.writePeriod = boot.dirtyBytesPerSecond > 0 ? Math.max(1, Math.round((PAGE_SIZE * 1e9) / boot.dirtyBytesPerSecond)) : Infinity;
    this.workingSetPages = boot.workingSetBytes / PAGE_SIZE;
    this.coldPages = memory.pageCount - WORK_BASE_PAGE - this.workingSetPages;
    this.firstDeviceTime = bootTime + 1 + (mix(boot.seed ^ 0x6465_7631) % DEVICE_PERIOD_NS);
    this.firstReadbackTime = bootTime + 1 + (mix(boot.seed ^ 0x7265_6164) % READBACK_PERIOD_NS);
    this.cpuPrng = new Uint32Array(cpuCount);
    this.ipisSent = new Float64Array(cpuCount);
    this.cpuLastVector = new Uint8Array(cpuCount);
  }

  /**
   * Power-on and boot: resets the CPU into the state the kernel runs in, programs the interrupt
   * hardware through port I/O and MMIO, writes the configuration into the data page and, with
   * several CPUs, sends the others INIT (they start later, one by one).
   */
  static boot(memory: GuestMemory, config: WorkloadConfig, machine: Machine): Guest {
    checkConfig(config, memory, machine); // before anything is written
    const driver = interruptDriver(config.interrupts, machine);
    const timerCount = driver.timerCount(config.timerHz);
    for (let k = 1; k < config.cpus; k++) cpuTimerCount(machine, config.timerHz, k); // throws if out of range
    const boot: BootRecord = { ...config, timerCount, bootTime: machine.now() };
    writeBootRecord(memory, boot);
    driver.program(timerCount);
    const cpus = Array.from({ length: config.cpus }, (_, k) => waitingCpu(k));
    enterLongMode(cpus[0], 0);
    const guest = new Guest(memory, cpus, machine, boot);
    guest.prng = mix(config.seed) || 1;
    guest.setPerCpu(0, "online", 1);
    if (config.cpus > 1) {
      enableCpuApic(machine, 0);
      initOtherCpus(machine);
    }
    guest.syncCpu();
    return guest;
  }

  /** The destination side: memory, CPUs and the rebuilt devices are all there is. */
  static resume(memory: GuestMemory, cpus: readonly CpuState[], machine: Machine): Guest {
    const guest = new Guest(memory, cpus, machine, readBootRecord(memory));
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

  /** Each CPU's own accounting: whether it runs, its timer ticks (CPU 0: see ticks()) and the IPIs it took and sent. */
  perCpuCounters(): { online: boolean; timerTicks: number; ipis: number; lowestPriorityIpis: number; ipisSent: number }[] {
    return this.cpus.map((_, k) => ({
      online: this.perCpu(k, "online") === 1,
      timerTicks: this.perCpu(k, "timerTicks"),
      ipis: this.perCpu(k, "ipis"),
      lowestPriorityIpis: this.perCpu(k, "lowestPriorityIpis"),
      ipisSent: this.ipisSent[k],
    }));
  }

  /** Runs the guest until virtual time `end`; the CPU state is current when it returns. */
  runUntil(end: number): void {
    const m = this.machine;
    if (!Number.isSafeInteger(end) || end < m.now()) throw new RangeError(`cannot run the guest back to ${end} ns: it is at ${m.now()} ns`);
    const cpuCount = this.cpus.length;
    for (;;) {
      const deviceTime = m.nextTimerEvent();
      const deviceLine = this.firstDeviceTime + this.deviceEvents * DEVICE_PERIOD_NS;
      const readback = this.firstReadbackTime + this.readbacks * READBACK_PERIOD_NS;
      const handlerEnd = this.handlerEnd > 0 ? this.handlerEnd : Infinity;
      const startUp = this.started + 1 < cpuCount ? this.bootTime + (this.started + 1) * CPU_START_NS : Infinity;
      const t = Math.min(deviceTime, deviceLine, readback, handlerEnd, startUp);
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
      if (startUp === t) this.startNextCpu();
    }
    m.advanceTo(end);
    this.syncCpu();
  }

  /** Writes the register-held state back into `cpus`; runUntil() does this before returning. */
  syncCpu(): readonly CpuState[] {
    const bsp = this.cpus[0];
    const g = bsp.gpr;
    g.rsi = BigInt(this.prng);
    g.rdi = BigInt(this.writes);
    g.r12 = BigInt(this.cursor);
    g.r13 = BigInt(this.hash);
    g.r14 = BigInt(this.handlerEnd);
    g.r15 = BigInt(this.deviceEvents);
    g.rbp = BigInt(this.readbacks);
    g.rax = BigInt(this.lastVector);
    g.rbx = BigInt(this.started);
    bsp.rip = this.handlerEnd > 0 ? DEVICE_HANDLER_RIP : MAIN_LOOP_RIP;
    // The TSC counts with the machine's clock, on every CPU that runs.
    const tsc = (BigInt(this.machine.now()) * BigInt(this.machine.config.tscHz)) / 1_000_000_000n;
    bsp.msr.tsc = tsc;
    for (let k = 1; k <= this.started; k++) {
      const cpu = this.cpus[k];
      cpu.gpr.rsi = BigInt(this.cpuPrng[k]);
      cpu.gpr.rdi = BigInt(this.ipisSent[k]);
      cpu.gpr.rax = BigInt(this.cpuLastVector[k]);
      cpu.msr.tsc = tsc;
    }
    return this.cpus;
  }

  /** Stops the guest for stop-and-copy: it runs only inside runUntil(), so this is syncCpu(). */
  pause(): readonly CpuState[] {
    return this.syncCpu();
  }

  /** SHA-256 (hex) over the memory digest, every CPU's record and the captured device state. */
  digest(): string {
    return createHash("sha256")
      .update(this.memory.digest())
      .update("\n")
      .update(stableJson(cpusToRecord(this.syncCpu())))
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

  /** CPU 0 sends the next CPU its start-up IPI; that CPU comes up at once and starts its timer. */
  private startNextCpu(): void {
    const m = this.machine;
    const k = ++this.started;
    startCpu(m, k);
    m.selectCpu(k);
    if (m.sipiState() !== STARTUP_VECTOR) throw new Error(`cpu ${k} did not start on its start-up IPI (it is ${m.sipiState()})`);
    enterLongMode(this.cpus[k], k);
    this.cpuPrng[k] = mix(this.config.seed ^ Math.imul(k, 0x9e37_79b9)) || 1;
    enableCpuApic(m, k);
    startCpuTimer(m, cpuTimerCount(m, this.config.timerHz, k));
    this.setPerCpu(k, "online", 1);
    m.selectCpu(0);
    this.takeInterrupts();
  }

  /**
   * Takes every interrupt each running CPU's pin presents now (interrupts are always enabled),
   * CPU by CPU, again while any CPU took one (a handler's IPI may reach a CPU already passed).
   * CPU 0 is the current CPU again afterwards.
   */
  private takeInterrupts(): void {
    if (this.started === 0) {
      this.takeOn(0);
      return;
    }
    const m = this.machine;
    for (let pass = 0; ; pass++) {
      let taken = this.takeOn(0);
      for (let k = 1; k <= this.started; k++) {
        m.selectCpu(k);
        taken += this.takeOn(k);
      }
      m.selectCpu(0);
      if (taken === 0) return;
      if (pass === MAX_INTERRUPTS_AT_ONCE) throw new Error(`interrupt storm: the CPUs keep taking interrupts at ${m.now()} ns`);
    }
  }

  /** Takes the interrupts the current CPU `k` has now; returns how many. */
  private takeOn(k: number): number {
    const m = this.machine;
    for (let n = 0; ; n++) {
      const vector = m.inta();
      if (vector < 0) return n;
      if (n === MAX_INTERRUPTS_AT_ONCE) throw new Error(`interrupt storm: vector ${vector} keeps arriving on cpu ${k} at ${m.now()} ns`);
      if (k === 0) this.lastVector = vector;
      else this.cpuLastVector[k] = vector;
      if (k === 0 && vector === this.driver.timerVector) {
        this.bump("ticks");
        this.sendTickIpis(0, this.ticks());
        this.driver.eoiTimer();
      } else if (k === 0 && vector === this.driver.deviceVector && this.handlerEnd === 0) {
        this.bump("deviceInterrupts");
        this.handlerEnd = m.now() + HANDLER_NS;
      } else if (k > 0 && vector === CPU_TIMER_VECTOR) {
        this.sendTickIpis(k, this.bumpPerCpu(k, "timerTicks"));
        endOfInterrupt(m);
      } else if (vector === IPI_VECTOR) {
        this.bumpPerCpu(k, "ipis");
        this.setPerCpu(k, "hash", foldWord(this.perCpu(k, "hash"), timerCurrentCount(m)));
        endOfInterrupt(m);
      } else if (vector === LOWEST_PRIORITY_VECTOR) {
        this.bumpPerCpu(k, "lowestPriorityIpis");
        endOfInterrupt(m);
      } else {
        // Spurious or foreign: counted, and (as for a spurious vector) no EOI.
        this.bump("unexpectedInterrupts");
      }
    }
  }

  /**
   * The current CPU `k`'s timer handler, at its `tick`th tick: a fixed IPI to another running
   * CPU (CPU 0 goes round the others, the others pick by their PRNG), and every fourth tick a
   * lowest-priority IPI to the others with a logical ID.
   */
  private sendTickIpis(k: number, tick: number): void {
    const others = this.started; // running CPUs besides k
    if (others === 0) return;
    const m = this.machine;
    let target: number;
    if (k === 0) {
      target = 1 + (tick % others);
    } else {
      let x = this.cpuPrng[k];
      x ^= x << 13;
      x ^= x >>> 17;
      x ^= x << 5;
      this.cpuPrng[k] = x >>> 0;
      target = (k + 1 + ((x >>> 0) % others)) % (others + 1);
    }
    sendIpi(m, target);
    this.ipisSent[k]++;
    if (tick % LOWEST_PRIORITY_EVERY !== 0) return;
    const logical = ((1 << Math.min(others + 1, FLAT_LOGICAL_CPUS)) - 1) & ~(1 << k);
    if (logical === 0) return;
    sendLowestPriorityIpi(m, logical);
    this.ipisSent[k]++;
  }

  private counter(c: Counter): number {
    return this.memory.read32(counterAddress(c));
  }

  private bump(c: Counter): void {
    const addr = counterAddress(c);
    this.memory.write32(addr, (this.memory.read32(addr) + 1) >>> 0);
  }

  private perCpu(k: number, c: PerCpuCounter): number {
    return this.memory.read32(perCpuAddress(k, c));
  }

  private setPerCpu(k: number, c: PerCpuCounter, value: number): void {
    this.memory.write32(perCpuAddress(k, c), value >>> 0);
  }

  /** Adds one to CPU k's counter `c`; returns the new count. */
  private bumpPerCpu(k: number, c: PerCpuCounter): number {
    const n = (this.perCpu(k, c) + 1) >>> 0;
    this.setPerCpu(k, c, n);
    return n;
  }

  /** The inverse of syncCpu(), checking that the registers hold a state this guest can be in. */
  private loadRegisters(): void {
    const reg = (name: Gpr, max: number, cpu = 0): number => {
      const v = this.cpus[cpu].gpr[name];
      if (v > BigInt(max)) throw new RangeError(`cpu ${cpu}: gpr.${name} = ${v} is not a state of this guest`);
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
    this.started = reg("rbx", this.cpus.length - 1);
    const bsp = this.cpus[0];
    const inHandler = bsp.rip === DEVICE_HANDLER_RIP;
    if (this.prng === 0 || (!inHandler && bsp.rip !== MAIN_LOOP_RIP) || inHandler !== this.handlerEnd > 0) {
      throw new RangeError(`cpu 0: rip ${bsp.rip.toString(16)}, rsi and r14 do not describe a state of this guest`);
    }
    // CPUs 1..started run their idle loop; the rest still wait for their start-up IPI, as the
    // board's record of each CPU's activity must say.
    const m = this.machine;
    const waiting = new CpuState();
    for (let k = 1; k < this.cpus.length; k++) {
      const running = k <= this.started;
      m.selectCpu(k);
      const activity = m.sipiState();
      m.selectCpu(0);
      if (activity !== (running ? STARTUP_VECTOR : "waiting") || (this.perCpu(k, "online") === 1) !== running) {
        throw new RangeError(`cpu ${k}: ${running ? "CPU 0 has started it" : "CPU 0 has not started it yet"}, but the devices say ${activity === "waiting" ? "it waits for a start-up IPI" : `start-up ${activity}`} and its data says ${this.perCpu(k, "online") === 1 ? "online" : "offline"}`);
      }
      if (!running) {
        resetWaiting(waiting, k);
        if (stableJson(this.cpus[k].toRecord()) !== stableJson(waiting.toRecord())) throw new RangeError(`cpu ${k}: waits for its start-up IPI but its registers are not the INIT state`);
        continue;
      }
      this.cpuPrng[k] = reg("rsi", 0xffff_ffff, k);
      this.ipisSent[k] = reg("rdi", Number.MAX_SAFE_INTEGER, k);
      this.cpuLastVector[k] = reg("rax", 0xff, k);
      if (this.cpuPrng[k] === 0 || this.cpus[k].rip !== IDLE_LOOP_RIP) throw new RangeError(`cpu ${k}: rip ${this.cpus[k].rip.toString(16)} and rsi do not describe a state of this guest`);
    }
  }
}

function checkConfig(c: WorkloadConfig, memory: GuestMemory, machine: Machine): void {
  const integer = (v: number, name: string, min: number, max: number): void => {
    if (!Number.isSafeInteger(v) || v < min || v > max) throw new RangeError(`workload ${name} must be an integer in ${min}..${max}, got ${v}`);
  };
  if (c.interrupts !== "pic" && c.interrupts !== "apic") throw new RangeError(`workload interrupts must be "pic" or "apic", got ${JSON.stringify(c.interrupts)}`);
  if (c.pattern !== "uniform" && c.pattern !== "hot" && c.pattern !== "scan") throw new RangeError(`workload pattern must be uniform, hot or scan, got ${JSON.stringify(c.pattern)}`);
  integer(c.dirtyBytesPerSecond, "dirtyBytesPerSecond", 0, Number.MAX_SAFE_INTEGER);
  integer(c.seed, "seed", 0, 0xffff_ffff);
  integer(c.timerHz, "timerHz", 1, 1_000_000);
  integer(c.cpus, "cpus", 1, MAX_CPUS);
  if (machine.config.cpus !== c.cpus) throw new RangeError(`the workload runs on ${c.cpus} CPUs, the machine has ${machine.config.cpus}`);
  const room = memory.bytes - WORK_BASE_PAGE * PAGE_SIZE;
  integer(c.workingSetBytes, "workingSetBytes", PAGE_SIZE, room);
  if (c.workingSetBytes % PAGE_SIZE !== 0) throw new RangeError(`workload workingSetBytes must be a multiple of ${PAGE_SIZE}, got ${c.workingSetBytes}`);
}

/** CPU k after INIT, waiting for its start-up IPI: the reset state (CPUs other than 0 are no bootstrap processor). */
function resetWaiting(cpu: CpuState, k: number): void {
  cpu.reset();
  if (k > 0) cpu.msr.apicBase &= ~APIC_BASE_BSP;
}

function waitingCpu(k: number): CpuState {
  const cpu = new CpuState();
  resetWaiting(cpu, k);
  return cpu;
}

/** The state an OS has set up by the time its kernel runs on CPU k: 64-bit mode, flat segments, its own stack and per-CPU area. */
function enterLongMode(cpu: CpuState, k: number): void {
  resetWaiting(cpu, k);
  cpu.cr0 = 0x8005_0033n; // PG WP NE ET MP PE
  cpu.cr3 = 0x2000n;
  cpu.cr4 = 0x0035_06b0n; // SMAP SMEP OSXSAVE FSGSBASE OSXMMEXCPT OSFXSR PGE PAE PSE
  cpu.efer = 0xd01n; // NXE LMA LME SCE
  const seg = cpu.segments;
  seg.cs = { selector: 0x10, base: 0n, limit: 0xffff_ffff, attributes: 0xa09b };
  for (const s of ["ds", "es", "ss"] as const) seg[s] = { selector: 0x18, base: 0n, limit: 0xffff_ffff, attributes: 0xc093 };
  seg.fs = { selector: 0, base: 0n, limit: 0xffff_ffff, attributes: 0x1_0000 };
  seg.gs = { selector: 0, base: PER_CPU_AREA + BigInt(k) * PER_CPU_AREA_BYTES, limit: 0xffff_ffff, attributes: 0x1_0000 };
  seg.ldtr = { selector: 0, base: 0n, limit: 0, attributes: 0x1_0000 };
  seg.tr = { selector: 0x40, base: 0xffff_fe00_0000_3000n, limit: 0x4087, attributes: 0x8b };
  cpu.gdtr = { base: 0xffff_fe00_0000_1000n, limit: 0x7f };
  cpu.idtr = { base: 0xffff_fe00_0000_0000n, limit: 0xfff };
  cpu.msr.star = 0x0023_0010_0000_0000n;
  cpu.msr.lstar = KERNEL_TEXT + 0xa0_0000n;
  cpu.msr.fmask = 0x4_7700n;
  cpu.gpr.rdx = 0n;
  cpu.gpr.rsp = KERNEL_STACK_TOP + BigInt(k) * STACK_BYTES;
  cpu.rflags = 0x202n; // IF
  cpu.rip = k === 0 ? MAIN_LOOP_RIP : IDLE_LOOP_RIP;
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
