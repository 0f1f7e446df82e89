// The compiled trace (.btrace): the same header and events as a blmv-trace text file, as
// fixed-size little-endian records that the core can replay straight from wasm memory.
//
// File layout (all integers little-endian):
//
//   offset  size  header
//        0     8  magic "BLMVBTRC"
//        8     4  u32 format version (BTRACE_VERSION = 1)
//       12     4  u32 record size (RECORD_SIZE = 40)
//       16     4  u32 header flags (HeaderFlag: which devices, pit-irq0 wire, compat qemu, source;
//                    bits 8..13: the number of CPUs minus 1, so files without them have one)
//       20     4  u32 offset of the first record (multiple of 8)
//       24     8  u64 apic-bus-hz
//       32     8  u64 tsc-hz
//       40     8  u64 number of records
//       48     8  u64 offset of the label table (just after the last record)
//       56     4  u32 number of labels
//       60     4  u32 byte length of the !source text (0 when absent)
//       64     n  the !source text, UTF-8, zero-padded to the first record
//
//   then the records, RECORD_SIZE bytes each, in trace order:
//
//   offset  size  record
//        0     1  u8  op (Op: the same codes as event.ts)
//        1     1  u8  check (Check: 0 none, 1 value, 2 `= none` (inta, sipi), 3 `inta = nmi`)
//        2     2  u16 reserved, 0
//        4     4  u32 source line (1-based; 0 if the event did not come from text)
//        8     4  u32 a: port, address, MSR, ISA line, pin, CPU; for mark, the label's index
//       12     4  u32 b: value written (wrmsr: bits 31..0), or level
//       16     4  u32 high word: wrmsr value bits 63..32, or rdmsr expected value bits 63..32
//       20     4  u32 expected value (rdmsr: bits 31..0)
//       24     4  u32 expected mask (rdmsr: bits 31..0); the op's full width when the trace has no /M
//       28     4  u32 rdmsr expected mask bits 63..32
//       32     8  u64 time in ns since reset (absolute, non-decreasing, below 2^53)
//
//   then the label table: for each label, u32 byte length and the UTF-8 bytes (no padding).
//
// An expectation compares (result & mask) with (value & mask). Unused fields are 0.

import { MAX_CLOCK_HZ, Machine } from "../core/machine.js";
import type { CoreExports } from "../core/core.js";
import { open, type FileHandle } from "node:fs/promises";
import { RECORD_RULE_ROWS, RecordField, RecordRule, RuleFlag } from "../../assembly/abi/codes.js";
import { Check, Op, valueWidthMask, type TraceEvent, type TraceHeader } from "./event.js";
import { LAST_OP, OPERANDS, eventProblem, labelProblem, sourceProblem, type OperandScope } from "./operands.js";
import { TraceError } from "./parse.js";
import { MAX_LINE_BYTES, openTrace } from "./reader.js";

export const BTRACE_MAGIC = "BLMVBTRC";
export const BTRACE_VERSION = 1;
export const HEADER_SIZE = 64;
/** Bytes per record. */
export const RECORD_SIZE: number = RecordField.Size;

/** Byte offsets of the header fields. */
export const HeaderField = {
  Magic: 0,
  Version: 8,
  RecordSize: 12,
  Flags: 16,
  RecordsOffset: 20,
  ApicBusHz: 24,
  TscHz: 32,
  RecordCount: 40,
  LabelsOffset: 48,
  LabelCount: 56,
  SourceLength: 60,
} as const;

/** Bits of the header flags word. */
export const HeaderFlag = {
  Pic: 1 << 0,
  Pit: 1 << 1,
  Lapic: 1 << 2,
  Ioapic: 1 << 3,
  PitIrq0: 1 << 4,
  CompatQemu: 1 << 5,
  HasSource: 1 << 6,
} as const;
/** Where the header flags hold the number of CPUs minus 1 (6 bits: 1..64 CPUs). */
const CPUS_SHIFT = 8;
const CPUS_FIELD = 0x3f;

const TWO_32 = 0x1_0000_0000;
const DEFAULT_CHUNK_RECORDS = 65536;
/** Flag bits this reader knows (the flags and the CPU count); any other bit set is an error. */
const KNOWN_FLAGS = Object.values(HeaderFlag).reduce((all, bit) => all | bit, 0) | (CPUS_FIELD << CPUS_SHIFT);
/** Bytes the label table is read in at a time. */
const LABEL_READ_BYTES = 1 << 20;
const utf8 = new TextDecoder("utf-8", { fatal: true });

