// The x86-64 architectural state a hypervisor keeps for one guest CPU, its power-on state, and
// a versioned plain record of it, and of all the CPUs of a guest together. A record arrives from
// the network, so every field is checked against what the architecture allows (reserved bits,
// canonical addresses, consistency rules of the kind VM entry enforces) before anything is built
// from it. docs/protocol.md describes the records.

import { MAX_CPUS } from "../../assembly/abi/codes.js";

export const CPU_RECORD_FORMAT = "blmv-cpu";
export const CPU_RECORD_VERSION = 1;
/** The record of every CPU of a guest: `cpus[k]` is CPU k's record. */
export const CPUS_RECORD_FORMAT = "blmv-cpus";
export const CPUS_RECORD_VERSION = 1;

export const GPR_NAMES = [
  "rax", "rbx", "rcx", "rdx", "rsi", "rdi", "rbp", "rsp",
  "r8", "r9", "r10", "r11", "r12", "r13", "r14", "r15",
] as const;
export type Gpr = (typeof GPR_NAMES)[number];

export const SEGMENT_NAMES = ["cs", "ds", "es", "fs", "gs", "ss", "ldtr", "tr"] as const;
export type SegmentName = (typeof SEGMENT_NAMES)[number];

export const DEBUG_REGISTER_NAMES = ["dr0", "dr1", "dr2", "dr3", "dr6", "dr7"] as const;
export type DebugRegister = (typeof DEBUG_REGISTER_NAMES)[number];

export const MSR_NAMES = [
  "tsc", "apicBase", "sysenterCs", "sysenterEsp", "sysenterEip", "star", "lstar", "cstar", "fmask",
  "kernelGsBase", "tscDeadline",
] as const;
export type MsrName = (typeof MSR_NAMES)[number];

/** VM-entry interruption types (SDM vol. 3, "VM-Entry Controls for Event Injection"), 1 is reserved. */
export const EVENT_TYPES = {
  external: 0,
  nmi: 2,
  "hardware-exception": 3,
  "software-interrupt": 4,
  "privileged-software-exception": 5,
  "software-exception": 6,
} as const;
export type EventType = keyof typeof EVENT_TYPES;

export interface Segment {
  selector: number;
  base: bigint;
  limit: number;
  /** VMX access-rights layout: type 3:0, S 4, DPL 6:5, P 7, AVL 12, L 13, D/B 14, G 15, unusable 16. */
  attributes: number;
}

export interface DescriptorTable {
  base: bigint;
  limit: number;
}

export interface PendingEvent {
  valid: boolean;
  type: EventType;
  vector: number;
  hasErrorCode: boolean;
  errorCode: number;
}

/** A record that does not describe a legal CPU state; the message names the field. */
export class CpuStateError extends Error {
  override name = "CpuStateError";
}

const U64_MAX = (1n << 64n) - 1n;
const U32_MAX = 0xffff_ffff;

const RFLAGS_FIXED_1 = 1n << 1n;
const RFLAGS_IF = 1n << 9n;
/** Bits 3, 5, 15 and 63:22 are reserved and must be 0. */
const RFLAGS_RESERVED = 0xffff_ffff_ffc0_8028n;
const CR0_PE = 1n;
const CR0_NW = 1n << 29n;
const CR0_CD = 1n << 30n;
const CR0_PG = 1n << 31n;
/** PE MP EM TS ET NE (5:0), WP 16, AM 18, NW CD PG (31:29). */
const CR0_DEFINED = 0xe005_003fn;
const CR4_PAE = 1n << 5n;
const CR4_LA57 = 1n << 12n;
/** Bits 14:0 and 25:16 (FSGSBASE … UINTR). */
const CR4_DEFINED = 0x03ff_7fffn;
/** The architectural maximum physical-address width. */
const MAX_PHYS_BITS = 52n;
const EFER_LME = 1n << 8n;
const EFER_LMA = 1n << 10n;
/** SCE 0, LME 8, LMA 10, NXE 11: the bits an Intel CPU defines. */
const EFER_DEFINED = 0xd01n;
/** BSP 8, x2APIC enable 10, global enable 11, base 51:12. */
const APIC_BASE_DEFINED = 0x000f_ffff_ffff_fd00n;
const APIC_BASE_EXTD = 1n << 10n;
const APIC_BASE_EN = 1n << 11n;
const SEGMENT_L = 1 << 13;
const SEGMENT_UNUSABLE = 1 << 16;
const SEGMENT_ATTRIBUTES = 0x1_f0ff;
/** Exceptions that push an error code: #DF #TS #NP #SS #GP #PF #AC #CP. */
const ERROR_CODE_VECTORS = new Set([8, 10, 11, 12, 13, 14, 17, 21]);

