// A captured device record (Machine.capture()) written as KVM's structs, with KVM's conventions:
// the current count filled into the LAPIC page, the x2APIC ID format, PPR worked out, and each
// PIT channel's count_load_time chosen so that KVM's count formula gives the counting element
// read at capture. docs/interchange.md has the field mapping.

import { LAPIC_VERSION } from "../../../assembly/common/hardware.js";
import type { MachineConfig } from "../../core/machine.js";
import {
  KVM_IOAPIC_NUM_PINS, KVM_PIT_FLAGS_HPET_LEGACY, KVM_PIT_FLAGS_SPEAKER_DATA_ON, KVM_VCPUEVENT_VALID_NMI_PENDING,
  KVM_VCPUEVENT_VALID_SIPI_VECTOR, LVT_NAMES, MSR_IA32_TSC_DEADLINE, MpState, type KvmLapicState,
  type KvmPicState, type KvmPitChannelState, type KvmPitState2,
} from "./layout.js";
import {
  APIC_BASE_X2APIC, ELCR_MASK, ICW1_IC4, IOAPIC_ENTRY_MASKED, KVM_PIT_MODE_RESET, ICW4_AEOI, ICW4_SFNM, IOAPIC_BASE, LVT_MASKED, PIT_STATUS_OUT, PORT61_GATE2, PORT61_SPEAKER, flipFlopState, nsForTicks, processorPriority, readableBytes, ticksFor, ticksIn,
  x2apicLogicalId,
} from "./conventions.js";
import {
  START_UP_RESET, START_UP_WAITING, describesPresentDevice, isaPins, lapicRecords, type DeviceRecordBody, type KvmState, type LapicRecord,
  type KvmCpuState, type KvmException, type PicChipRecord, type PicChipShadowRecord, type PitChannelShadowRecord, type X2apicIdFormat,
} from "./state.js";
import { differences, recordFromKvm } from "./to-machine.js";


/** Writes `record` (a capture) as KVM's structs; the clock is the record's own virtual time. */
export function kvmStateFromRecord(record: DeviceRecordBody, x2apicIds: X2apicIdFormat = "32-bit"): KvmState {
  const time = record.time;
  const isa = record.lines.isa;
  const config = boardOf(record);
  const cpus = lapicRecords(record).map((lapic, k) => cpuState(record, lapic, k, x2apicIds));
  return {
    board: config,
    clock: { kvmNowNs: BigInt(time), modelTimeNs: time },
    x2apicIds,
    // A device the board lacks is written as KVM resets it: its part of the record is no state.
    picMaster: config.pic ? picState(record.pic.master, record.pic.shadow.master, isa & 0xff, ELCR_MASK.master) : resetPic(ELCR_MASK.master),
    picSlave: config.pic ? picState(record.pic.slave, record.pic.shadow.slave, (isa >>> 8) & 0xff, ELCR_MASK.slave) : resetPic(ELCR_MASK.slave),
    pit: config.pit ? pitState(record, !config.compatQemu) : resetPit(),
    ioapic: config.ioapic ? {
      baseAddress: IOAPIC_BASE,
      ioregsel: record.apic.ioapic.ioregsel,
      id: record.apic.ioapic.id >>> 24,
      irr: (record.lines.gsi | isaPins(isa)) >>> 0,
      redirtbl: record.apic.ioapic.entries.slice(0, KVM_IOAPIC_NUM_PINS).map((e) => (BigInt(e.high >>> 0) << 32n) | BigInt(e.low >>> 0)),
    } : { baseAddress: IOAPIC_BASE, ioregsel: 0, id: 0, irr: 0, redirtbl: Array.from({ length: KVM_IOAPIC_NUM_PINS }, () => BigInt(IOAPIC_ENTRY_MASKED)) },
    cpus,
  };
}

export function boardOf(record: DeviceRecordBody): MachineConfig {
  const c = record.config;
  return {
    pic: c.pic === 1, pit: c.pit === 1, lapic: c.lapic === 1, ioapic: c.ioapic === 1, cpus: c.cpus, pitIrq0: c.pitIrq0 === 1,
    compatQemu: c.compatQemu === 1, apicBusHz: c.apicBusHz, tscHz: c.tscHz,
  };
}

function resetPic(elcrMask: number): KvmPicState {
  return {
    lastIrr: 0, irr: 0, imr: 0, isr: 0, priorityAdd: 0, irqBase: 0, readRegSelect: 0, poll: 0, specialMask: 0, initState: 0,
    autoEoi: 0, rotateOnAutoEoi: 0, specialFullyNested: 0, init4: 0, elcr: 0, elcrMask,
  };
}

