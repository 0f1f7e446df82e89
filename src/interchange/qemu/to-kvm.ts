// QEMU 7.2's device sections ("i8259" ×2, "i8254", "apic" per CPU, "ioapic", "cpu_common",
// "cpu", "timer", "pcspk") as KVM's structs, converting QEMU's conventions where KVM's differ;
// the fields that have no place in KVM's structs are named. docs/qemu-state.md has the table.

import { DEFAULT_CONFIG } from "../../core/machine.js";
import { LVT_PERIODIC } from "../../guest/drivers.js";
import { LAPIC_VERSION } from "../../../assembly/common/hardware.js";
import {
  KVM_IOAPIC_NUM_PINS, KVM_PIT_FLAGS_HPET_LEGACY, KVM_PIT_FLAGS_SPEAKER_DATA_ON, KVM_VCPUEVENT_VALID_NMI_PENDING,
  KVM_VCPUEVENT_VALID_SIPI_VECTOR, LVT_NAMES, MSR_IA32_TSC_DEADLINE, MpState, PIT_CHANNEL_COUNT,
  type KvmLapicState, type KvmPicState, type KvmPitChannelState,
} from "../kvm/layout.js";
import { APIC_BASE_X2APIC, ELCR_MASK, IOAPIC_BASE, LVT_MASKED, processorPriority } from "../kvm/conventions.js";
import type { KvmCpuState, KvmException, KvmState } from "../kvm/state.js";
import { QemuStreamError } from "./cursor.js";
import type { QemuStream, SectionState } from "./stream.js";
import type { VmRecord, VmValue } from "./vmstate.js";

/** The section versions this conversion reads; others are reported and left out. */
export const MAPPED_VERSIONS: Readonly<Record<string, number>> = { i8259: 1, i8254: 3, apic: 3, ioapic: 3, cpu_common: 1, cpu: 12, timer: 2, pcspk: 1 };

/** A section the conversion did not use, and why. */
export interface SkippedSection {
  name: string;
  instance: number;
  version: number;
  reason: string;
}

export interface QemuConversion {
  state: KvmState;
  /**
   * Per CPU, the nanoseconds from the stop until QEMU's local APIC timer next decrements (0 when
   * it does not count): QEMU's divided clock runs from initial_count_load_time, and no KVM
   * field holds where inside a divided period the count stands.
   */
  timerPhases: number[];
  /** QEMU fields with no place in KVM's structs (or whose value KVM's structs cannot hold). */
  exceptions: KvmException[];
  skipped: SkippedSection[];
}

/** The LVT timer's mode field (bits 18..17); both bits set is TSC-deadline mode. */
const LVT_TIMER_MODE = 0x60000;
/** QEMU's local APIC timer counts the virtual clock's nanoseconds, divided. */
const QEMU_APIC_BUS_HZ = 1_000_000_000;
const DFR_RESERVED_ONES = 0x0fffffff;
/** Divide by 128, the largest divider. */
const MAX_COUNT_SHIFT = 7;

/**
 * KVM's structs for the machine the stream describes: its board (one local APIC per "apic"
 * section), QEMU's virtual clock at the stop as the clock of every time field, and each
 * device's fields. A missing device section, or a value that cannot be what QEMU wrote, is a
 * QemuStreamError at its section.
 */
