// The host API: a typed machine over one instance of the core. Guest operations are the
// core's exports themselves, bound once, so a call costs one JS→WASM transition and no
// allocation.

import { InterruptAnswer, MAX_CPUS, Policy as PolicyCode, SipiState, StateResult } from "../../assembly/abi/codes.js";

/** What inta() returns when the CPU takes a non-maskable interrupt. */
export const INTA_NMI: number = InterruptAnswer.Nmi;
import { instantiateCore, type CoreExports } from "./core.js";
import { describeValue, fieldsToObject, objectToFields, prepareSchema, type FieldObject, type Schema } from "./fields.js";
import { readExits, type ExitReport } from "./exits.js";

export type Policy = "none" | "blmvisor" | "full";
/** The policies by name, and the core's code for each. */
const POLICY_CODE: Record<Policy, PolicyCode> = { none: PolicyCode.None, blmvisor: PolicyCode.Blmvisor, full: PolicyCode.Full };
export const POLICIES = Object.keys(POLICY_CODE) as readonly Policy[];

export interface MachineConfig {
  pic: boolean;
  pit: boolean;
  lapic: boolean;
  ioapic: boolean;
  /** CPUs on the board, 1 .. MAX_CPUS; more than one needs the local APICs. */
  cpus: number;
  /** PIT OUT0 drives ISA line 0. */
  pitIrq0: boolean;
  /** Follow QEMU 7.2 where it departs from the datasheets. */
  compatQemu: boolean;
  apicBusHz: number;
  tscHz: number;
}

export interface MachineOptions extends Partial<MachineConfig> {
  policy?: Policy;
  /** Virtual time of the reset, in ns. */
  startTime?: number;
}

export { MAX_CPUS };

/** Clock rates above 9 GHz would overflow the core's 64-bit clock arithmetic. */
export const MAX_CLOCK_HZ = 9_000_000_000;

export const DEFAULT_CONFIG: Readonly<MachineConfig> = {
  pic: true,
  pit: true,
  lapic: true,
  ioapic: true,
  cpus: 1,
  pitIrq0: true,
  compatQemu: false,
  apicBusHz: 1_000_000_000,
  tscHz: 1_000_000_000,
};

/** What a device-state record is, so a reader can tell one from any other msgpack. */
export const RECORD_FORMAT = "blmv-devices";
export const RECORD_VERSION = 1;

export interface DeviceRecord {
  format: typeof RECORD_FORMAT;
  version: number;
  [field: string]: unknown;
}

/** Capture refused, or a record that cannot be rebuilt: the message says why. */
export class DeviceStateError extends Error {
  override name = "DeviceStateError";
}

/** Cores of released machines, for create() to reset and reuse: a new instance costs far more. */
const spareCores: CoreExports[] = [];
const MAX_SPARE_CORES = 8;

/** Schemas depend on the core build and the CPU count, so one copy serves every such machine. */
const schemas = new Map<string, Schema>();
let reconstructWindowNs: number | undefined;

export class Machine {
  readonly config: Readonly<MachineConfig>;
  readonly policy: Policy;
  readonly core: CoreExports;

  readonly outb: (port: number, value: number) => void;
  readonly outw: (port: number, value: number) => void;
  readonly outl: (port: number, value: number) => void;
  readonly inb: (port: number) => number;
  readonly inw: (port: number) => number;
  readonly inl: (port: number) => number;
  readonly readl: (addr: number) => number;
  readonly writel: (addr: number, value: number) => void;
  /** ISA line 0–15 to level 0 or 1. */
  readonly setIrq: (line: number, level: number) => void;
  /** I/O APIC pin 0–23 to level 0 or 1, bypassing the PICs. */
  readonly setGsi: (pin: number, level: number) => void;
  /**
   * The current CPU takes the next interrupt: its vector, INTA_NMI for a non-maskable
   * interrupt, or -1 when none is deliverable (or the CPU waits for a start-up IPI).
   */
  readonly inta: () => number;
  /** Runs virtual time forward to `ns`; timers fire on the way. */
  readonly advanceTo: (ns: number) => void;
  readonly now: () => number;
  /** Time of the next device timer event (PIT OUT0 change or local APIC timer); about 9.2e18 if none. */
  readonly nextTimerEvent: () => number;
  private released = false;