function segment(selector: number, base: bigint, limit: number, attributes: number): Segment {
  return { selector, base, limit, attributes };
}

export class CpuState {
  gpr = {} as Record<Gpr, bigint>;
  rip = 0n;
  rflags = 0n;
  segments = {} as Record<SegmentName, Segment>;
  cr0 = 0n;
  cr2 = 0n;
  cr3 = 0n;
  cr4 = 0n;
  cr8 = 0n;
  efer = 0n;
  gdtr: DescriptorTable = { base: 0n, limit: 0 };
  idtr: DescriptorTable = { base: 0n, limit: 0 };
  dr = {} as Record<DebugRegister, bigint>;
  msr = {} as Record<MsrName, bigint>;
  /** Blocking by STI / by MOV SS (or POP SS) for one instruction. */
  interruptibility = { sti: false, movSs: false };
  pendingEvent: PendingEvent = { valid: false, type: "external", vector: 0, hasErrorCode: false, errorCode: 0 };
  halted = false;

  constructor() {
    this.reset();
  }

  /** Power-on state (SDM vol. 3, "Processor State After Reset"). */
  reset(): void {
    for (const r of GPR_NAMES) this.gpr[r] = 0n;
    // EDX holds the processor signature: family 6, as KVM and QEMU report by default.
    this.gpr.rdx = 0x600n;
    this.rip = 0xfff0n;
    this.rflags = RFLAGS_FIXED_1;
    this.segments.cs = segment(0xf000, 0xffff_0000n, 0xffff, 0x9b);
    for (const s of ["ds", "es", "fs", "gs", "ss"] as const) this.segments[s] = segment(0, 0n, 0xffff, 0x93);
    this.segments.ldtr = segment(0, 0n, 0xffff, 0x82);
    // The SDM says only "present, R/W"; a busy 32-bit TSS is what VM entry accepts (and KVM uses).
    this.segments.tr = segment(0, 0n, 0xffff, 0x8b);
    this.cr0 = 0x6000_0010n;
    this.cr2 = this.cr3 = this.cr4 = this.cr8 = this.efer = 0n;
    this.gdtr = { base: 0n, limit: 0xffff };
    this.idtr = { base: 0n, limit: 0xffff };
    for (const d of DEBUG_REGISTER_NAMES) this.dr[d] = 0n;
    this.dr.dr6 = 0xffff_0ff0n;
    this.dr.dr7 = 0x400n;
    for (const m of MSR_NAMES) this.msr[m] = 0n;
    this.msr.apicBase = 0xfee0_0900n;
    this.interruptibility = { sti: false, movSs: false };
    this.pendingEvent = { valid: false, type: "external", vector: 0, hasErrorCode: false, errorCode: 0 };
    this.halted = false;
  }

  /** A plain, versioned copy that msgpackr (or structuredClone) carries as is. */
  toRecord(): CpuRecord {
    const segments = {} as Record<SegmentName, Segment>;
    for (const s of SEGMENT_NAMES) segments[s] = { ...this.segments[s] };
    return {
      format: CPU_RECORD_FORMAT,
      version: CPU_RECORD_VERSION,
      gpr: { ...this.gpr },
      rip: this.rip,
      rflags: this.rflags,
      segments,
      cr0: this.cr0,
      cr2: this.cr2,
      cr3: this.cr3,
      cr4: this.cr4,
      cr8: this.cr8,
      efer: this.efer,
      gdtr: { ...this.gdtr },
      idtr: { ...this.idtr },
      dr: { ...this.dr },
      msr: { ...this.msr },
      interruptibility: { ...this.interruptibility },
      pendingEvent: { ...this.pendingEvent },
      halted: this.halted,
    };
  }