/** Writes event `e` as the record at `offset`; `labelIndex` is used for mark. */
export function encodeRecord(view: DataView, offset: number, e: TraceEvent, labelIndex: number): void {
  view.setUint8(offset + RecordField.Op, e.op);
  view.setUint8(offset + RecordField.Check, e.check);
  view.setUint16(offset + RecordField.Reserved, 0, true);
  view.setUint32(offset + RecordField.Line, e.line, true);
  view.setUint32(offset + RecordField.A, e.op === Op.Mark ? labelIndex : e.a, true);
  view.setUint32(offset + RecordField.B, e.b, true);
  view.setUint32(offset + RecordField.High, e.op === Op.Wrmsr ? e.bHi : e.valueHi, true);
  view.setUint32(offset + RecordField.Value, e.value, true);
  view.setUint32(offset + RecordField.Mask, e.mask, true);
  view.setUint32(offset + RecordField.MaskHigh, e.maskHi, true);
  view.setUint32(offset + RecordField.Time, e.time % TWO_32, true);
  view.setUint32(offset + RecordField.Time + 4, Math.floor(e.time / TWO_32), true);
}

/** The event held by the record at `offset`. */
export function decodeRecord(view: DataView, offset: number, labels: readonly string[]): TraceEvent {
  const op = view.getUint8(offset + RecordField.Op) as Op;
  const high = view.getUint32(offset + RecordField.High, true);
  const a = view.getUint32(offset + RecordField.A, true);
  return {
    time: readTime(view, offset),
    op,
    a: op === Op.Mark ? 0 : a,
    b: view.getUint32(offset + RecordField.B, true),
    bHi: op === Op.Wrmsr ? high : 0,
    check: view.getUint8(offset + RecordField.Check) as Check,
    value: view.getUint32(offset + RecordField.Value, true),
    mask: view.getUint32(offset + RecordField.Mask, true),
    valueHi: op === Op.Wrmsr ? 0 : high,
    maskHi: view.getUint32(offset + RecordField.MaskHigh, true),
    label: op === Op.Mark ? labels[a] : "",
    line: view.getUint32(offset + RecordField.Line, true),
  };
}

function readTime(view: DataView, offset: number): number {
  return view.getUint32(offset + RecordField.Time, true) + view.getUint32(offset + RecordField.Time + 4, true) * TWO_32;
}

/** Compiles a text trace into a .btrace file, streaming. Throws TraceError on a bad trace. */
export async function compileTrace(inPath: string, outPath: string): Promise<{ records: number; labels: number }> {
  const trace = await openTrace(inPath);
  const writer = await CompiledTraceWriter.create(outPath, trace.header);
  try {
    for await (const batch of trace.batches()) await writer.append(batch);
    return await writer.finish();
  } finally {
    await writer.close();
  }
}

/** Writes a .btrace file batch by batch: header space first, the header itself at the end. */
export class CompiledTraceWriter {
  private readonly labels = new Map<string, number>();
  private records = 0;
  private position: number;

  private constructor(
    private readonly out: FileHandle,
    private readonly header: TraceHeader,
    private readonly head: Buffer,
    private readonly sourceLength: number,
  ) {
    this.position = head.length;
  }

  static async create(path: string, header: TraceHeader): Promise<CompiledTraceWriter> {
    const out = await open(path, "w");
    const source = header.source === undefined ? Buffer.alloc(0) : Buffer.from(header.source, "utf8");
    const head = Buffer.alloc(align8(HEADER_SIZE + source.length));
    source.copy(head, HEADER_SIZE);
    await out.write(head, 0, head.length, 0);
    return new CompiledTraceWriter(out, header, head, source.length);
  }