  private constructor(options: MachineOptions) {
    this.config = { ...DEFAULT_CONFIG, ...stripUndefined(options) };
    this.policy = options.policy ?? "blmvisor";
    if (!(this.policy in POLICY_CODE)) throw new RangeError(`unknown policy ${JSON.stringify(this.policy)}`);
    for (const k of ["apicBusHz", "tscHz"] as const) {
      const hz = this.config[k];
      if (!Number.isInteger(hz) || hz < 1 || hz > MAX_CLOCK_HZ) throw new RangeError(`${k} must be a whole number of Hz from 1 to ${MAX_CLOCK_HZ}, got ${hz}`);
    }
    const cpus = this.config.cpus;
    if (!Number.isInteger(cpus) || cpus < 1 || cpus > MAX_CPUS) throw new RangeError(`cpus must be a whole number from 1 to ${MAX_CPUS}, got ${cpus}`);
    if (cpus > 1 && !this.config.lapic) throw new RangeError(`a board with ${cpus} CPUs needs the local APICs (lapic)`);
    const core = (this.core = spareCores.pop() ?? instantiateCore());
    const c = this.config;
    core.init(+c.pic, +c.pit, +c.lapic, +c.ioapic, c.cpus, +c.pitIrq0, +c.compatQemu, c.apicBusHz, c.tscHz, POLICY_CODE[this.policy], options.startTime ?? 0);
    this.outb = core.outb;
    this.outw = core.outw;
    this.outl = core.outl;
    this.inb = core.inb;
    this.inw = core.inw;
    this.inl = core.inl;
    this.readl = core.readl;
    this.writel = core.writel;
    this.setIrq = core.setIrq;
    this.setGsi = core.setGsi;
    this.inta = core.inta;
    this.advanceTo = core.advanceTo;
    this.now = core.now;
    this.nextTimerEvent = core.nextTimerEvent;
  }

  static create(options: MachineOptions = {}): Machine {
    return new Machine(options);
  }

  /**
   * Gets the core ready before time matters (a migration's downtime): compiles the module,
   * runs capture, reconstruction and the exit report once so that their first real use is not
   * their first use, and leaves spare cores for the next create() calls.
   */
  static prepare(): void {
    const m = Machine.create();
    const copy = Machine.reconstruct(m.capture());
    copy.exits();
    m.release();
    copy.release();
  }

  /**
   * Hands this machine's core to the next create() (which resets it). The machine must not be
   * used afterwards: its operations are the core's own exports and would drive the new owner.
   */
  release(): void {
    if (this.released) return;
    this.released = true;
    if (spareCores.length < MAX_SPARE_CORES) spareCores.push(this.core);
  }

  /** The CPU whose guest operations and acknowledges follow (CPU 0 after reset). */
  get cpu(): number {
    return this.core.currentCpu();
  }

  /** Makes CPU `k` (0 ≤ k < config.cpus) the current one. */
  selectCpu(k: number): void {
    if (!Number.isInteger(k) || !this.core.selectCpu(k)) throw new RangeError(`cpu ${k}: the machine has CPUs 0..${this.config.cpus - 1}`);
  }

  /**
   * The current CPU's start-up: "reset" (running since reset, the bootstrap processor),
   * "waiting" (for a start-up IPI), or the vector of the start-up IPI it started on.
   */
  sipiState(): number | "reset" | "waiting" {
    const s = this.core.sipiState();
    return s === SipiState.Reset ? "reset" : s === SipiState.Waiting ? "waiting" : s;
  }

  rdmsr(msr: number): bigint {
    const low = this.core.rdmsr(msr) >>> 0;
    return (BigInt(this.core.rdmsrHigh() >>> 0) << 32n) | BigInt(low);
  }

  wrmsr(msr: number, value: bigint): void {
    this.core.wrmsr(msr, Number(value & 0xffffffffn), Number((value >> 32n) & 0xffffffffn));
  }

