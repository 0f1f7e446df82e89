// KVM's structs turned into the model's own device record and rebuilt by the existing
// reconstruction (Machine.reconstruct): through the register interface, never into device
// internals. Everything is validated before a machine exists; every KVM value the record cannot
// hold is named in the exceptions returned. docs/interchange.md has the field mapping.

import { LAPIC_VERSION, PIT_HZ } from "../../../assembly/common/hardware.js";
import { Machine, type Policy } from "../../core/machine.js";
import {
  KVM_PIT_FLAGS_HPET_LEGACY, KVM_PIT_FLAGS_SPEAKER_DATA_ON, KVM_VCPUEVENT_VALID_NMI_PENDING, KVM_VCPUEVENT_VALID_SIPI_VECTOR,
  LVT_NAMES, MSR_IA32_TSC_DEADLINE, MpState, type KvmPicState, type KvmPitChannelState,
} from "./layout.js";
import {
  APIC_BASE_ENABLE, APIC_BASE_X2APIC, ELCR_MASK, ICW1_IC4, ICW1_INIT, ICW4_AEOI, ICW4_SFNM, ICW4_X86, IOAPIC_BASE, KVM_PIT_MODE_RESET,
  LVT_MASKED, PIT_STATUS_OUT, PORT61_GATE2, PORT61_OUT2, PORT61_REFRESH, PORT61_SPEAKER, RW_STATE_WORD1, countAfter, outAfter,
  readableBytes, ticksIn,
} from "./conventions.js";
import {
  START_UP_RESET, START_UP_WAITING, describesPresentDevice, isaPins, type DeviceRecordBody, type KvmCpuState, type KvmException, type KvmState, type LapicRecord,
  type PicChipRecord, type PicChipShadowRecord, type PitChannelShadowRecord,
} from "./state.js";
import { validateKvmState } from "./validate.js";

/** What ICW1 sets the slave address (ICW3) to until ICW3 is written (the 82C59A's reset of it). */
const ICW3_AFTER_ICW1 = 7;
/** The PC's cascade: the slave on master IR2, with slave ID 2. */
const ICW3 = { master: 0x04, slave: 0x02 } as const;
/** A reset channel's mode in both of the model's PITs. */
const RESET_MODE = 3;
/** The datasheet board's refresh bit flips every 18 PIT clocks. */
const REFRESH_HALF_PERIOD_EDGES = 18n;

export interface KvmRecord {
  record: DeviceRecordBody;
  exceptions: KvmException[];
}

/**
 * The device record `s` describes, with the KVM values it cannot hold named. Throws
 * KvmStateError (changing nothing) when `s` is impossible.
 */
export function recordFromKvm(s: KvmState): KvmRecord {
  validateKvmState(s);
  const exceptions: KvmException[] = [];
  const note = (field: string, reason: string): void => void exceptions.push({ kind: "inexpressible", field, reason });
  const b = s.board;
  const isa = (s.picMaster.lastIrr | (s.picSlave.lastIrr << 8)) >>> 0;
  const template = Machine.create(b);
  let blank: DeviceRecordBody;
  try {
    blank = template.capture() as unknown as DeviceRecordBody;
  } finally {
    template.release();
  }
  const time = s.clock.modelTimeNs;
  const record: DeviceRecordBody = {
    ...blank,
    time,
    lines: {
      isa,
      gsi: (s.ioapic.irr & ~isaPins(isa)) >>> 0,
      pitRouted: b.pit && b.pitIrq0 && (s.pit.flags & KVM_PIT_FLAGS_HPET_LEGACY) === 0 ? 1 : 0,
    },
    // A device the board lacks keeps the fresh machine's record: its struct describes nothing.
    pic: b.pic
      ? {
          master: picChip(s.picMaster),
          slave: picChip(s.picSlave),
          shadow: { master: picShadow(s.picMaster, "master", note), slave: picShadow(s.picSlave, "slave", note) },
        }
      : blank.pic,
    pit: b.pit ? pitRecord(s, note) : blank.pit,
    apic: {
      lapic: b.lapic ? lapicRecord(s, 0, note) : blank.apic.lapic,
      ...(b.cpus > 1 ? { aps: Object.fromEntries(s.cpus.slice(1).map((_, i) => [String(i + 1), lapicRecord(s, i + 1, note)])) } : {}),
      ioapic: b.ioapic
        ? {
            ioregsel: s.ioapic.ioregsel,
            id: (s.ioapic.id << 24) >>> 0,
            entries: s.ioapic.redirtbl.map((bits) => ({ low: Number(bits & 0xffffffffn), high: Number(bits >> 32n) })),
          }
        : blank.apic.ioapic,
    },
    cpu: { ...Object.fromEntries(s.cpus.map((cpu, k) => [String(k), cpuRecord(cpu, k, note)])), current: 0 } as DeviceRecordBody["cpu"],
  };
  if (b.ioapic && s.ioapic.baseAddress !== IOAPIC_BASE) note("kvm_ioapic_state.base_address", `the board's I/O APIC is at 0x${IOAPIC_BASE.toString(16)}, not 0x${s.ioapic.baseAddress.toString(16)}`);
  if ((s.ioapic.irr & isaPins(isa)) !== 0) {
    note("lines.gsi", "kvm_ioapic_state.irr merges a pin's direct driver with the ISA lines routed to it; where an ISA line is high the direct driver is taken as low");
  }
  return { record, exceptions };
}