  /** Appends the events of `batch` as records. */
  async append(batch: readonly TraceEvent[]): Promise<void> {
    const bytes = Buffer.alloc(batch.length * RECORD_SIZE);
    const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.length);
    for (let i = 0; i < batch.length; i++) {
      const e = batch[i];
      let labelIndex = 0;
      if (e.op === Op.Mark) {
        labelIndex = this.labels.get(e.label) ?? this.labels.size;
        this.labels.set(e.label, labelIndex);
      }
      encodeRecord(view, i * RECORD_SIZE, e, labelIndex);
    }
    await this.out.write(bytes, 0, bytes.length, this.position);
    this.position += bytes.length;
    this.records += batch.length;
  }

  /** Writes the label table and the header. */
  async finish(): Promise<{ records: number; labels: number }> {
    const labelTable = Buffer.concat([...this.labels.keys()].flatMap((label) => {
      const text = Buffer.from(label, "utf8");
      const length = Buffer.alloc(4);
      length.writeUInt32LE(text.length);
      return [length, text];
    }));
    await this.out.write(labelTable, 0, labelTable.length, this.position);
    writeHeader(this.head, this.header, this.sourceLength, this.head.length, this.records, this.position, this.labels.size);
    await this.out.write(this.head, 0, HEADER_SIZE, 0);
    return { records: this.records, labels: this.labels.size };
  }

  async close(): Promise<void> {
    await this.out.close();
  }
}

/** `n` rounded up to a multiple of 8; exact for every size a file can have (no 32-bit wrap). */
function align8(n: number): number {
  return Math.ceil(n / 8) * 8;
}

function writeHeader(head: Buffer, h: TraceHeader, sourceLength: number, recordsOffset: number, records: number, labelsOffset: number, labelCount: number): void {
  const m = h.machine;
  const flags =
    (m.pic ? HeaderFlag.Pic : 0) |
    (m.pit ? HeaderFlag.Pit : 0) |
    (m.lapic ? HeaderFlag.Lapic : 0) |
    (m.ioapic ? HeaderFlag.Ioapic : 0) |
    (h.pitIrq0 ? HeaderFlag.PitIrq0 : 0) |
    (h.compatQemu ? HeaderFlag.CompatQemu : 0) |
    (h.source !== undefined ? HeaderFlag.HasSource : 0) |
    ((h.cpus - 1) << CPUS_SHIFT);
  head.write(BTRACE_MAGIC, HeaderField.Magic, "latin1");
  head.writeUInt32LE(BTRACE_VERSION, HeaderField.Version);
  head.writeUInt32LE(RECORD_SIZE, HeaderField.RecordSize);
  head.writeUInt32LE(flags, HeaderField.Flags);
  head.writeUInt32LE(recordsOffset, HeaderField.RecordsOffset);
  head.writeBigUInt64LE(BigInt(h.apicBusHz), HeaderField.ApicBusHz);
  head.writeBigUInt64LE(BigInt(h.tscHz), HeaderField.TscHz);
  head.writeBigUInt64LE(BigInt(records), HeaderField.RecordCount);
  head.writeBigUInt64LE(BigInt(labelsOffset), HeaderField.LabelsOffset);
  head.writeUInt32LE(labelCount, HeaderField.LabelCount);
  head.writeUInt32LE(sourceLength, HeaderField.SourceLength);
}

export interface CompiledTrace {
  file: string;
  header: TraceHeader;
  /** Label table: a mark record's `a` indexes it. */
  labels: string[];
  recordCount: number;
  /**
   * Reads the next records, at most a chunk of them, straight into the memory `place(bytes)`
   * gives (a core's scratch buffer), unchecked: a RecordChecker checks them there. Returns how
   * many it read, 0 at the end (which releases the file).
   */
  readRecords(place: (bytes: number) => Uint8Array): Promise<number>;
  /**
   * The records in chunks of whole records (the last may be shorter), each a fresh buffer the
   * caller may keep, every record checked first (RecordChecker). Read either this or
   * readRecords, once.
   */
  chunks: AsyncIterable<Uint8Array>;
  /** Releases the file early; reading to the end (or an error) releases it too. */
  close(): Promise<void>;
}