export function kvmStateFromQemu(stream: QemuStream): QemuConversion {
  const exceptions: KvmException[] = [];
  const skipped: SkippedSection[] = [];
  const timerPhases: number[] = [];
  const used = new Map<string, SectionState[]>();
  for (const s of stream.states) {
    const wanted = MAPPED_VERSIONS[s.name];
    if (wanted === undefined) skipped.push({ ...pick(s), reason: "not a device the model has" });
    else if (wanted !== s.version) skipped.push({ ...pick(s), reason: `version ${s.version}: this conversion reads version ${wanted}` });
    else used.set(s.name, [...(used.get(s.name) ?? []), s]);
  }
  const one = (name: string, instance = 0): SectionState => {
    const s = used.get(name)?.find((x) => x.instance === instance);
    if (!s) throw new QemuStreamError(stream.sections.at(-1)?.end ?? 0, `the stream has no usable section ${name} (instance ${instance}), which the conversion needs`);
    return s;
  };
  const now = clockAtStop(one("timer"));
  const lapics = (used.get("apic") ?? []).slice().sort((a, b) => a.instance - b.instance);
  if (lapics.length === 0) throw new QemuStreamError(0, "the stream has no usable apic section: the board needs one local APIC per CPU");
  lapics.forEach((s, k) => {
    if (s.instance !== k) throw new QemuStreamError(s.offset, `apic sections: instance ${s.instance} where ${k} was expected (one per CPU, numbered from 0)`);
  });

  const pit = one("i8254");
  const pcspk = used.get("pcspk")?.find((s) => s.instance === 0);
  const hpetLegacy = u(pit, "channels[0].irq_disabled") !== 0;
  const state: KvmState = {
    board: { ...DEFAULT_CONFIG, cpus: lapics.length, compatQemu: true, apicBusHz: QEMU_APIC_BUS_HZ, pitIrq0: !hpetLegacy },
    clock: { kvmNowNs: now, modelTimeNs: safeTime(now, one("timer")) },
    x2apicIds: "32-bit",
    picMaster: pic(one("i8259", 0), ELCR_MASK.master, exceptions),
    picSlave: pic(one("i8259", 1), ELCR_MASK.slave, exceptions),
    pit: {
      channels: list(pit, "channels", PIT_CHANNEL_COUNT).map((ch, i) => pitChannel(pit, ch, i)),
      flags: (hpetLegacy ? KVM_PIT_FLAGS_HPET_LEGACY : 0) | (pcspk && u(pcspk, "data_on") ? KVM_PIT_FLAGS_SPEAKER_DATA_ON : 0),
    },
    ioapic: ioapic(one("ioapic"), exceptions),
    cpus: lapics.map((s, k) => {
      const { state: c, timerPhase } = cpu(s, used.get("cpu_common")?.find((x) => x.instance === k), used.get("cpu")?.find((x) => x.instance === k), now, exceptions);
      timerPhases.push(timerPhase);
      return c;
    }),
  };
  return { state, exceptions, skipped, timerPhases };
}

const pick = (s: SectionState) => ({ name: s.name, instance: s.instance, version: s.version });

/**
 * QEMU_CLOCK_VIRTUAL at the stop: while the VM is stopped QEMU keeps the clock's frozen value
 * in cpu_clock_offset, and the stream is written stopped.
 */
function clockAtStop(timer: SectionState): bigint {
  const now = i64(timer, "cpu_clock_offset");
  if (now < 0n) throw new QemuStreamError(timer.offset, `section timer: cpu_clock_offset ${now} is not a virtual time`);
  return now;
}

function safeTime(now: bigint, timer: SectionState): number {
  if (now > BigInt(Number.MAX_SAFE_INTEGER)) throw new QemuStreamError(timer.offset, `section timer: virtual time ${now} ns is beyond what the model's clock holds`);
  return Number(now);
}

function pic(s: SectionState, elcrMask: number, exceptions: KvmException[]): KvmPicState {
  const where = `i8259(${s.instance})`;
  if (u(s, "single_mode") !== 0) exceptions.push({ kind: "inexpressible", field: `${where}.single_mode`, reason: "ICW1 SNGL (no cascade): kvm_pic_state has no field for it; the rebuild assumes the cascaded pair" });
  const ltim = subsection(s, "i8259/ltim")?.ltim;
  if (typeof ltim === "number" && ltim !== 0) exceptions.push({ kind: "inexpressible", field: `${where}.ltim`, reason: "ICW1 LTIM (all inputs level-triggered): kvm_pic_state has no field for it" });
  return {
    lastIrr: u(s, "last_irr"),
    irr: u(s, "irr"),
    imr: u(s, "imr"),
    isr: u(s, "isr"),
    priorityAdd: u(s, "priority_add"),
    irqBase: u(s, "irq_base"),
    readRegSelect: u(s, "read_reg_select"),
    poll: u(s, "poll"),
    specialMask: u(s, "special_mask"),
    initState: u(s, "init_state"),
    autoEoi: u(s, "auto_eoi"),
    rotateOnAutoEoi: u(s, "rotate_on_auto_eoi"),
    specialFullyNested: u(s, "special_fully_nested_mode"),
    init4: u(s, "init4"),
    elcr: u(s, "elcr"),
    // QEMU keeps the mask as a board property, not in the stream: the PIIX3's.
    elcrMask,
  };
}

function pitChannel(s: SectionState, ch: VmValue, i: number): KvmPitChannelState {
  const c = asRecord(ch, s, `channels[${i}]`);
  const field = (name: string) => u({ ...s, fields: c }, name, `channels[${i}].${name}`);
  const count = field("count");
  if (count > 0x10000) fail(s, `channels[${i}].count ${count} is not a count (0..65536)`);
  return {
    count,
    latchedCount: field("latched_count"),
    countLatched: field("count_latched"),
    statusLatched: field("status_latched"),
    status: field("status"),
    readState: field("read_state"),
    writeState: field("write_state"),
    writeLatch: field("write_latch"),
    rwMode: field("rw_mode"),
    mode: field("mode"),
    bcd: field("bcd"),
    gate: field("gate"),
    // QEMU_CLOCK_VIRTUAL ns: the clock of KvmState.clock.
    countLoadTime: i64({ ...s, fields: c }, "count_load_time", `channels[${i}].count_load_time`),
  };
}