/**
 * The machine `s` describes, rebuilt through the register interface, and what could not be
 * carried: the KVM values the record cannot hold, then every record field the rebuilt machine
 * reads back differently (a state the register interface cannot reach from a reset machine,
 * such as a count that would have been loaded before time 0).
 */
export function machineFromKvm(s: KvmState, options: { policy?: Policy; timerPhases?: readonly number[] } = {}): { machine: Machine; exceptions: KvmException[] } {
  const { record, exceptions } = recordFromKvm(s);
  // Timer phases known from elsewhere (no KVM field holds one), one per CPU, restart the rebuilt
  // timers at them as a migration's resume does; without them none is applied.
  const machine = Machine.resume(record, options.timerPhases ?? s.cpus.map(() => 0), options);
  try {
    for (const d of differences(record, machine.capture()).filter(({ field }) => describesPresentDevice(record.config, field))) {
      exceptions.push({ kind: "unreachable", field: d.field, reason: `the rebuild reads back ${d.after} where the structs give ${d.before}` });
    }
  } catch (e) {
    machine.release();
    throw e;
  }
  return { machine, exceptions };
}

export interface FieldDifference {
  /** The field's path in the record ("pit.channels.0.count"). */
  field: string;
  before: string;
  after: string;
}

/**
 * The fields (leaves) of record `before` whose value `after` does not have at the same path;
 * where `after` has no such field, or an object there, its value is undefined. Both records are
 * walked side by side; a path is spelled out only for a field that differs.
 */
export function differences(before: unknown, after: unknown): FieldDifference[] {
  const out: FieldDifference[] = [];
  compareFields(before, after, [], out);
  return out;
}

const isObject = (v: unknown): v is Record<string, unknown> => v !== null && typeof v === "object";

function compareFields(before: unknown, after: unknown, path: string[], out: FieldDifference[]): void {
  if (isObject(before)) {
    for (const [k, v] of Object.entries(before)) {
      path.push(k);
      compareFields(v, isObject(after) && Object.prototype.propertyIsEnumerable.call(after, k) ? after[k] : undefined, path, out);
      path.pop();
    }
    return;
  }
  const other = isObject(after) ? undefined : after;
  if (other !== before) out.push({ field: path.join("."), before: String(before), after: String(other) });
}

// ---- PIC ------------------------------------------------------------------------------------

function picChip(p: KvmPicState): PicChipRecord {
  return { irr: p.irr, isr: p.isr, imr: p.imr, elcr: p.elcr };
}

/** A chip KVM holds exactly as after reset: never initialised. */
function neverInitialised(p: KvmPicState): boolean {
  return p.irqBase === 0 && p.initState === 0 && !p.init4 && !p.autoEoi && !p.specialFullyNested;
}

function picShadow(p: KvmPicState, chip: "master" | "slave", note: (field: string, reason: string) => void): PicChipShadowRecord {
  const fresh = neverInitialised(p);
  const icw3Written = p.initState === 0 || p.initState === 3;
  if (p.elcrMask !== ELCR_MASK[chip]) note(`kvm_pic_state(${chip}).elcrMask`, `the board's ELCR has bits 0x${ELCR_MASK[chip].toString(16)}, not 0x${p.elcrMask.toString(16)}`);
  return {
    icw1: fresh ? 0 : ICW1_INIT | (p.init4 ? ICW1_IC4 : 0),
    icw2: p.irqBase,
    icw3: fresh ? 0 : icw3Written ? ICW3[chip] : ICW3_AFTER_ICW1,
    icw4: p.init4 ? ICW4_X86 | (p.autoEoi ? ICW4_AEOI : 0) | (p.specialFullyNested ? ICW4_SFNM : 0) : 0,
    initStep: p.initState,
    readIsr: p.readRegSelect,
    specialMask: p.specialMask,
    pollPending: p.poll,
    lowestPriority: (p.priorityAdd + 7) & 7,
    rotateInAeoi: p.rotateOnAutoEoi,
    lowestPriorityStale: 0,
    pollStatus: p.poll ? { irr: p.irr, isr: p.isr, imr: p.imr } : { irr: 0, isr: 0, imr: 0 },
  };
}

