// Byte-exact encoders and decoders of the Linux KVM x86 uapi structs that carry interrupt-chip,
// timer and CPU state (arch/x86/include/uapi/asm/kvm.h): kvm_pic_state, kvm_pit_state2,
// kvm_lapic_state, kvm_ioapic_state, and the parts of kvm_sregs, kvm_mp_state,
// kvm_vcpu_events and kvm_msrs the model's CPU state has. docs/interchange.md maps each field.

/** How a field is stored: little-endian unsigned integers, and KVM's signed 64-bit times. */
type FieldType = "u8" | "u16" | "u32" | "u64" | "s64";

/** One field of a struct: its name here (camelCase of KVM's), its byte offset and its type. */
export interface FieldLayout {
  readonly name: string;
  readonly offset: number;
  readonly type: FieldType;
}

/** A struct's size and the fields this module reads and writes (the others are zero). */
export interface StructLayout {
  /** KVM's name of the struct. */
  readonly struct: string;
  readonly size: number;
  readonly fields: readonly FieldLayout[];
}

const FIELD_BYTES: Record<FieldType, number> = { u8: 1, u16: 2, u32: 4, u64: 8, s64: 8 };

/** A buffer of the wrong size for its struct, or a value that does not fit its field. */
export class KvmLayoutError extends Error {
  override name = "KvmLayoutError";
}

/** Fields laid out one after the other from `offset`, each of `type`. */
function packed(offset: number, type: FieldType, names: readonly string[]): FieldLayout[] {
  return names.map((name, i) => ({ name, offset: offset + i * FIELD_BYTES[type], type }));
}

// ---- kvm_pic_state: one 8259A, 16 bytes ----------------------------------------------------

export interface KvmPicState {
  /** The input levels as the chip last saw them (edge detection). */
  lastIrr: number;
  irr: number;
  imr: number;
  isr: number;
  /** The level with the highest priority (the lowest-priority level plus one, mod 8). */
  priorityAdd: number;
  /** ICW2: the vector base, bits 7..3. */
  irqBase: number;
  /** OCW3 read-register select: 1 reads ISR, 0 IRR. */
  readRegSelect: number;
  poll: number;
  specialMask: number;
  /** 0 when initialised; 1 ICW2, 2 ICW3, 3 ICW4 expected next. */
  initState: number;
  autoEoi: number;
  rotateOnAutoEoi: number;
  specialFullyNested: number;
  /** ICW1 IC4: an ICW4 follows. */
  init4: number;
  elcr: number;
  /** The ELCR bits that can be written. */
  elcrMask: number;
}

export const KVM_PIC_STATE: StructLayout = {
  struct: "kvm_pic_state",
  size: 16,
  fields: packed(0, "u8", [
    "lastIrr", "irr", "imr", "isr", "priorityAdd", "irqBase", "readRegSelect", "poll",
    "specialMask", "initState", "autoEoi", "rotateOnAutoEoi", "specialFullyNested", "init4", "elcr", "elcrMask",
  ]),
};

// ---- kvm_pit_state2: the 8254 (3 × kvm_pit_channel_state) and flags, 112 bytes -------------

export interface KvmPitChannelState {
  /** The count register; KVM keeps a written 0 as 65536. */
  count: number;
  latchedCount: number;
  /** Which latched bytes remain: 0 none, 1 LSB, 2 MSB, 3 LSB then MSB (KVM's RW_STATE_*). */
  countLatched: number;
  statusLatched: number;
  /** The latched status byte. */
  status: number;
  /** The read flip-flop: the RW mode, or 3/4 for the first/second byte of a word. */
  readState: number;
  /** The write flip-flop, encoded as readState. */
  writeState: number;
  /** The LSB of a word whose MSB has not been written yet. */
  writeLatch: number;
  rwMode: number;
  mode: number;
  bcd: number;
  gate: number;
  /** When counting started, in ns of a stated clock (see the container's manifest). */
  countLoadTime: bigint;
}