  /** Builds a CPU from a record, or throws CpuStateError naming the first illegal field. */
  static fromRecord(record: unknown): CpuState {
    const r = group(record, "cpu", RECORD_KEYS);
    if (r.format !== CPU_RECORD_FORMAT) fail("cpu.format", `expected "${CPU_RECORD_FORMAT}", got ${show(r.format)}`);
    if (r.version !== CPU_RECORD_VERSION) fail("cpu.version", `this build reads version ${CPU_RECORD_VERSION}, got ${show(r.version)}`);
    const cpu = new CpuState();
    const gpr = group(r.gpr, "cpu.gpr", GPR_NAMES);
    for (const name of GPR_NAMES) cpu.gpr[name] = u64(gpr[name], `cpu.gpr.${name}`);

    // Control registers first: the canonical width and the mode decide what other fields may hold.
    cpu.cr0 = bits(r.cr0, "cpu.cr0", CR0_DEFINED);
    if (cpu.cr0 & CR0_PG && !(cpu.cr0 & CR0_PE)) fail("cpu.cr0", "paging (PG) requires protected mode (PE)");
    if (cpu.cr0 & CR0_NW && !(cpu.cr0 & CR0_CD)) fail("cpu.cr0", "not-write-through (NW) requires cache disable (CD)");
    cpu.cr2 = u64(r.cr2, "cpu.cr2");
    cpu.cr3 = bits(r.cr3, "cpu.cr3", (1n << MAX_PHYS_BITS) - 1n);
    cpu.cr4 = bits(r.cr4, "cpu.cr4", CR4_DEFINED);
    cpu.cr8 = bits(r.cr8, "cpu.cr8", 0xfn);
    cpu.efer = bits(r.efer, "cpu.efer", EFER_DEFINED);
    const paging = (cpu.cr0 & CR0_PG) !== 0n;
    const longMode = (cpu.efer & EFER_LMA) !== 0n;
    if (longMode !== (paging && (cpu.efer & EFER_LME) !== 0n)) fail("cpu.efer", "LMA must be set exactly when LME and CR0.PG are");
    if (longMode && !(cpu.cr4 & CR4_PAE)) fail("cpu.cr4", "long mode (EFER.LMA) requires PAE");
    const width = cpu.cr4 & CR4_LA57 ? 57n : 48n;
    const canonical = (v: unknown, path: string): bigint => canonicalAddress(v, path, width);

    const segs = group(r.segments, "cpu.segments", SEGMENT_NAMES);
    for (const name of SEGMENT_NAMES) {
      const path = `cpu.segments.${name}`;
      const s = group(segs[name], path, SEGMENT_KEYS);
      const attributes = uint(s.attributes, `${path}.attributes`, U32_MAX);
      if (attributes & ~SEGMENT_ATTRIBUTES) fail(`${path}.attributes`, `reserved bits set in ${hex(attributes)}`);
      // VM entry: CS/SS/DS/ES bases are 32-bit (when usable); FS, GS, LDTR and TR bases canonical.
      const narrow = (name === "cs" || name === "ss" || name === "ds" || name === "es") && !(attributes & SEGMENT_UNUSABLE);
      cpu.segments[name] = {
        selector: uint(s.selector, `${path}.selector`, 0xffff),
        base: narrow ? bits(s.base, `${path}.base`, 0xffff_ffffn) : canonical(s.base, `${path}.base`),
        limit: uint(s.limit, `${path}.limit`, U32_MAX),
        attributes,
      };
    }

    cpu.rflags = u64(r.rflags, "cpu.rflags");
    if (cpu.rflags & RFLAGS_RESERVED) fail("cpu.rflags", `reserved bits set in ${hex(cpu.rflags)}`);
    if (!(cpu.rflags & RFLAGS_FIXED_1)) fail("cpu.rflags", "bit 1 is reserved and must be 1");
    const code64 = longMode && (cpu.segments.cs.attributes & SEGMENT_L) !== 0;
    cpu.rip = code64 ? canonical(r.rip, "cpu.rip") : bits(r.rip, "cpu.rip", 0xffff_ffffn);

    for (const name of ["gdtr", "idtr"] as const) {
      const t = group(r[name], `cpu.${name}`, TABLE_KEYS);
      cpu[name] = { base: canonical(t.base, `cpu.${name}.base`), limit: uint(t.limit, `cpu.${name}.limit`, 0xffff) };
    }

    const dr = group(r.dr, "cpu.dr", DEBUG_REGISTER_NAMES);
    for (const name of ["dr0", "dr1", "dr2", "dr3"] as const) cpu.dr[name] = u64(dr[name], `cpu.dr.${name}`);
    // Bits 63:32 of DR6 and DR7 must be 0.
    cpu.dr.dr6 = bits(dr.dr6, "cpu.dr.dr6", 0xffff_ffffn);
    cpu.dr.dr7 = bits(dr.dr7, "cpu.dr.dr7", 0xffff_ffffn);

    const msr = group(r.msr, "cpu.msr", MSR_NAMES);
    const m = cpu.msr;
    m.tsc = u64(msr.tsc, "cpu.msr.tsc");
    m.apicBase = bits(msr.apicBase, "cpu.msr.apicBase", APIC_BASE_DEFINED);
    if (m.apicBase & APIC_BASE_EXTD && !(m.apicBase & APIC_BASE_EN)) fail("cpu.msr.apicBase", "x2APIC mode requires the APIC to be enabled");
    m.sysenterCs = bits(msr.sysenterCs, "cpu.msr.sysenterCs", 0xffff_ffffn);
    m.sysenterEsp = canonical(msr.sysenterEsp, "cpu.msr.sysenterEsp");
    m.sysenterEip = canonical(msr.sysenterEip, "cpu.msr.sysenterEip");
    m.star = u64(msr.star, "cpu.msr.star");
    m.lstar = canonical(msr.lstar, "cpu.msr.lstar");
    m.cstar = canonical(msr.cstar, "cpu.msr.cstar");
    m.fmask = bits(msr.fmask, "cpu.msr.fmask", 0xffff_ffffn);
    m.kernelGsBase = canonical(msr.kernelGsBase, "cpu.msr.kernelGsBase");
    m.tscDeadline = u64(msr.tscDeadline, "cpu.msr.tscDeadline");

    const blocking = group(r.interruptibility, "cpu.interruptibility", BLOCKING_KEYS);
    const sti = bool(blocking.sti, "cpu.interruptibility.sti");
    const movSs = bool(blocking.movSs, "cpu.interruptibility.movSs");
    if (sti && movSs) fail("cpu.interruptibility", "blocking by STI and by MOV SS cannot both be set");
    if (sti && !(cpu.rflags & RFLAGS_IF)) fail("cpu.interruptibility.sti", "blocking by STI requires RFLAGS.IF");
    cpu.interruptibility = { sti, movSs };

    cpu.pendingEvent = pendingEvent(r.pendingEvent);
    cpu.halted = bool(r.halted, "cpu.halted");
    return cpu;
  }
}