/** Opens a .btrace file, checks and reads its header and label table. Throws TraceError. */
export async function readCompiledChunks(path: string, recordsPerChunk: number = DEFAULT_CHUNK_RECORDS): Promise<CompiledTrace> {
  const file = await open(path, "r");
  try {
    const size = (await file.stat()).size;
    const fail = (what: string): never => {
      throw new TraceError(path, 0, `not a valid compiled trace: ${what}`);
    };
    if (size < HEADER_SIZE) fail("shorter than its header");
    const head = await readAt(file, 0, HEADER_SIZE);
    if (head.toString("latin1", 0, 8) !== BTRACE_MAGIC) fail("wrong magic");
    if (head.readUInt32LE(HeaderField.Version) !== BTRACE_VERSION) fail(`unsupported version ${head.readUInt32LE(HeaderField.Version)}`);
    if (head.readUInt32LE(HeaderField.RecordSize) !== RECORD_SIZE) fail("wrong record size");
    const flags = head.readUInt32LE(HeaderField.Flags);
    const recordsOffset = head.readUInt32LE(HeaderField.RecordsOffset);
    const sourceLength = head.readUInt32LE(HeaderField.SourceLength);
    const recordCount = Number(head.readBigUInt64LE(HeaderField.RecordCount));
    const labelsOffset = Number(head.readBigUInt64LE(HeaderField.LabelsOffset));
    const labelCount = head.readUInt32LE(HeaderField.LabelCount);
    const apicBusHz = Number(head.readBigUInt64LE(HeaderField.ApicBusHz));
    const tscHz = Number(head.readBigUInt64LE(HeaderField.TscHz));
    if (sourceLength > MAX_LINE_BYTES) fail(`source text of ${sourceLength} bytes (longer than a trace line may be)`);
    if (recordsOffset !== align8(HEADER_SIZE + sourceLength) || recordsOffset > size) fail("bad record offset");
    if (labelsOffset !== recordsOffset + recordCount * RECORD_SIZE || labelsOffset > size) fail("record count does not match the file");
    if (apicBusHz < 1 || apicBusHz > MAX_CLOCK_HZ || tscHz < 1 || tscHz > MAX_CLOCK_HZ) fail("bad clock rate");
    if ((flags & ~KNOWN_FLAGS) !== 0) fail(`unknown header flags 0x${(flags & ~KNOWN_FLAGS).toString(16)}`);
    const hasSource = (flags & HeaderFlag.HasSource) !== 0;
    if (!hasSource && sourceLength !== 0) fail("source text without its flag");
    const cpus = ((flags >>> CPUS_SHIFT) & CPUS_FIELD) + 1;
    if (cpus > 1 && (flags & HeaderFlag.Lapic) === 0) fail(`${cpus} CPUs without local APICs`);

    const header: TraceHeader = {
      machine: {
        pic: (flags & HeaderFlag.Pic) !== 0,
        pit: (flags & HeaderFlag.Pit) !== 0,
        lapic: (flags & HeaderFlag.Lapic) !== 0,
        ioapic: (flags & HeaderFlag.Ioapic) !== 0,
      },
      apicBusHz,
      tscHz,
      pitIrq0: (flags & HeaderFlag.PitIrq0) !== 0,
      compatQemu: (flags & HeaderFlag.CompatQemu) !== 0,
      cpus,
    };
    const sourceBytes = await readAt(file, HEADER_SIZE, recordsOffset - HEADER_SIZE);
    if (sourceBytes.subarray(sourceLength).some((b) => b !== 0)) fail("non-zero padding after the source text");
    if (hasSource) {
      const source = text(sourceBytes.subarray(0, sourceLength), "source text", fail);
      const problem = sourceProblem(source);
      if (problem !== null) fail(problem);
      header.source = source;
    }
    const labels = await readLabels(file, labelsOffset, size, labelCount, fail);

    let open = true;
    const release = async (): Promise<void> => {
      if (open) await file.close();
      open = false;
    };
    const perChunk = Math.max(1, Math.floor(recordsPerChunk));
    let next = 0;
    const readRecords = async (place: (bytes: number) => Uint8Array): Promise<number> => {
      const n = Math.min(perChunk, recordCount - next);
      if (n <= 0 || !open) {
        await release();
        return 0;
      }
      try {
        const bytes = n * RECORD_SIZE;
        if ((await readFully(file, place(bytes), recordsOffset + next * RECORD_SIZE)) !== bytes) throw new TraceError(path, 0, "records cut short");
      } catch (e) {
        await release();
        throw e;
      }
      next += n;
      return n;
    };
    const trace: CompiledTrace = {
      file: path,
      header,
      labels,
      recordCount,
      readRecords,
      chunks: { [Symbol.asyncIterator]: () => checkedChunks(trace) },
      close: release,
    };
    return trace;
  } catch (e) {
    await file.close();
    throw e;
  }
}

