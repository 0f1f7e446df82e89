// The line grammar of a QEMU 7.2 log recorded with `-trace` (log backend), `-d int` and the
// `iotime` instruction-count plugin: one small parser per line kind. A line that matches no
// grammar is `unknown`, never an error; the importer counts it.

/** A guest (or, with cpu -1, machine-setup) access that reached a device's memory region. */
export interface RegionAccess {
  kind: "access";
  write: boolean;
  /** -1 when QEMU itself made the access outside any vCPU. */
  cpu: number;
  /** Absolute port or physical address. */
  addr: number;
  /** Value written or returned, cut to `size` bytes (at most 32 bits). */
  value: number;
  size: number;
  region: string;
}

/** The plugin's instruction count at a port instruction, MMIO access or HLT. */
export interface InstructionTime {
  kind: "iotime";
  icount: number;
  cpu: number;
  insn: "pio-insn" | "mmio-r" | "mmio-w" | "hlt";
  /** Physical address of an MMIO access; 0 otherwise. */
  pa: number;
}

/** A board-level interrupt line (GSI) changed level or was re-driven. */
export interface GsiLevel {
  kind: "gsi";
  gsi: number;
  level: 0 | 1;
}

/** The CPU accepted a hardware interrupt; vector -1 when QEMU found none to take. */
export interface InterruptTaken {
  kind: "interrupt";
  vector: number;
}

/** A local APIC delivered one of its LVT sources (0 = timer, 3 = LINT0, …). */
export interface LocalDelivery {
  kind: "lvt";
  lvt: number;
}

/** IA32_APIC_BASE was read or written (64-bit value split in halves). */
export interface ApicBaseAccess {
  kind: "apic-base";
  write: boolean;
  lo: number;
  hi: number;
}

/** The CPU raised an exception (`-d int` check_exception). */
export interface CpuException {
  kind: "exception";
  vector: number;
}

/**
 * The CPU entered an interrupt or exception handler in protected mode (`-d int` header
 * `N: v=0e e=0014 i=0 …`): the vector, its error code and whether an INT instruction raised it.
 */
export interface HandlerEntry {
  kind: "handler-entry";
  vector: number;
  errorCode: number;
  software: boolean;
}

/** A message delivered into the local APICs (I/O APIC message or MSI), as QEMU decoded it. */
export interface ApicMessage {
  kind: "apic-message";
  dest: number;
  /** Logical (dest_mode 1) or physical destination. */
  logical: boolean;
  deliveryMode: number;
  vector: number;
}

/** A trace point of a modelled device that only restates or follows from another line. */
export interface DeviceDetail {
  kind: "detail";
  event: string;
}

/** Part of a `-d int` CPU state dump. */
export interface CpuDump {
  kind: "cpu-dump";
}

export interface BlankLine {
  kind: "blank";
}

export interface UnknownLine {
  kind: "unknown";
}

export type LogLine =
  | RegionAccess
  | InstructionTime
  | GsiLevel
  | InterruptTaken
  | LocalDelivery
  | ApicBaseAccess
  | CpuException
  | HandlerEntry
  | ApicMessage
  | DeviceDetail
  | CpuDump
  | BlankLine
  | UnknownLine;

const UNKNOWN: UnknownLine = { kind: "unknown" };
const BLANK: BlankLine = { kind: "blank" };
const CPU_DUMP: CpuDump = { kind: "cpu-dump" };

const ACCESS = /^memory_region_ops_(read|write) cpu (-?\d+) mr 0x[0-9a-f]+ addr 0x([0-9a-f]+) value 0x([0-9a-f]+) size (\d+) name '([^']*)'$/;
const IOTIME = /^iotime: icount=(\d+) cpu=(-?\d+) pc=0x[0-9a-f]+ (pio-insn|mmio-r|mmio-w|hlt)(?: pa=0x([0-9a-f]+) size=\d+)?$/;
const GSI = /^x86_gsi_interrupt GSI interrupt #(\d+) level:([01])$/;
const SERVICING = /^Servicing hardware INT=0x([0-9a-f]+)$/;
const LOCAL_DELIVER = /^apic_local_deliver vector (\d+) delivery mode \d+$/;
const DELIVER_IRQ = /^apic_deliver_irq dest (\d+) dest_mode (\d+) delivery_mode (\d+) vector (\d+) trigger_mode \d+$/;
const APIC_BASE = /^cpu_(get|set)_apic_base 0x([0-9a-f]{1,16})$/;
const EXCEPTION = /^check_exception old: 0x[0-9a-f]+ new 0x([0-9a-f]+)$/;
/** `-d int` interrupt header (`  5: v=30 e=0000 i=0 …`). */
const INT_HEADER = /^\s*\d+: v=([0-9a-f]+) e=([0-9a-f]+) i=([01]) /;
/** `-d int` register dump lines (`RAX=…`, `R8 =…`, `CS =0010 …`, `SMM: enter`, …). */
const REGISTER_DUMP = /^(?:[A-Z][A-Z0-9]{0,5} *=|SMM: |XMM|YMM|ZMM|FPR|FCW|MXCSR|PDPTR|Opmask)/;
/** Trace points of the modelled devices (and their fan-out) that add nothing to the access lines. */
const DETAIL = /^(pic_[a-z_]+|ioapic_[a-z_]+|apic_[a-z_]+|x86_pic_interrupt) /;