export interface CpusRecord {
  format: typeof CPUS_RECORD_FORMAT;
  version: number;
  cpus: CpuRecord[];
}

/** The record of a guest's CPUs, CPU 0 first. */
export function cpusToRecord(cpus: readonly CpuState[]): CpusRecord {
  return { format: CPUS_RECORD_FORMAT, version: CPUS_RECORD_VERSION, cpus: cpus.map((c) => c.toRecord()) };
}

/**
 * Every CPU of a record, or CpuStateError naming the CPU and its first illegal field. The count
 * must be 1..MAX_CPUS and, when `expected` is given, exactly that (the board's CPU count).
 */
export function cpusFromRecord(record: unknown, expected?: number): CpuState[] {
  const r = group(record, "cpus", CPUS_RECORD_KEYS);
  if (r.format !== CPUS_RECORD_FORMAT) fail("cpus.format", `expected "${CPUS_RECORD_FORMAT}", got ${show(r.format)}`);
  if (r.version !== CPUS_RECORD_VERSION) fail("cpus.version", `this build reads version ${CPUS_RECORD_VERSION}, got ${show(r.version)}`);
  const list = r.cpus;
  if (!Array.isArray(list) || list.length < 1 || list.length > MAX_CPUS) {
    fail("cpus.cpus", `expected a list of 1..${MAX_CPUS} CPU records, got ${Array.isArray(list) ? `${list.length} records` : show(list)}`);
  }
  if (expected !== undefined && list.length !== expected) fail("cpus.cpus", `${list.length} CPU records for a board of ${expected} CPUs`);
  return list.map((cpu: unknown, k) => {
    try {
      return CpuState.fromRecord(cpu);
    } catch (e) {
      if (e instanceof CpuStateError) throw new CpuStateError(`cpus[${k}] ${e.message}`);
      throw e;
    }
  });
}

export interface CpuRecord {
  format: typeof CPU_RECORD_FORMAT;
  version: number;
  gpr: Record<Gpr, bigint>;
  rip: bigint;
  rflags: bigint;
  segments: Record<SegmentName, Segment>;
  cr0: bigint;
  cr2: bigint;
  cr3: bigint;
  cr4: bigint;
  cr8: bigint;
  efer: bigint;
  gdtr: DescriptorTable;
  idtr: DescriptorTable;
  dr: Record<DebugRegister, bigint>;
  msr: Record<MsrName, bigint>;
  interruptibility: { sti: boolean; movSs: boolean };
  pendingEvent: PendingEvent;
  halted: boolean;
}