function ioapic(s: SectionState, exceptions: KvmException[]): KvmState["ioapic"] {
  const entries = list(s, "ioredtbl", KVM_IOAPIC_NUM_PINS).map((e, pin) => {
    if (typeof e !== "bigint") throw new QemuStreamError(s.offset, `section ioapic: ioredtbl[${pin}] is not a 64-bit value`);
    return e;
  });
  const irr = u(s, "irr");
  if (irr !== 0) exceptions.push({ kind: "lost", field: "ioapic.irr", reason: "QEMU's pending-edge bits; KVM's irr holds input levels, which the stream does not have" });
  return { baseAddress: IOAPIC_BASE, ioregsel: u(s, "ioregsel"), id: u(s, "id"), irr: 0, redirtbl: entries };
}

function cpu(
  apic: SectionState,
  common: SectionState | undefined,
  cpuSection: SectionState | undefined,
  now: bigint,
  exceptions: KvmException[],
): { state: KvmCpuState; timerPhase: number } {
  const k = apic.instance;
  const where = `apic(${k})`;
  const apicBase = BigInt(u(apic, "apicbase"));
  const x2apic = (apicBase & APIC_BASE_X2APIC) !== 0n;
  const id = u(apic, "id");
  const tpr = u(apic, "tpr");
  const isr = words(apic, "isr");
  const lvt = words(apic, "lvt", LVT_NAMES.length);
  const icr = words(apic, "icr", 2);
  const divide = u(apic, "divide_conf");
  const shift = i32(apic, "count_shift");
  if (!Number.isInteger(shift) || shift < 0 || shift > MAX_COUNT_SHIFT) fail(apic, `count_shift ${shift} is no divider's (0..${MAX_COUNT_SHIFT})`);
  const initialCount = u(apic, "initial_count");
  // QEMU sets count_shift only when the divide register is written: from reset until then its
  // timer divides by 1 while the register says 2.
  const dividerShift = (((divide & 3) | ((divide >> 1) & 4)) + 1) & 7;
  if (shift !== dividerShift && initialCount !== 0) {
    exceptions.push({ kind: "lost", field: `${where}.count_shift`, reason: `QEMU counts with shift ${shift} where divide_conf 0x${divide.toString(16)} gives ${dividerShift}; the rebuilt timer follows divide_conf` });
  }
  const loadTime = i64(apic, "initial_count_load_time");
  const lapic = {
    id: x2apic ? id : id << 24,
    version: LAPIC_VERSION,
    tpr,
    apr: 0,
    ppr: processorPriority(tpr, isr),
    ldr: x2apic ? 0 : (u(apic, "log_dest") << 24) >>> 0,
    dfr: x2apic ? 0 : ((u(apic, "dest_mode") << 28) | DFR_RESERVED_ONES) >>> 0,
    svr: u(apic, "spurious_vec"),
    isr,
    tmr: words(apic, "tmr"),
    irr: words(apic, "irr"),
    esr: u(apic, "esr"),
    lvtCmci: LVT_MASKED,
    icrLow: icr[0]!,
    icrHigh: icr[1]!,
    initialCount,
    currentCount: currentCount(lvt[0]!, initialCount, loadTime, shift, now),
    divideConfig: divide,
  } as KvmLapicState;
  LVT_NAMES.forEach((name, i) => (lapic[name] = lvt[i]!));
  if (u(apic, "arb_id") !== id) exceptions.push({ kind: "unreachable", field: `${where}.arb_id`, reason: "the APIC bus arbitration ID is not software-visible; it is reset to the APIC ID" });
  const timerRunning = (lvt[0]! & LVT_TIMER_MODE) !== LVT_TIMER_MODE && initialCount !== 0;
  if (timerRunning && currentCount(lvt[0]!, initialCount, loadTime, shift, now) > 0 && nextExpiry(lvt[0]!, initialCount, loadTime, shift, now) !== i64(apic, "next_time")) {
    exceptions.push({ kind: "lost", field: `${where}.next_time`, reason: "does not follow from initial_count_load_time and count_shift: the rebuilt timer follows those" });
  }
  if ((lvt[0]! & LVT_TIMER_MODE) === LVT_TIMER_MODE) exceptions.push({ kind: "lost", field: `${where}.lvt[0]`, reason: "TSC-deadline mode: QEMU's stream keeps the deadline in the cpu section, which is not read" });

  const sipi = subsection(apic, "apic_sipi");
  const waiting = sipi !== undefined && i32({ ...apic, fields: sipi }, "wait_for_sipi") !== 0;
  const halted = common !== undefined && u(common, "halted") !== 0;
  if (!common) exceptions.push({ kind: "lost", field: `cpu_common(${k}).halted`, reason: "no cpu_common section: the CPU is taken as running" });
  const nmiPending = cpuSection && typeof cpuSection.fields["env.nmi_pending"] === "number" ? (cpuSection.fields["env.nmi_pending"] as number) : 0;
  const counting = lapic.currentCount !== 0 || (initialCount !== 0 && (lvt[0]! & LVT_PERIODIC) !== 0);
  const timerPhase = counting && shift === dividerShift ? timerPhaseAt(loadTime, shift, now) : 0;
  const state: KvmCpuState = {
    lapic,
    sregs: { cr8: BigInt(tpr >> 4), apicBase },
    mpState: { mpState: waiting ? MpState.InitReceived : halted ? MpState.Halted : MpState.Runnable },
    events: {
      nmiPending,
      sipiVector: sipi ? i32({ ...apic, fields: sipi }, "sipi_vector") & 0xff : 0,
      flags: KVM_VCPUEVENT_VALID_NMI_PENDING | (sipi ? KVM_VCPUEVENT_VALID_SIPI_VECTOR : 0),
    },
    msrs: [{ index: MSR_IA32_TSC_DEADLINE, data: 0n }],
  };
  return { state, timerPhase };
}