function hexU32(digits: string): number {
  return parseInt(digits.length > 8 ? digits.slice(-8) : digits, 16);
}

export function parseAccess(line: string): RegionAccess | UnknownLine {
  const m = ACCESS.exec(line);
  if (m === null) return UNKNOWN;
  const size = Number(m[5]);
  const value = hexU32(m[4]!);
  return {
    kind: "access",
    write: m[1] === "write",
    cpu: Number(m[2]),
    addr: hexU32(m[3]!),
    // QEMU traces the device's return value before cutting it to the access size.
    value: size >= 4 ? value : value & ((1 << (8 * size)) - 1),
    size,
    region: m[6]!,
  };
}

export function parseInstructionTime(line: string): InstructionTime | UnknownLine {
  const m = IOTIME.exec(line);
  if (m === null) return UNKNOWN;
  return {
    kind: "iotime",
    icount: Number(m[1]),
    cpu: Number(m[2]),
    insn: m[3] as InstructionTime["insn"],
    pa: m[4] === undefined ? 0 : hexU32(m[4]),
  };
}

export function parseGsi(line: string): GsiLevel | UnknownLine {
  const m = GSI.exec(line);
  return m === null ? UNKNOWN : { kind: "gsi", gsi: Number(m[1]), level: m[2] === "1" ? 1 : 0 };
}

export function parseInterruptTaken(line: string): InterruptTaken | UnknownLine {
  const m = SERVICING.exec(line);
  if (m === null) return UNKNOWN;
  const vector = parseInt(m[1]!, 16);
  return { kind: "interrupt", vector: vector > 0xff ? -1 : vector };
}

export function parseLocalDelivery(line: string): LocalDelivery | UnknownLine {
  const m = LOCAL_DELIVER.exec(line);
  return m === null ? UNKNOWN : { kind: "lvt", lvt: Number(m[1]) };
}

export function parseApicMessage(line: string): ApicMessage | UnknownLine {
  const m = DELIVER_IRQ.exec(line);
  if (m === null) return UNKNOWN;
  return { kind: "apic-message", dest: Number(m[1]), logical: m[2] === "1", deliveryMode: Number(m[3]), vector: Number(m[4]) };
}

export function parseApicBase(line: string): ApicBaseAccess | UnknownLine {
  const m = APIC_BASE.exec(line);
  if (m === null) return UNKNOWN;
  const digits = m[2]!.padStart(16, "0");
  return { kind: "apic-base", write: m[1] === "set", lo: parseInt(digits.slice(8), 16), hi: parseInt(digits.slice(0, 8), 16) };
}

export function parseException(line: string): CpuException | UnknownLine {
  const m = EXCEPTION.exec(line);
  return m === null ? UNKNOWN : { kind: "exception", vector: hexU32(m[1]!) };
}

export function parseHandlerEntry(line: string): HandlerEntry | UnknownLine {
  const m = INT_HEADER.exec(line);
  if (m === null) return UNKNOWN;
  return { kind: "handler-entry", vector: parseInt(m[1]!, 16), errorCode: hexU32(m[2]!), software: m[3] === "1" };
}

/** Classifies one log line (without its newline). */
export function parseLogLine(line: string): LogLine {
  if (line.length === 0 || line.trim().length === 0) return BLANK;
  const space = line.indexOf(" ");
  const first = space < 0 ? line : line.slice(0, space);
  switch (first) {
    case "memory_region_ops_read":
    case "memory_region_ops_write":
      return parseAccess(line);
    case "iotime:":
      return parseInstructionTime(line);
    case "x86_gsi_interrupt":
      return parseGsi(line);
    case "Servicing":
      return parseInterruptTaken(line);
    case "apic_local_deliver":
      return parseLocalDelivery(line);
    case "cpu_get_apic_base":
    case "cpu_set_apic_base":
      return parseApicBase(line);
    case "check_exception":
      return parseException(line);
    case "apic_deliver_irq":
      return parseApicMessage(line);
  }
  const detail = DETAIL.exec(line);
  if (detail !== null) return { kind: "detail", event: detail[1]! };
  const entry = parseHandlerEntry(line);
  if (entry.kind === "handler-entry") return entry;
  if (REGISTER_DUMP.test(line)) return CPU_DUMP;
  return UNKNOWN;
}