// ---- PIT ------------------------------------------------------------------------------------

function pitRecord(s: KvmState, note: (field: string, reason: string) => void): DeviceRecordBody["pit"] {
  const time = s.clock.modelTimeNs;
  const datasheet = !s.board.compatQemu;
  const channels = s.pit.channels.map((c, i) => {
    if (c.mode !== KVM_PIT_MODE_RESET) return c;
    note(`kvm_pit_state2.channels[${i}].mode`, `KVM marks a channel no control word has reached with mode 0xff; the model's reset channel has mode ${RESET_MODE}`);
    return { ...c, mode: RESET_MODE };
  });
  const read = channels.map((c) => counterAt(c, s.clock.kvmNowNs, datasheet));
  channels.forEach((c, i) => {
    if (i < 2 && c.gate !== 1) note(`kvm_pit_state2.channels[${i}].gate`, "the board ties the gates of channels 0 and 1 high");
    if (c.bcd) note(`kvm_pit_state2.channels[${i}].count_load_time`, "KVM counts a BCD channel in binary; the counting element derived from count_load_time is binary too");
  });
  const ch2 = channels[2];
  const refresh = datasheet ? ((ticksIn(BigInt(time)) / REFRESH_HALF_PERIOD_EDGES) & 1n ? PORT61_REFRESH : 0) : PORT61_REFRESH;
  const port61 = ch2.gate * PORT61_GATE2 | (s.pit.flags & KVM_PIT_FLAGS_SPEAKER_DATA_ON ? PORT61_SPEAKER : 0) | refresh | (read[2].status & PIT_STATUS_OUT ? PORT61_OUT2 : 0);
  return {
    time,
    port61,
    channels: read,
    shadow: {
      channels: channels.map((c) => pitShadow(c, s.clock.kvmNowNs, time)),
      gate2Rose: 0,
      gate2RoseAt: 0,
    },
  };
}

/** The status read-back and counting element at the capture, by KVM's formula from count_load_time. */
function counterAt(c: KvmPitChannelState, now: bigint, datasheet: boolean): { status: number; count: number } {
  const fields = (c.rwMode << 4) | (c.mode << 1) | c.bcd;
  // A datasheet channel never programmed has no count to run from.
  if (datasheet && c.rwMode === 0) return { status: fields, count: 0 };
  const d = ticksIn(now - c.countLoadTime);
  return { status: (outAfter(c.mode, c.count, d, datasheet) ? PIT_STATUS_OUT : 0) | fields, count: countAfter(c.mode, c.count, d, datasheet) & readableBytes(c.rwMode) };
}

function pitShadow(c: KvmPitChannelState, now: bigint, time: number): PitChannelShadowRecord {
  const programmed = c.rwMode !== 0;
  const writeMsbNext = c.writeState === RW_STATE_WORD1 ? 1 : 0;
  const loaded = BigInt(time) - (now - c.countLoadTime);
  return {
    mode: c.mode,
    rwMode: c.rwMode,
    bcd: c.bcd,
    countRegister: c.count & 0xffff,
    countsWritten: programmed ? 1 : 0,
    writeMsbNext,
    heldLsb: writeMsbNext ? c.writeLatch : 0,
    readMsbNext: c.readState === RW_STATE_WORD1 ? 1 : 0,
    countLatched: c.countLatched,
    statusLatched: c.statusLatched,
    restartKnown: programmed ? 1 : 0,
    restartTime: programmed && loaded > 0n ? Number(loaded) : 0,
    heldCount: c.countLatched ? 1 : 0,
    heldStatus: c.statusLatched,
    heldCountValue: c.countLatched ? c.latchedCount : 0,
    heldStatusValue: c.statusLatched ? c.status : 0,
  };
}

// ---- local APICs and CPUs -------------------------------------------------------------------