export interface KvmPitState2 {
  channels: KvmPitChannelState[];
  /** KVM_PIT_FLAGS_HPET_LEGACY, KVM_PIT_FLAGS_SPEAKER_DATA_ON. */
  flags: number;
}

export const KVM_PIT_CHANNEL_STATE: StructLayout = {
  struct: "kvm_pit_channel_state",
  size: 24,
  fields: [
    { name: "count", offset: 0, type: "u32" },
    { name: "latchedCount", offset: 4, type: "u16" },
    ...packed(6, "u8", ["countLatched", "statusLatched", "status", "readState", "writeState", "writeLatch", "rwMode", "mode", "bcd", "gate"]),
    { name: "countLoadTime", offset: 16, type: "s64" },
  ],
};

export const PIT_CHANNEL_COUNT = 3;
/** The PIT does not drive IRQ 0: an HPET in legacy-replacement mode does. */
export const KVM_PIT_FLAGS_HPET_LEGACY = 0x1;
/** Port 0x61 bit 1, the speaker data enable. */
export const KVM_PIT_FLAGS_SPEAKER_DATA_ON = 0x2;

export const KVM_PIT_STATE2: StructLayout = {
  struct: "kvm_pit_state2",
  size: 112,
  fields: [{ name: "flags", offset: PIT_CHANNEL_COUNT * KVM_PIT_CHANNEL_STATE.size, type: "u32" }],
};

// ---- kvm_lapic_state: the local APIC's 1024-byte register page -----------------------------

/** The registers of the page, each 32 bits at its xAPIC offset; the rest of the page is reserved. */
export interface KvmLapicState {
  /** xAPIC: the ID in bits 31..24. x2APIC: see docs/interchange.md (KVM's two ID formats). */
  id: number;
  version: number;
  tpr: number;
  apr: number;
  ppr: number;
  ldr: number;
  dfr: number;
  svr: number;
  isr: number[];
  tmr: number[];
  irr: number[];
  esr: number;
  lvtCmci: number;
  icrLow: number;
  icrHigh: number;
  lvtTimer: number;
  lvtThermal: number;
  lvtPerformance: number;
  lvtLint0: number;
  lvtLint1: number;
  lvtError: number;
  initialCount: number;
  /** KVM fills the current count in on KVM_GET_LAPIC; KVM_SET_LAPIC restarts from the initial count. */
  currentCount: number;
  divideConfig: number;
}

const registerWords = (name: string, offset: number): FieldLayout[] => Array.from({ length: 8 }, (_, i) => ({ name: `${name}.${i}`, offset: offset + i * 16, type: "u32" as const }));

export const KVM_LAPIC_STATE: StructLayout = {
  struct: "kvm_lapic_state",
  size: 1024,
  fields: [
    ...([
      ["id", 0x20], ["version", 0x30], ["tpr", 0x80], ["apr", 0x90], ["ppr", 0xa0], ["ldr", 0xd0], ["dfr", 0xe0], ["svr", 0xf0],
    ] as const).map(([name, offset]) => ({ name, offset, type: "u32" as const })),
    ...registerWords("isr", 0x100),
    ...registerWords("tmr", 0x180),
    ...registerWords("irr", 0x200),
    ...([
      ["esr", 0x280], ["lvtCmci", 0x2f0], ["icrLow", 0x300], ["icrHigh", 0x310], ["lvtTimer", 0x320], ["lvtThermal", 0x330],
      ["lvtPerformance", 0x340], ["lvtLint0", 0x350], ["lvtLint1", 0x360], ["lvtError", 0x370], ["initialCount", 0x380],
      ["currentCount", 0x390], ["divideConfig", 0x3e0],
    ] as const).map(([name, offset]) => ({ name, offset, type: "u32" as const })),
  ],
};

/** The local APIC's LVT registers in page order (timer at 0x320 … error at 0x370). */
export const LVT_NAMES = ["lvtTimer", "lvtThermal", "lvtPerformance", "lvtLint0", "lvtLint1", "lvtError"] as const;

// ---- kvm_ioapic_state: 216 bytes ------------------------------------------------------------