/** Nanoseconds from `now` to the next edge of QEMU's divided clock, which starts at the load. */
export function timerPhaseAt(loadTime: bigint, shift: number, now: bigint): number {
  const period = 1n << BigInt(shift);
  return Number(period - ((now - loadTime) % period));
}

/** QEMU's current count (apic_get_current_count): divided nanoseconds since the load, wrapping in periodic mode. */
export function currentCount(lvtTimer: number, initialCount: number, loadTime: bigint, shift: number, now: bigint): number {
  if (initialCount === 0 || now < loadTime) return initialCount;
  const d = (now - loadTime) >> BigInt(shift);
  const initial = BigInt(initialCount);
  if (lvtTimer & LVT_PERIODIC) return Number(initial - (d % (initial + 1n)));
  return d >= initial ? 0 : Number(initial - d);
}

/** When QEMU's timer fires next (apic_next_timer): the end of the current period. */
function nextExpiry(lvtTimer: number, initialCount: number, loadTime: bigint, shift: number, now: bigint): bigint {
  const d = (now - loadTime) >> BigInt(shift);
  const initial = BigInt(initialCount);
  const periods = lvtTimer & LVT_PERIODIC ? d / (initial + 1n) + 1n : 1n;
  return loadTime + ((periods * (initial + 1n)) << BigInt(shift));
}

function fail(s: SectionState, what: string): never {
  throw new QemuStreamError(s.offset, `section ${s.name} (instance ${s.instance}): ${what}`);
}

function u(s: SectionState, name: string, label = name): number {
  const v = s.fields[name];
  if (typeof v !== "number" || v < 0) fail(s, `${label} is missing or not an unsigned field`);
  return v;
}

function i32(s: SectionState, name: string): number {
  const v = s.fields[name];
  return typeof v === "number" ? v : fail(s, `${name} is missing or not a 32-bit field`);
}

function i64(s: SectionState, name: string, label = name): bigint {
  const v = s.fields[name];
  return typeof v === "bigint" ? v : fail(s, `${label} is missing or not a 64-bit field`);
}

function list(s: SectionState, name: string, length: number): VmValue[] {
  const v = s.fields[name];
  if (!Array.isArray(v) || v.length !== length) fail(s, `${name} is missing or not ${length} elements`);
  return v;
}

/** A register array: `length` unsigned 32-bit values (ISR, TMR and IRR have 8). */
function words(s: SectionState, name: string, length = 8): number[] {
  return list(s, name, length).map((v, i) => (typeof v === "number" && v >= 0 && v <= 0xffffffff ? v : fail(s, `${name}[${i}] is not an unsigned 32-bit value`)));
}

/** A subsection the section carried, or undefined. */
function subsection(s: SectionState, name: string): VmRecord | undefined {
  const v = s.fields[name];
  return v === undefined ? undefined : asRecord(v, s, name);
}

function asRecord(v: VmValue, s: SectionState, what: string): VmRecord {
  if (typeof v !== "object" || v === null || Array.isArray(v) || v instanceof Uint8Array) fail(s, `${what} is not a structure`);
  return v as VmRecord;
}