function lapicRecord(s: KvmState, k: number, note: (field: string, reason: string) => void): LapicRecord {
  const cpu = s.cpus[k];
  const p = cpu.lapic;
  const struct = `kvm_lapic_state(cpu ${k})`;
  const apicBase = cpu.sregs.apicBase;
  const x2 = (apicBase & APIC_BASE_X2APIC) !== 0n;
  const enabled = (apicBase & APIC_BASE_ENABLE) !== 0n;
  const deadline = cpu.msrs.find((m) => m.index === MSR_IA32_TSC_DEADLINE)?.data ?? 0n;
  const base = { apicBase: Number(apicBase), tscDeadline: deadline < 2n ** 53n ? Number(deadline) : deadline };
  if (cpu.sregs.cr8 !== BigInt(p.tpr >>> 4)) note(`kvm_sregs(cpu ${k}).cr8`, `CR8 mirrors TPR bits 7..4; the page's TPR 0x${p.tpr.toString(16)} is taken`);
  if (p.version !== LAPIC_VERSION) note(`${struct}.version`, `read-only: the model's local APIC is version 0x${LAPIC_VERSION.toString(16)}`);
  if ((p.lvtCmci & LVT_MASKED) === 0) note(`${struct}.lvtCmci`, "the model's local APIC has no CMCI LVT entry (max LVT entry 5)");
  if (!enabled) {
    note(struct, "the APIC is globally disabled (IA32_APIC_BASE bit 11 clear): its page cannot be written, so it is taken at its reset values");
    return {
      pageCaptured: 0, ...base, id: 0, tpr: 0, ldr: 0, dfr: 0xffffffff, svr: 0xff, isr: Array(8).fill(0), tmr: Array(8).fill(0), irr: Array(8).fill(0),
      esr: 0, icrLow: 0, icrHigh: 0, lvt: Array(6).fill(LVT_MASKED), initialCount: 0, currentCount: 0, divideConfig: 0,
    };
  }
  let id = p.id & 0xff000000;
  if (x2) {
    const x2id = s.x2apicIds === "32-bit" ? p.id : p.id >>> 24;
    if (x2id !== k) note(`${struct}.id`, `the model's x2APIC IDs are the CPU numbers: CPU ${k} has ID ${k}, not ${x2id}`);
    id = (k << 24) >>> 0;
  } else if (p.id & 0x00ffffff) {
    note(`${struct}.id`, "bits 23..0 of an xAPIC ID register are reserved");
  }
  if (p.esr & ~0xe0) note(`${struct}.esr`, "the model's local APIC reports only the illegal-vector and illegal-register errors (bits 7..5)");
  return {
    pageCaptured: 1,
    ...base,
    id: id >>> 0,
    tpr: p.tpr & 0xff,
    ldr: x2 ? 0 : (p.ldr & 0xff000000) >>> 0,
    dfr: x2 ? 0xffffffff : (p.dfr | 0x0fffffff) >>> 0,
    svr: p.svr & 0x3ff,
    isr: [...p.isr],
    tmr: [...p.tmr],
    irr: [...p.irr],
    esr: p.esr & 0xe0,
    icrLow: p.icrLow,
    icrHigh: p.icrHigh,
    lvt: LVT_NAMES.map((name) => p[name]),
    initialCount: p.initialCount,
    currentCount: p.currentCount,
    divideConfig: p.divideConfig & 0xb,
  };
}

function cpuRecord(cpu: KvmCpuState, k: number, note: (field: string, reason: string) => void): { startUp: number; nmiPending: number } {
  const struct = `kvm_mp_state(cpu ${k})`;
  const e = cpu.events;
  const vector = e.flags & KVM_VCPUEVENT_VALID_SIPI_VECTOR ? e.sipiVector : START_UP_RESET;
  let startUp: number;
  switch (cpu.mpState.mpState) {
    case MpState.Uninitialized:
      note(struct, "UNINITIALIZED ignores start-up IPIs until an INIT; the model's waiting CPU takes the next one");
      startUp = START_UP_WAITING;
      break;
    case MpState.InitReceived:
      startUp = START_UP_WAITING;
      break;
    case MpState.Halted:
      note(struct, "HALTED: the model's CPUs have no halt state; the CPU runs");
      startUp = vector;
      break;
    case MpState.SipiReceived:
      note(struct, "SIPI_RECEIVED: the model takes a start-up IPI at once; the CPU runs from its vector");
      startUp = e.sipiVector;
      break;
    default:
      startUp = vector;
  }
  return { startUp, nmiPending: e.flags & KVM_VCPUEVENT_VALID_NMI_PENDING ? e.nmiPending : 0 };
}