export const KVM_IOAPIC_NUM_PINS = 24;

export interface KvmIoapicState {
  baseAddress: bigint;
  ioregsel: number;
  /** The 4-bit I/O APIC ID (not shifted: the ID register shows it in bits 27..24). */
  id: number;
  /** Per pin, whether its input stands asserted. */
  irr: number;
  /** Each redirection entry's 64 bits (`bits` of KVM's union): low word 0..31, destination 63..56. */
  redirtbl: bigint[];
}

export const KVM_IOAPIC_STATE: StructLayout = {
  struct: "kvm_ioapic_state",
  size: 216,
  fields: [
    { name: "baseAddress", offset: 0, type: "u64" },
    ...packed(8, "u32", ["ioregsel", "id", "irr"]),
    ...Array.from({ length: KVM_IOAPIC_NUM_PINS }, (_, pin) => ({ name: `redirtbl.${pin}`, offset: 24 + pin * 8, type: "u64" as const })),
  ],
};

/** The fields of a redirection entry as KVM's union names them. */
export interface RedirectionFields {
  vector: number;
  deliveryMode: number;
  destMode: number;
  deliveryStatus: number;
  polarity: number;
  remoteIrr: number;
  trigMode: number;
  mask: number;
  destId: number;
}

export function redirectionFields(bits: bigint): RedirectionFields {
  const low = Number(bits & 0xffffffffn);
  return {
    vector: low & 0xff,
    deliveryMode: (low >>> 8) & 7,
    destMode: (low >>> 11) & 1,
    deliveryStatus: (low >>> 12) & 1,
    polarity: (low >>> 13) & 1,
    remoteIrr: (low >>> 14) & 1,
    trigMode: (low >>> 15) & 1,
    mask: (low >>> 16) & 1,
    destId: Number((bits >> 56n) & 0xffn),
  };
}

// ---- per CPU: kvm_sregs, kvm_mp_state, kvm_vcpu_events, kvm_msrs (the model's parts) --------

/** kvm_sregs: 8 kvm_segment (24 bytes), gdt and idt (16), seven control registers, the interrupt bitmap. */
export const KVM_SREGS: StructLayout = {
  struct: "kvm_sregs",
  size: 312,
  fields: [
    { name: "cr8", offset: 256, type: "u64" },
    { name: "apicBase", offset: 272, type: "u64" },
  ],
};

export interface KvmSregs {
  /** CR8 is TPR bits 7..4. */
  cr8: bigint;
  apicBase: bigint;
}

export const KVM_MP_STATE: StructLayout = { struct: "kvm_mp_state", size: 4, fields: [{ name: "mpState", offset: 0, type: "u32" }] };

export interface KvmMpState {
  mpState: number;
}

/** KVM's activity states (KVM_MP_STATE_*) that x86 uses. */
export const enum MpState {
  Runnable = 0,
  Uninitialized = 1,
  InitReceived = 2,
  Halted = 3,
  SipiReceived = 4,
}

/** kvm_vcpu_events: exception (8 bytes), interrupt (4), nmi (4), sipi_vector, flags, smi, … 64 bytes. */
export const KVM_VCPU_EVENTS: StructLayout = {
  struct: "kvm_vcpu_events",
  size: 64,
  fields: [
    { name: "nmiPending", offset: 13, type: "u8" },
    { name: "sipiVector", offset: 16, type: "u32" },
    { name: "flags", offset: 20, type: "u32" },
  ],
};

export interface KvmVcpuEvents {
  nmiPending: number;
  sipiVector: number;
  flags: number;
}

export const KVM_VCPUEVENT_VALID_NMI_PENDING = 0x1;
export const KVM_VCPUEVENT_VALID_SIPI_VECTOR = 0x2;

/** kvm_msrs with its kvm_msr_entry array: nmsrs, pad, then (index, reserved, data) × n. */
const MSRS_HEADER = 8;
const MSR_ENTRY = 16;
export const MSR_IA32_TSC_DEADLINE = 0x6e0;

export interface KvmMsrEntry {
  index: number;
  data: bigint;
}

