// Refuses KVM structs that no real machine can hold — a vector below 16 in a local APIC's ISR,
// a PIT mode above 7, an I/O APIC entry with a reserved delivery mode, a flag that is neither 0
// nor 1 — before anything is built, naming struct, field and value. docs/interchange.md.

import { MAX_CPUS } from "../../core/machine.js";
import {
  KVM_IOAPIC_NUM_PINS, KVM_PIT_FLAGS_HPET_LEGACY, KVM_PIT_FLAGS_SPEAKER_DATA_ON, MpState, PIT_CHANNEL_COUNT,
  redirectionFields, type KvmPicState, type KvmPitChannelState,
} from "./layout.js";
import { APIC_BASE_ENABLE, APIC_BASE_X2APIC, KVM_PIT_MODE_RESET, RW_STATE_WORD1, RW_WORD } from "./conventions.js";
import { KvmStateError, X2APIC_ID_FORMATS, type KvmCpuState, type KvmState } from "./state.js";

/** Vectors 0–15 are reserved: the SDM's local APIC refuses them (10.5.2), so none can be pending or in service. */
const FIRST_LEGAL_VECTOR = 16;
/** Delivery modes 011 and 110 are reserved in an 82093AA redirection entry. */
const RESERVED_DELIVERY_MODES = new Set([3, 6]);
/** IA32_APIC_BASE bits: BSP (8), x2APIC enable (10), global enable (11), the page address. */
const APIC_BASE_LEGAL = 0xfffff000n | 0xd00n;
const MAX_MODE = 7;

function fail(struct: string, field: string, value: unknown, why: string): never {
  throw new KvmStateError(`${struct}.${field} = ${String(value)}: ${why}`);
}

function range(struct: string, field: string, value: number, max: number): void {
  if (!Number.isInteger(value) || value < 0 || value > max) fail(struct, field, value, max === 1 ? "expected 0 or 1" : `expected 0..${max}`);
}

/** Throws KvmStateError at the first impossible value; changes nothing. */
export function validateKvmState(s: KvmState): void {
  const b = s.board;
  if (!Number.isInteger(b.cpus) || b.cpus < 1 || b.cpus > MAX_CPUS) fail("board", "cpus", b.cpus, `expected 1..${MAX_CPUS}`);
  if (s.cpus.length !== b.cpus) fail("board", "cpus", b.cpus, `the state holds ${s.cpus.length} vCPUs`);
  if (!X2APIC_ID_FORMATS.includes(s.x2apicIds)) fail("board", "x2apicIds", JSON.stringify(s.x2apicIds), `expected one of ${X2APIC_ID_FORMATS.join(", ")}`);
  if (!Number.isSafeInteger(s.clock.modelTimeNs) || s.clock.modelTimeNs < 0) fail("clock", "modelTimeNs", s.clock.modelTimeNs, "expected an integer 0..2^53");
  validatePic("kvm_pic_state(master)", s.picMaster);
  validatePic("kvm_pic_state(slave)", s.picSlave);
  s.pit.channels.forEach((ch, i) => validatePitChannel(`kvm_pit_state2.channels[${i}]`, ch, s.clock.kvmNowNs));
  if (s.pit.channels.length !== PIT_CHANNEL_COUNT) fail("kvm_pit_state2", "channels", s.pit.channels.length, `expected ${PIT_CHANNEL_COUNT}`);
  const knownFlags = KVM_PIT_FLAGS_HPET_LEGACY | KVM_PIT_FLAGS_SPEAKER_DATA_ON;
  if ((s.pit.flags & ~knownFlags) !== 0) fail("kvm_pit_state2", "flags", `0x${s.pit.flags.toString(16)}`, "unknown flag bits");
  validateIoapic(s);
  s.cpus.forEach((cpu, k) => validateCpu(k, cpu, !b.compatQemu));
}

function validatePic(struct: string, p: KvmPicState): void {
  for (const f of ["readRegSelect", "poll", "specialMask", "autoEoi", "rotateOnAutoEoi", "specialFullyNested", "init4"] as const) range(struct, f, p[f], 1);
  range(struct, "priorityAdd", p.priorityAdd, 7);
  range(struct, "initState", p.initState, 3);
  if (p.irqBase & 7) fail(struct, "irqBase", `0x${p.irqBase.toString(16)}`, "ICW2 gives the vector base in bits 7..3; bits 2..0 are the level and always 0 here");
  if (p.elcr & ~p.elcrMask) fail(struct, "elcr", `0x${p.elcr.toString(16)}`, `sets bits outside elcrMask 0x${p.elcrMask.toString(16)}`);
  if (p.initState === 3 && !p.init4) fail(struct, "initState", 3, "waits for ICW4 although init4 = 0");
}