function text(bytes: Uint8Array, what: string, fail: (what: string) => never): string {
  try {
    return utf8.decode(bytes);
  } catch {
    return fail(`${what} is not valid UTF-8`);
  }
}

/** The label table from `offset` to the end of the file, read a bounded piece at a time. */
async function readLabels(file: FileHandle, offset: number, size: number, count: number, fail: (what: string) => never): Promise<string[]> {
  const labels: string[] = [];
  let at = offset;
  while (labels.length < count) {
    if (at + 4 > size) fail("label table cut short");
    const length = (await readAt(file, at, 4)).readUInt32LE(0);
    if (length > MAX_LINE_BYTES) fail(`label ${labels.length} of ${length} bytes (longer than a trace line may be)`);
    if (at + 4 + length > size) fail("label table cut short");
    const label = text(await readAt(file, at + 4, length), `label ${labels.length}`, fail);
    const problem = labelProblem(label);
    if (problem !== null) fail(`label ${labels.length}: ${problem}`);
    labels.push(label);
    at += 4 + length;
  }
  if (at !== size) fail("bytes after the label table");
  return labels;
}

async function readAt(file: FileHandle, position: number, length: number): Promise<Buffer> {
  // Every byte is either read from the file or cut off below.
  const bytes = Buffer.allocUnsafe(length);
  const { bytesRead } = await file.read(bytes, 0, length, position);
  return bytes.subarray(0, bytesRead);
}

/** Reads into `into` from `position` until it is full or the file ends; returns the bytes read. */
async function readFully(file: FileHandle, into: Uint8Array, position: number): Promise<number> {
  let done = 0;
  while (done < into.length) {
    const { bytesRead } = await file.read(into, done, into.length - done, position + done);
    if (bytesRead === 0) break;
    done += bytesRead;
  }
  return done;
}

/** Each chunk read into a core, checked there, and handed out as a copy. */
async function* checkedChunks(trace: CompiledTrace): AsyncGenerator<Uint8Array> {
  const machine = Machine.create();
  try {
    const checker = new RecordChecker(trace);
    const core = machine.core;
    let at = 0;
    for (;;) {
      const n = await trace.readRecords((bytes) => {
        at = core.replayScratch(bytes); // may grow the memory: take the buffer after
        return new Uint8Array(core.memory.buffer, at, bytes);
      });
      if (n === 0) return;
      checker.check(core, at, n);
      yield new Uint8Array(core.memory.buffer, at, n * RECORD_SIZE).slice();
    }
  } finally {
    machine.release();
    await trace.close();
  }
}

/** The core's rule table (checkRecords), loaded into each core once. */
const RULES = recordRuleTable();
const rulesLoaded = new WeakSet<CoreExports>();

/**
 * Checks a trace's records where they are replayed, in a core's scratch buffer, chunk after
 * chunk in file order: known op, a check the op allows, label index and CPU in range, unused
 * fields 0, times non-decreasing and below 2^53. The core finds the first bad record; the
 * host says what is wrong with it, naming the file, the record and its source line.
 */
export class RecordChecker {
  private lastTime = 0;
  private checked = 0;
  private readonly scope: OperandScope;

  constructor(private readonly trace: { file: string; labels: readonly string[]; header: Pick<TraceHeader, "cpus"> }) {
    this.scope = { labelCount: trace.labels.length, cpus: trace.header.cpus };
  }

  /** Checks the next `count` records of the file, which sit at `at` in `core`'s scratch buffer. Throws TraceError. */
  check(core: CoreExports, at: number, count: number): void {
    if (!rulesLoaded.has(core)) {
      new Uint32Array(core.memory.buffer, core.recordRules(), RULES.length).set(RULES);
      rulesLoaded.add(core);
    }
    const bad = core.checkRecords(count, this.scope.labelCount, this.scope.cpus, this.lastTime);
    const view = new DataView(core.memory.buffer, at, count * RECORD_SIZE);
    if (bad < count) throw this.refusal(view, bad);
    if (count > 0) this.lastTime = readTime(view, (count - 1) * RECORD_SIZE);
    this.checked += count;
  }