/** KVM's PIT after reset: no control word yet (mode 0xff), every count 65536, gates 0 and 1 high. */
function resetPit(): KvmPitState2 {
  return {
    channels: [0, 1, 2].map((i) => ({
      count: 0x10000, latchedCount: 0, countLatched: 0, statusLatched: 0, status: 0, readState: 0, writeState: 0, writeLatch: 0,
      rwMode: 0, mode: KVM_PIT_MODE_RESET, bcd: 0, gate: i === 2 ? 0 : 1, countLoadTime: 0n,
    })),
    flags: 0,
  };
}

function picState(chip: PicChipRecord, shadow: PicChipShadowRecord, inputs: number, elcrMask: number): KvmPicState {
  return {
    lastIrr: inputs,
    irr: chip.irr,
    imr: chip.imr,
    isr: chip.isr,
    priorityAdd: (shadow.lowestPriority + 1) & 7,
    irqBase: shadow.icw2 & 0xf8,
    readRegSelect: shadow.readIsr,
    poll: shadow.pollPending,
    specialMask: shadow.specialMask,
    initState: shadow.initStep,
    autoEoi: shadow.icw4 & ICW4_AEOI ? 1 : 0,
    rotateOnAutoEoi: shadow.rotateInAeoi,
    specialFullyNested: shadow.icw4 & ICW4_SFNM ? 1 : 0,
    init4: shadow.icw1 & ICW1_IC4,
    elcr: chip.elcr,
    elcrMask,
  };
}

function pitState(record: DeviceRecordBody, datasheet: boolean): KvmPitState2 {
  const { port61, channels, shadow } = record.pit;
  const channel = (i: number): KvmPitChannelState => {
    const s = shadow.channels[i];
    const count = s.countRegister === 0 ? 0x10000 : s.countRegister;
    return {
      count,
      latchedCount: s.heldCountValue,
      countLatched: s.countLatched,
      statusLatched: s.statusLatched,
      status: s.heldStatusValue,
      readState: flipFlopState(s.rwMode, s.readMsbNext),
      writeState: flipFlopState(s.rwMode, s.writeMsbNext),
      writeLatch: s.heldLsb,
      rwMode: s.rwMode,
      mode: s.mode,
      bcd: s.bcd,
      gate: i === 2 ? port61 & PORT61_GATE2 : 1,
      countLoadTime: countLoadTime(record.time, s, count, channels[i], datasheet),
    };
  };
  return {
    channels: [0, 1, 2].map(channel),
    flags: (record.lines.pitRouted ? 0 : KVM_PIT_FLAGS_HPET_LEGACY) | (port61 & PORT61_SPEAKER ? KVM_PIT_FLAGS_SPEAKER_DATA_ON : 0),
  };
}

/**
 * When KVM would have loaded the count for its formula to give, at `time`, the counting
 * element (the bytes the read-back shows) and OUT read at capture: the last count write the
 * hypervisor saw if that does (always on a QEMU-mode board, whose PIT counts as KVM's), else
 * the latest moment that does, else the last count write.
 */
function countLoadTime(time: number, s: PitChannelShadowRecord, count: number, read: { status: number; count: number }, datasheet: boolean): bigint {
  const now = BigInt(time);
  const written = s.restartKnown ? BigInt(s.restartTime) : undefined;
  const reading = { mode: s.mode, count, value: read.count, mask: readableBytes(s.rwMode), out: (read.status & PIT_STATUS_OUT) !== 0, datasheet };
  const ticks = ticksFor(reading, written === undefined ? undefined : ticksIn(now - written));
  if (ticks === undefined) return written ?? now;
  return written !== undefined && ticks === ticksIn(now - written) ? written : now - nsForTicks(ticks);
}

function cpuState(record: DeviceRecordBody, lapic: LapicRecord, cpu: number, x2apicIds: X2apicIdFormat): KvmCpuState {
  const state = record.cpu[String(cpu)];
  const running = state.startUp !== START_UP_WAITING;
  const startedBySipi = state.startUp < START_UP_RESET;
  return {
    lapic: lapicPage(lapic, cpu, x2apicIds),
    sregs: { cr8: BigInt(lapic.tpr >>> 4), apicBase: BigInt(lapic.apicBase) },
    mpState: { mpState: running ? MpState.Runnable : MpState.InitReceived },
    events: {
      nmiPending: state.nmiPending,
      sipiVector: startedBySipi ? state.startUp : 0,
      flags: KVM_VCPUEVENT_VALID_NMI_PENDING | (startedBySipi ? KVM_VCPUEVENT_VALID_SIPI_VECTOR : 0),
    },
    msrs: [{ index: MSR_IA32_TSC_DEADLINE, data: BigInt(lapic.tscDeadline) }],
  };
}