const RECORD_KEYS = [
  "format", "version", "gpr", "rip", "rflags", "segments", "cr0", "cr2", "cr3", "cr4", "cr8", "efer",
  "gdtr", "idtr", "dr", "msr", "interruptibility", "pendingEvent", "halted",
] as const;
const CPUS_RECORD_KEYS = ["format", "version", "cpus"] as const;
const SEGMENT_KEYS = ["selector", "base", "limit", "attributes"] as const;
const TABLE_KEYS = ["base", "limit"] as const;
const BLOCKING_KEYS = ["sti", "movSs"] as const;
const EVENT_KEYS = ["valid", "type", "vector", "hasErrorCode", "errorCode"] as const;

function pendingEvent(v: unknown): PendingEvent {
  const path = "cpu.pendingEvent";
  const e = group(v, path, EVENT_KEYS);
  if (typeof e.type !== "string" || !Object.hasOwn(EVENT_TYPES, e.type)) {
    fail(`${path}.type`, `expected one of ${Object.keys(EVENT_TYPES).join(", ")}, got ${show(e.type)}`);
  }
  const event: PendingEvent = {
    valid: bool(e.valid, `${path}.valid`),
    type: e.type as EventType,
    vector: uint(e.vector, `${path}.vector`, 0xff),
    hasErrorCode: bool(e.hasErrorCode, `${path}.hasErrorCode`),
    errorCode: uint(e.errorCode, `${path}.errorCode`, U32_MAX),
  };
  if (!event.valid) return event;
  if (event.type === "nmi" && event.vector !== 2) fail(`${path}.vector`, "an NMI has vector 2");
  if (event.type === "hardware-exception" && event.vector > 31) fail(`${path}.vector`, "a hardware exception has a vector below 32");
  if (event.hasErrorCode && !(event.type === "hardware-exception" && ERROR_CODE_VECTORS.has(event.vector))) {
    fail(`${path}.hasErrorCode`, `vector ${event.vector} of type ${event.type} delivers no error code`);
  }
  return event;
}

// ---- field readers: each checks one value and names it on failure ---------------------------

function fail(path: string, message: string): never {
  throw new CpuStateError(`${path}: ${message}`);
}

function show(v: unknown): string {
  return typeof v === "bigint" ? `${v}n` : typeof v === "string" ? JSON.stringify(v) : String(v);
}

function hex(v: number | bigint): string {
  return `0x${v.toString(16)}`;
}

/** A plain object with exactly `keys`. */
function group<K extends string>(v: unknown, path: string, keys: readonly K[]): Record<K, unknown> {
  if (typeof v !== "object" || v === null || Array.isArray(v)) fail(path, `expected an object, got ${show(v)}`);
  const o = v as Record<string, unknown>;
  for (const k of keys) if (!Object.hasOwn(o, k)) fail(`${path}.${k}`, "missing");
  for (const k of Object.keys(o)) if (!(keys as readonly string[]).includes(k)) fail(`${path}.${k}`, "unknown field");
  return o as Record<K, unknown>;
}

/** A 64-bit register value: a bigint, or a non-negative safe integer a decoder made a number. */
function u64(v: unknown, path: string): bigint {
  if (typeof v === "number" && Number.isSafeInteger(v) && v >= 0) return BigInt(v);
  if (typeof v === "bigint" && v >= 0n && v <= U64_MAX) return v;
  return fail(path, `expected an unsigned 64-bit integer, got ${show(v)}`);
}

/** A 64-bit value whose bits outside `allowed` are reserved (must be 0). */
function bits(v: unknown, path: string, allowed: bigint): bigint {
  const x = u64(v, path);
  if (x & ~allowed) fail(path, `reserved bits set in ${hex(x)} (allowed mask ${hex(allowed)})`);
  return x;
}

/** A linear address whose bits above `width - 1` all equal bit `width - 1`. */
function canonicalAddress(v: unknown, path: string, width: bigint): bigint {
  const x = u64(v, path);
  const high = x >> (width - 1n);
  if (high !== 0n && high !== (1n << (65n - width)) - 1n) fail(path, `${hex(x)} is not a canonical ${width}-bit address`);
  return x;
}

function uint(v: unknown, path: string, max: number): number {
  const x = typeof v === "bigint" && v >= 0n && v <= BigInt(max) ? Number(v) : v;
  if (typeof x !== "number" || !Number.isInteger(x) || x < 0 || x > max) fail(path, `expected an integer 0..${hex(max)}, got ${show(v)}`);
  return x;
}

function bool(v: unknown, path: string): boolean {
  if (typeof v !== "boolean") fail(path, `expected true or false, got ${show(v)}`);
  return v;
}