  private refusal(view: DataView, index: number): TraceError {
    const e = makeScratchEvent();
    const lastTime = index > 0 ? readTime(view, (index - 1) * RECORD_SIZE) : this.lastTime;
    const problem = recordProblem(view, index * RECORD_SIZE, e, lastTime, this.scope) ?? "refused by the core's record check, which the host's disagrees with";
    return new TraceError(this.trace.file, e.line, `compiled record ${this.checked + index}: ${problem}`);
  }
}

/** Why the record at `offset` (read into `e`), following one at `lastTime`, is not valid, or null. */
export function recordProblem(view: DataView, offset: number, e: TraceEvent, lastTime: number, scope: OperandScope): string | null {
  readRaw(view, offset, e);
  const reserved = view.getUint16(offset + RecordField.Reserved, true);
  return reserved !== 0 ? `reserved bytes 0x${reserved.toString(16)} are not 0`
    : e.time < lastTime || e.time > Number.MAX_SAFE_INTEGER ? `time ${e.time} out of order`
    : eventProblem(e, scope);
}

/**
 * The rule rows of every op code, worked out from recordProblem itself: each check and each
 * use of the high word is allowed if a probe record using it passes; the operand limits are
 * the operand table's, the expectation's width the op's.
 */
function recordRuleTable(): Uint32Array {
  const rows = new Uint32Array(RECORD_RULE_ROWS * RecordRule.Size);
  const probe = new DataView(new ArrayBuffer(RECORD_SIZE));
  const e = makeScratchEvent();
  const passes = (op: number, check: number, high: number): boolean => {
    new Uint8Array(probe.buffer).fill(0);
    probe.setUint8(RecordField.Op, op);
    probe.setUint8(RecordField.Check, check);
    probe.setUint32(RecordField.High, high, true);
    probe.setUint32(RecordField.MaskHigh, op === Op.Wrmsr ? 0 : high, true);
    return recordProblem(probe, 0, e, 0, { labelCount: 1, cpus: 1 }) === null;
  };
  for (let op = 1; op <= LAST_OP; op++) {
    const row = op * RecordRule.Size;
    let flags = 0;
    for (let check = 0; check < RuleFlag.CheckBits; check++) if (passes(op, check, 0)) flags |= 1 << check;
    if (passes(op, Check.None, 1)) flags |= RuleFlag.HighOperand;
    if (passes(op, Check.Value, 1)) flags |= RuleFlag.HighExpected;
    for (const o of OPERANDS[op]) {
      if (o.field === "a") rows[row + RecordRule.AMax] = o.max;
      else if (o.field === "b") rows[row + RecordRule.BMax] = o.max;
      else if (o.field === "u64") rows[row + RecordRule.BMax] = 0xffff_ffff;
      else flags |= RuleFlag.ALabel;
    }
    if (op === Op.Cpu) flags |= RuleFlag.ACpu;
    rows[row + RecordRule.Width] = valueWidthMask(op);
    rows[row + RecordRule.Flags] = flags;
  }
  return rows;
}

function makeScratchEvent(): TraceEvent {
  return { time: 0, op: Op.Migrate, a: 0, b: 0, bHi: 0, check: Check.None, value: 0, mask: 0, valueHi: 0, maskHi: 0, label: "", line: 0 };
}

/** The record at `offset` into `e` as stored: for mark, `a` is the label's index. */
function readRaw(view: DataView, offset: number, e: TraceEvent): void {
  e.op = view.getUint8(offset + RecordField.Op) as Op;
  e.check = view.getUint8(offset + RecordField.Check) as Check;
  e.line = view.getUint32(offset + RecordField.Line, true);
  e.a = view.getUint32(offset + RecordField.A, true);
  e.b = view.getUint32(offset + RecordField.B, true);
  const high = view.getUint32(offset + RecordField.High, true);
  e.bHi = e.op === Op.Wrmsr ? high : 0;
  e.valueHi = e.op === Op.Wrmsr ? 0 : high;
  e.value = view.getUint32(offset + RecordField.Value, true);
  e.mask = view.getUint32(offset + RecordField.Mask, true);
  e.maskHi = view.getUint32(offset + RecordField.MaskHigh, true);
  e.time = readTime(view, offset);
}