function lapicPage(r: LapicRecord, cpu: number, x2apicIds: X2apicIdFormat): KvmLapicState {
  const x2 = (BigInt(r.apicBase) & APIC_BASE_X2APIC) !== 0n;
  const lvt = Object.fromEntries(LVT_NAMES.map((name, i) => [name, r.lvt[i]])) as Record<(typeof LVT_NAMES)[number], number>;
  return {
    // The model's x2APIC ID is its CPU number (captured as cpu << 24).
    id: x2 && x2apicIds === "32-bit" ? r.id >>> 24 : r.id,
    version: LAPIC_VERSION,
    tpr: r.tpr,
    apr: 0,
    ppr: processorPriority(r.tpr, r.isr),
    ldr: x2 ? x2apicLogicalId(cpu) : r.ldr,
    dfr: r.dfr,
    svr: r.svr,
    isr: [...r.isr],
    tmr: [...r.tmr],
    irr: [...r.irr],
    esr: r.esr,
    lvtCmci: LVT_MASKED,
    icrLow: r.icrLow,
    icrHigh: r.icrHigh,
    ...lvt,
    initialCount: r.initialCount,
    currentCount: r.currentCount,
    divideConfig: r.divideConfig,
  };
}

/** The reason of a lost field no entry of LOST explains. */
export const NOT_CARRIED = "not carried by the KVM structs";

/** Why a record field does not survive the structs, by the field's path; the first match wins. */
const LOST: readonly [RegExp, string][] = [
  [/^pic\.shadow\.\w+\.icw1$/, "kvm_pic_state keeps only ICW1's IC4 (init4): single mode, ADI, LTIM and the MCS-80 address bits are assumed (cascade, edge, 0)"],
  [/^pic\.shadow\.\w+\.icw2$/, "kvm_pic_state.irq_base keeps ICW2 bits 7..3 only"],
  [/^pic\.shadow\.\w+\.icw3$/, "kvm_pic_state has no ICW3: the PC's cascade (master 0x04, slave ID 2) is assumed"],
  [/^pic\.shadow\.\w+\.icw4$/, "kvm_pic_state keeps only AEOI and SFNM of ICW4 (8086 mode assumed; BUF and M/S lost), and nothing of an ICW4 that no ICW4 follows"],
  [/^pic\.shadow\.\w+\.lowestPriorityStale$/, "KVM has no notion of a priority pointer the hypervisor could not follow"],
  [/^pic\.shadow\.\w+\.pollStatus\./, "the registers as they stood before a pending poll are the hypervisor's, not the chip's"],
  [/^pit\.channels\.\d\.(count|status)$/, "KVM stores no counting element, OUT or NULL COUNT: they are computed from count_load_time by KVM's formula, which no load time makes give this value"],
  [/^pit\.shadow\.channels\.\d\.(restartKnown|restartTime)$/, "count_load_time is the moment KVM's formula counts from, not the last count write the hypervisor saw"],
  [/^pit\.shadow\.channels\.\d\.countsWritten$/, "KVM does not count the counts written since the control word"],
  [/^pit\.shadow\.(gate2Rose|gate2RoseAt)$/, "a gate-2 trigger still due within the current PIT clock is not in kvm_pit_state2"],
  [/^pit\.port61$/, "kvm_pit_state2 holds gate 2 and the speaker bit of port 0x61; the NMI enables are lost and the refresh bit is recomputed"],
  [/^pit\.shadow\.channels\.\d\./, "not carried by kvm_pit_channel_state"],
  [/^lines\.gsi$/, "kvm_ioapic_state.irr merges a pin's direct driver with the ISA lines routed to it"],
  [/^lines\.isa$/, "kvm_pic_state.last_irr holds the chip inputs as last seen"],
  [/^cpu\.current$/, "KVM has no current CPU: every vCPU runs at once"],
  [/^cpu\.\d+\.startUp$/, "kvm_mp_state and kvm_vcpu_events do not tell this start-up apart"],
  [/^apic\.(lapic|aps\.\d+)\.(ldr|dfr)$/, "an x2APIC's LDR is derived from its ID and it has no DFR"],
];

/**
 * `record` as KVM structs, and every record field they do not carry: those whose value differs
 * once the structs are turned back into a record (recordFromKvm), each with its reason.
 */
export function exportKvmState(record: DeviceRecordBody, x2apicIds: X2apicIdFormat = "32-bit"): { state: KvmState; exceptions: KvmException[] } {
  const state = kvmStateFromRecord(record, x2apicIds);
  const lost = differences(record, recordFromKvm(state).record).filter(({ field }) => describesPresentDevice(record.config, field));
  const exceptions = lost.map(({ field }): KvmException => ({
    kind: "lost",
    field,
    reason: LOST.find(([pattern]) => pattern.test(field))?.[1] ?? NOT_CARRIED,
  }));
  return { state, exceptions };
}