// ---- encoding and decoding ------------------------------------------------------------------

type Flat = Record<string, number | bigint>;

function writeField(view: DataView, f: FieldLayout, value: number | bigint, struct: string): void {
  const where = `${struct}.${f.name}`;
  if (f.type === "u64" || f.type === "s64") {
    const v = BigInt(value);
    const [min, max] = f.type === "u64" ? [0n, (1n << 64n) - 1n] : [-(1n << 63n), (1n << 63n) - 1n];
    if (v < min || v > max) throw new KvmLayoutError(`${where}: ${v} does not fit ${f.type}`);
    if (f.type === "u64") view.setBigUint64(f.offset, v, true);
    else view.setBigInt64(f.offset, v, true);
    return;
  }
  const max = 2 ** (8 * FIELD_BYTES[f.type]) - 1;
  if (typeof value !== "number" || !Number.isInteger(value) || value < 0 || value > max) throw new KvmLayoutError(`${where}: ${String(value)} does not fit ${f.type}`);
  if (f.type === "u8") view.setUint8(f.offset, value);
  else if (f.type === "u16") view.setUint16(f.offset, value, true);
  else view.setUint32(f.offset, value, true);
}

function readField(view: DataView, f: FieldLayout): number | bigint {
  switch (f.type) {
    case "u8":
      return view.getUint8(f.offset);
    case "u16":
      return view.getUint16(f.offset, true);
    case "u32":
      return view.getUint32(f.offset, true);
    case "u64":
      return view.getBigUint64(f.offset, true);
    default:
      return view.getBigInt64(f.offset, true);
  }
}

/** Flattens `a.0`-style names: arrays of registers are stored word by word. */
function flatten(obj: object): Flat {
  const out: Flat = {};
  for (const [k, v] of Object.entries(obj)) {
    if (Array.isArray(v)) v.forEach((x, i) => (out[`${k}.${i}`] = x as number | bigint));
    else out[k] = v as number | bigint;
  }
  return out;
}

function encodeInto(layout: StructLayout, obj: object, bytes: Uint8Array, base = 0): void {
  const view = new DataView(bytes.buffer, bytes.byteOffset + base, layout.size);
  const flat = flatten(obj);
  for (const f of layout.fields) {
    const v = flat[f.name];
    if (v === undefined) throw new KvmLayoutError(`${layout.struct}.${f.name}: missing`);
    writeField(view, f, v, layout.struct);
  }
}

function decodeFrom(layout: StructLayout, bytes: Uint8Array, base = 0): Record<string, unknown> {
  const view = new DataView(bytes.buffer, bytes.byteOffset + base, layout.size);
  const out: Record<string, unknown> = {};
  for (const f of layout.fields) {
    const v = readField(view, f);
    const dot = f.name.indexOf(".");
    if (dot < 0) out[f.name] = v;
    else ((out[f.name.slice(0, dot)] ??= []) as unknown[])[Number(f.name.slice(dot + 1))] = v;
  }
  return out;
}

/** Throws unless `bytes` is exactly the struct's size; `source` says where the bytes came from. */
export function checkSize(layout: StructLayout, bytes: Uint8Array, source: string): void {
  if (bytes.length !== layout.size) throw new KvmLayoutError(`${source}: struct ${layout.struct} is ${layout.size} bytes, got ${bytes.length}`);
}

function encode(layout: StructLayout, obj: object): Uint8Array {
  const bytes = new Uint8Array(layout.size);
  encodeInto(layout, obj, bytes);
  return bytes;
}

function decode<T>(layout: StructLayout, bytes: Uint8Array, source: string): T {
  checkSize(layout, bytes, source);
  return decodeFrom(layout, bytes) as T;
}

export const encodePicState = (s: KvmPicState): Uint8Array => encode(KVM_PIC_STATE, s);
export const decodePicState = (b: Uint8Array, source = "kvm_pic_state"): KvmPicState => decode(KVM_PIC_STATE, b, source);