  /** The VM exits the hypervisor counted since reset. */
  exits(): ExitReport {
    return readExits(this.core);
  }

  /**
   * Captures the device state through the hypervisor (guest paused, clock stopped): a plain,
   * versioned object that msgpackr can carry. Throws if the policy kept no shadows.
   */
  capture(): DeviceRecord {
    const status = this.core.captureState();
    if (status === StateResult.NoShadows) {
      throw new DeviceStateError(
        `capture refused: under policy "${this.policy}" the hypervisor did not trap the PIC and PIT writes that carry write-only state, so that state is unknown`,
      );
    }
    const body = this.readFields("record", () => this.core.recordSchema());
    return { format: RECORD_FORMAT, version: RECORD_VERSION, ...body };
  }

  /**
   * How long before a record's time reconstruction starts the rebuilt machine's clock (at 0 for
   * a record younger than that): the device history it replays.
   */
  static get reconstructWindowNs(): number {
    return (reconstructWindowNs ??= instantiateCore().reconstructWindow());
  }

  /**
   * Rebuilds `record` on a freshly reset machine of the record's configuration, using only the
   * hardware interface; the machine resumes at the record's time. Rejects a malformed record
   * before touching any device.
   */
  static reconstruct(record: unknown, options: { policy?: Policy } = {}): Machine {
    const body = checkEnvelope(record);
    const config = recordConfig(body);
    const time = wideNumber(body.time, "record.time");
    const startTime = Math.max(0, time - Machine.reconstructWindowNs);
    const m = Machine.create({ ...config, policy: options.policy, startTime });
    try {
      const schema = m.schema("record", () => m.core.recordSchema());
      const count = objectToFields(schema, body, m.fieldView(schema.names.length), "record");
      const status = m.core.reconstructState(count);
      if (status === StateResult.BadRecord) {
        const i = m.core.fieldError();
        const where = i >= 0 && i < schema.names.length ? `record.${schema.names[i]}` : "record.time";
        throw new DeviceStateError(`${where}: value out of range for the register it describes`);
      }
      if (status !== StateResult.Ok) throw new DeviceStateError(`record does not match the machine it describes (status ${status})`);
    } catch (e) {
      // Refused: the core serves the next machine (a bad record costs no new instance).
      m.release();
      throw e;
    }
    return m;
  }

  /**
   * The machine a migration resumes the guest on: `record` rebuilt on a fresh machine and its
   * APIC timers restarted at `timerPhases` (from `probeTimerPhases` on the machine captured).
   */
  static resume(record: unknown, timerPhases: readonly number[], options: { policy?: Policy } = {}): Machine {
    const m = Machine.reconstruct(record, options);
    try {
      m.applyTimerPhases(timerPhases);
    } catch (e) {
      m.release();
      throw e;
    }
    return m;
  }

  /**
   * Each CPU's local APIC timer phase, which no register shows, measured after `capture()`.
   * The clock runs on until every timer's count has changed, at most one divided period, and
   * the nanoseconds each took are returned, one per CPU (0: no count is running that could
   * change). This moves what the guest can observe: whoever runs the guest afterwards, the
   * destination or a source whose migration was dropped, runs it on
   * `Machine.resume(record, phases)`, never on this machine.
   */
  probeTimerPhases(): number[] {
    this.core.probeTimerPhases();
    return Array.from({ length: this.config.cpus }, (_, k) => this.core.timerPhase(k));
  }

  /**
   * Restarts the rebuilt APIC timers at the source's `phases` (from `probeTimerPhases` there,
   * one per CPU): right after `reconstruct`, before any guest access, so that every later
   * decrement and expiry falls where the source's would have. Everything is checked before
   * any timer is touched.
   */
  applyTimerPhases(phases: readonly number[]): void {
    const max = this.core.MAX_TIMER_PHASE.value as number;
    const cpus = this.config.cpus;
    if (!Array.isArray(phases) || phases.length !== cpus) throw new DeviceStateError(`timer phases: expected one per CPU (${cpus}), got ${Array.isArray(phases) ? phases.length : typeof phases}`);
    for (const [k, phase] of phases.entries()) {
      if (!Number.isInteger(phase) || phase < 0 || phase > max) throw new DeviceStateError(`timer phase of CPU ${k}: ${phase}, expected an integer 0..${max} ns`);
    }
    for (const [k, phase] of phases.entries()) {
      if (this.core.applyTimerPhase(k, phase) !== StateResult.Ok) {
        throw new DeviceStateError("timer phases: only a machine just reconstructed, whose clock has not moved, takes them");
      }
    }
  }