function validatePitChannel(struct: string, c: KvmPitChannelState, now: bigint): void {
  if (!Number.isInteger(c.count) || c.count < 1 || c.count > 0x10000) fail(struct, "count", c.count, "expected 1..65536 (KVM keeps a written 0 as 65536)");
  range(struct, "rwMode", c.rwMode, 3);
  // 82C54: M2 is "don't care" in modes 2 and 3, so 6 and 7 are legal encodings of them; the bits
  // as written are kept (the status read-back returns them).
  if (!(c.mode === KVM_PIT_MODE_RESET && c.rwMode === 0)) range(struct, "mode", c.mode, MAX_MODE);
  range(struct, "bcd", c.bcd, 1);
  range(struct, "gate", c.gate, 1);
  range(struct, "statusLatched", c.statusLatched, 1);
  range(struct, "countLatched", c.countLatched, 3);
  for (const f of ["readState", "writeState"] as const) {
    const v = c[f];
    const legal = c.rwMode === RW_WORD ? v === RW_WORD || v === RW_STATE_WORD1 : v === c.rwMode;
    if (!legal) fail(struct, f, v, c.rwMode === RW_WORD ? "expected 3 or 4 (LSB or MSB next) for rwMode 3" : `expected rwMode (${c.rwMode})`);
  }
  if (c.countLatched !== 0 && c.rwMode === 0) fail(struct, "countLatched", c.countLatched, "a channel never programmed (rwMode 0) latches nothing");
  range(struct, "writeLatch", c.writeLatch, 0xff);
  range(struct, "status", c.status, 0xff);
  if (c.countLoadTime > now) fail(struct, "countLoadTime", c.countLoadTime, `after the capture (clock ${now})`);
}

function validateIoapic(s: KvmState): void {
  const io = s.ioapic;
  const struct = "kvm_ioapic_state";
  if (io.redirtbl.length !== KVM_IOAPIC_NUM_PINS) fail(struct, "redirtbl", `${io.redirtbl.length} entries`, `expected ${KVM_IOAPIC_NUM_PINS}`);
  range(struct, "ioregsel", io.ioregsel, 0xff);
  range(struct, "id", io.id, 0xf);
  io.redirtbl.forEach((bits, pin) => {
    const e = redirectionFields(bits);
    if (RESERVED_DELIVERY_MODES.has(e.deliveryMode)) fail(struct, `redirtbl[${pin}].deliveryMode`, e.deliveryMode, "reserved (82093AA: 011 and 110)");
  });
}

/** `datasheet`: the SDM's local APIC, which refuses vectors 0–15; QEMU 7.2's takes them into IRR. */
function validateCpu(k: number, cpu: KvmCpuState, datasheet: boolean): void {
  const lapic = `kvm_lapic_state(cpu ${k})`;
  for (const reg of datasheet ? (["isr", "irr", "tmr"] as const) : []) {
    const low = cpu.lapic[reg][0] & 0xffff;
    if (low !== 0) fail(lapic, reg, `vector ${31 - Math.clz32(low & -low)}`, `vectors 0–15 are reserved and can never be ${reg === "isr" ? "in service" : reg === "irr" ? "requested" : "accepted"}`);
  }
  const sregs = `kvm_sregs(cpu ${k})`;
  if ((cpu.sregs.apicBase & ~APIC_BASE_LEGAL) !== 0n) fail(sregs, "apic_base", `0x${cpu.sregs.apicBase.toString(16)}`, "sets reserved bits");
  const x2 = (cpu.sregs.apicBase & APIC_BASE_X2APIC) !== 0n;
  if (x2 && (cpu.sregs.apicBase & APIC_BASE_ENABLE) === 0n) fail(sregs, "apic_base", `0x${cpu.sregs.apicBase.toString(16)}`, "x2APIC mode without the global enable is an invalid state (SDM 10.12.5)");
  const mp = cpu.mpState.mpState;
  if (![MpState.Runnable, MpState.Uninitialized, MpState.InitReceived, MpState.Halted, MpState.SipiReceived].includes(mp)) {
    fail(`kvm_mp_state(cpu ${k})`, "mp_state", mp, "not an x86 activity state the model has (0 runnable, 1 uninitialized, 2 INIT received, 3 halted, 4 SIPI received)");
  }
  range(`kvm_vcpu_events(cpu ${k})`, "nmi.pending", cpu.events.nmiPending, 1);
  range(`kvm_vcpu_events(cpu ${k})`, "sipi_vector", cpu.events.sipiVector, 0xff);
}
