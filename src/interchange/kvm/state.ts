// A whole machine's state as KVM's structs hold it (one set per VM, one per vCPU), the board
// and clock they need beside them, and the parts of the model's device record the conversions
// read and write. docs/interchange.md describes every mapping.

import type { MachineConfig } from "../../core/machine.js";
import type {
  KvmIoapicState, KvmLapicState, KvmMpState, KvmMsrEntry, KvmPicState, KvmPitState2, KvmSregs, KvmVcpuEvents,
} from "./layout.js";

/**
 * The clock count_load_time is stated in: `kvmNowNs` is that clock's reading at the moment of
 * capture (KVM: ktime_get()), which the rebuilt machine's virtual time `modelTimeNs` stands for.
 */
export interface KvmClock {
  kvmNowNs: bigint;
  modelTimeNs: number;
}

/**
 * How an x2APIC's ID sits in the page's ID register: "32-bit" is the x2APIC ID itself
 * (KVM_CAP_X2APIC_API with KVM_X2APIC_API_USE_32BIT_IDS), "legacy" the ID shifted into bits
 * 31..24 as in xAPIC mode (KVM without that capability).
 */
export type X2apicIdFormat = "32-bit" | "legacy";
export const X2APIC_ID_FORMATS: readonly X2apicIdFormat[] = ["32-bit", "legacy"];

export interface KvmCpuState {
  lapic: KvmLapicState;
  sregs: KvmSregs;
  mpState: KvmMpState;
  events: KvmVcpuEvents;
  /** KVM_GET_MSRS: IA32_TSC_DEADLINE. */
  msrs: KvmMsrEntry[];
}

export interface KvmState {
  board: MachineConfig;
  clock: KvmClock;
  x2apicIds: X2apicIdFormat;
  picMaster: KvmPicState;
  picSlave: KvmPicState;
  pit: KvmPitState2;
  ioapic: KvmIoapicState;
  /** One per CPU, CPU 0 first. */
  cpus: KvmCpuState[];
}

/**
 * A field the conversion cannot carry: where it is, and why. `kind`: "lost" — a record field
 * the structs do not hold (export); "inexpressible" — a KVM value the model's record cannot
 * hold (import); "unreachable" — a record value the rebuild through the register interface
 * could not reproduce (import).
 */
export interface KvmException {
  kind: "lost" | "inexpressible" | "unreachable";
  /** The device record's field ("pit.channels.0.count"), or the KVM struct's ("kvm_lapic_state(cpu 1).lvtCmci"). */
  field: string;
  reason: string;
}

/** KVM structs that describe an impossible machine, or that do not fit the board: the message names struct, field and value. */
export class KvmStateError extends Error {
  override name = "KvmStateError";
}

// ---- the device record's parts (src/core/machine.ts capture(); assembly/hypervisor/*/state.ts) ----

export interface PicChipRecord {
  irr: number;
  isr: number;
  imr: number;
  elcr: number;
}

export interface PicChipShadowRecord {
  icw1: number;
  icw2: number;
  icw3: number;
  icw4: number;
  initStep: number;
  readIsr: number;
  specialMask: number;
  pollPending: number;
  lowestPriority: number;
  rotateInAeoi: number;
  lowestPriorityStale: number;
  pollStatus: { irr: number; isr: number; imr: number };
}

export interface PitChannelShadowRecord {
  mode: number;
  rwMode: number;
  bcd: number;
  countRegister: number;
  countsWritten: number;
  writeMsbNext: number;
  heldLsb: number;
  readMsbNext: number;
  countLatched: number;
  statusLatched: number;
  restartKnown: number;
  restartTime: number;
  heldCount: number;
  heldStatus: number;
  heldCountValue: number;
  heldStatusValue: number;
}

export interface LapicRecord {
  pageCaptured: number;
  apicBase: number;
  tscDeadline: number | bigint;
  id: number;
  tpr: number;
  ldr: number;
  dfr: number;
  svr: number;
  isr: number[];
  tmr: number[];
  irr: number[];
  esr: number;
  icrLow: number;
  icrHigh: number;
  lvt: number[];
  initialCount: number;
  currentCount: number;
  divideConfig: number;
}

export interface DeviceRecordBody {
  format: string;
  version: number;
  config: Record<keyof MachineConfig, number>;
  time: number;
  lines: { isa: number; gsi: number; pitRouted: number };
  pic: { master: PicChipRecord; slave: PicChipRecord; shadow: { master: PicChipShadowRecord; slave: PicChipShadowRecord } };
  pit: {
    time: number;
    port61: number;
    channels: { status: number; count: number }[];
    shadow: { channels: PitChannelShadowRecord[]; gate2Rose: number; gate2RoseAt: number };
  };
  apic: {
    lapic: LapicRecord;
    aps?: Record<string, LapicRecord>;
    ioapic: { ioregsel: number; id: number; entries: { low: number; high: number }[] };
  };
  cpu: Record<string, { startUp: number; nmiPending: number }> & { current: number };
}

/** Each CPU's local APIC record, CPU 0 first. */
export function lapicRecords(rec: DeviceRecordBody): LapicRecord[] {
  const aps = rec.apic.aps ?? {};
  return [rec.apic.lapic, ...Array.from({ length: rec.config.cpus - 1 }, (_, i) => aps[String(i + 1)])];
}

/** How the record holds a CPU's start-up (assembly/hypervisor/cpu-state.ts): a vector, or one of these. */
export const START_UP_RESET = 0x100;
export const START_UP_WAITING = 0x101;

/** The I/O APIC pins the board's ISA lines reach (line 0 and line 2 both reach pin 2; nothing reaches pin 0). */
export function isaPins(isa: number): number {
  let pins = 0;
  for (let line = 1; line < 16; line++) if ((isa >>> line) & 1) pins |= 1 << line;
  if (isa & 1) pins |= 1 << 2;
  return pins >>> 0;
}

/**
 * Whether record field `path` describes a device the board has. A capture leaves the part of a
 * device the board lacks as it found it, so nothing there is state.
 */
export function describesPresentDevice(config: DeviceRecordBody["config"], path: string): boolean {
  if (path.startsWith("pic.")) return config.pic === 1;
  if (path.startsWith("pit.")) return config.pit === 1;
  if (path.startsWith("apic.ioapic.")) return config.ioapic === 1;
  if (path.startsWith("apic.")) return config.lapic === 1;
  return true;
}