  /** Every device's complete internal state, for tests only: capture never sees this. */
  inspect(): FieldObject {
    this.core.inspectState();
    return this.readFields("inspect", () => this.core.inspectSchema());
  }

  /** The hypervisor's shadows of the PIC and PIT. */
  shadows(): FieldObject {
    this.core.shadowState();
    return this.readFields("shadows", () => this.core.shadowSchema());
  }

  /** Whether a reconstruction left work for after the resume (temporary traps armed). */
  fixupActive(): boolean {
    return this.core.fixupActive() !== 0;
  }

  private readFields(kind: string, schemaOf: () => number): FieldObject {
    // The values must be copied before the schema is fetched: building it reuses the buffer.
    const values = this.fieldView(this.core.fieldCount()).slice();
    const schema = this.schema(kind, schemaOf);
    return fieldsToObject(schema, values);
  }

  private schema(kind: string, schemaOf: () => number): Schema {
    // A record's fields depend on the core build and the number of CPUs.
    const key = `${kind}:${this.config.cpus}`;
    let s = schemas.get(key);
    if (!s) schemas.set(key, (s = prepareSchema(this.core.__getString(schemaOf()).split(","))));
    return s;
  }

  private fieldView(count: number): Uint32Array {
    return new Uint32Array(this.core.memory.buffer, this.core.fieldBuffer(), count);
  }
}

function stripUndefined<T extends object>(o: T): Partial<T> {
  return Object.fromEntries(Object.entries(o).filter(([, v]) => v !== undefined)) as Partial<T>;
}

function checkEnvelope(record: unknown): FieldObject {
  if (typeof record !== "object" || record === null || Array.isArray(record)) throw new DeviceStateError("record: expected an object");
  const { format, version, ...body } = record as Record<string, unknown>;
  if (format !== RECORD_FORMAT) throw new DeviceStateError(`record.format: expected "${RECORD_FORMAT}", got ${describeValue(format)}`);
  if (version !== RECORD_VERSION) throw new DeviceStateError(`record.version: this build reads version ${RECORD_VERSION}, got ${describeValue(version)}`);
  return body as FieldObject;
}

function recordConfig(body: FieldObject): MachineConfig {
  const c = body.config;
  if (typeof c !== "object" || c === null || Array.isArray(c)) throw new DeviceStateError("record.config: expected an object");
  const flag = (k: keyof MachineConfig): boolean => {
    const v = (c as FieldObject)[k];
    if (v !== 0 && v !== 1) throw new DeviceStateError(`record.config.${k}: expected 0 or 1, got ${String(v)}`);
    return v === 1;
  };
  return {
    pic: flag("pic"),
    pit: flag("pit"),
    lapic: flag("lapic"),
    ioapic: flag("ioapic"),
    cpus: cpuCountOf((c as FieldObject).cpus),
    pitIrq0: flag("pitIrq0"),
    compatQemu: flag("compatQemu"),
    apicBusHz: wideNumber((c as FieldObject).apicBusHz, "record.config.apicBusHz"),
    tscHz: wideNumber((c as FieldObject).tscHz, "record.config.tscHz"),
  };
}

function cpuCountOf(v: unknown): number {
  if (typeof v === "number" && Number.isInteger(v) && v >= 1 && v <= MAX_CPUS) return v;
  throw new DeviceStateError(`record.config.cpus: expected 1..${MAX_CPUS}, got ${String(v)}`);
}

function wideNumber(v: unknown, where: string): number {
  if (typeof v === "number" && Number.isSafeInteger(v) && v >= 0) return v;
  throw new DeviceStateError(`${where}: expected a non-negative integer below 2^53, got ${String(v)}`);
}