export function encodePitState2(s: KvmPitState2): Uint8Array {
  if (s.channels.length !== PIT_CHANNEL_COUNT) throw new KvmLayoutError(`kvm_pit_state2.channels: expected ${PIT_CHANNEL_COUNT}, got ${s.channels.length}`);
  const bytes = encode(KVM_PIT_STATE2, { flags: s.flags });
  s.channels.forEach((ch, i) => encodeInto(KVM_PIT_CHANNEL_STATE, ch, bytes, i * KVM_PIT_CHANNEL_STATE.size));
  return bytes;
}

export function decodePitState2(b: Uint8Array, source = "kvm_pit_state2"): KvmPitState2 {
  const { flags } = decode<{ flags: number }>(KVM_PIT_STATE2, b, source);
  const channels = Array.from({ length: PIT_CHANNEL_COUNT }, (_, i) => decodeFrom(KVM_PIT_CHANNEL_STATE, b, i * KVM_PIT_CHANNEL_STATE.size) as unknown as KvmPitChannelState);
  return { channels, flags };
}

export const encodeLapicState = (s: KvmLapicState): Uint8Array => encode(KVM_LAPIC_STATE, s);
export const decodeLapicState = (b: Uint8Array, source = "kvm_lapic_state"): KvmLapicState => decode(KVM_LAPIC_STATE, b, source);

export function encodeIoapicState(s: KvmIoapicState): Uint8Array {
  if (s.redirtbl.length !== KVM_IOAPIC_NUM_PINS) throw new KvmLayoutError(`kvm_ioapic_state.redirtbl: expected ${KVM_IOAPIC_NUM_PINS} entries, got ${s.redirtbl.length}`);
  return encode(KVM_IOAPIC_STATE, s);
}
export const decodeIoapicState = (b: Uint8Array, source = "kvm_ioapic_state"): KvmIoapicState => decode(KVM_IOAPIC_STATE, b, source);

export const encodeSregs = (s: KvmSregs): Uint8Array => encode(KVM_SREGS, s);
export const decodeSregs = (b: Uint8Array, source = "kvm_sregs"): KvmSregs => decode(KVM_SREGS, b, source);
export const encodeMpState = (s: KvmMpState): Uint8Array => encode(KVM_MP_STATE, s);
export const decodeMpState = (b: Uint8Array, source = "kvm_mp_state"): KvmMpState => decode(KVM_MP_STATE, b, source);
export const encodeVcpuEvents = (s: KvmVcpuEvents): Uint8Array => encode(KVM_VCPU_EVENTS, s);
export const decodeVcpuEvents = (b: Uint8Array, source = "kvm_vcpu_events"): KvmVcpuEvents => decode(KVM_VCPU_EVENTS, b, source);

export function encodeMsrs(entries: readonly KvmMsrEntry[]): Uint8Array {
  const bytes = new Uint8Array(MSRS_HEADER + MSR_ENTRY * entries.length);
  const view = new DataView(bytes.buffer);
  view.setUint32(0, entries.length, true);
  entries.forEach((e, i) => {
    view.setUint32(MSRS_HEADER + i * MSR_ENTRY, e.index, true);
    view.setBigUint64(MSRS_HEADER + i * MSR_ENTRY + 8, e.data, true);
  });
  return bytes;
}

export function decodeMsrs(b: Uint8Array, source = "kvm_msrs"): KvmMsrEntry[] {
  const view = new DataView(b.buffer, b.byteOffset, b.length);
  const count = b.length >= MSRS_HEADER ? view.getUint32(0, true) : -1;
  if (count < 0 || b.length !== MSRS_HEADER + MSR_ENTRY * count) {
    throw new KvmLayoutError(`${source}: struct kvm_msrs with ${Math.max(count, 0)} entries is ${MSRS_HEADER + MSR_ENTRY * Math.max(count, 0)} bytes, got ${b.length}`);
  }
  return Array.from({ length: count }, (_, i) => ({
    index: view.getUint32(MSRS_HEADER + i * MSR_ENTRY, true),
    data: view.getBigUint64(MSRS_HEADER + i * MSR_ENTRY + 8, true),
  }));
}
