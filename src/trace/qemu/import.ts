// `blmv import-qemu`: converts a QEMU 7.2 log (trace points, -d int, optional iotime plugin
// lines; plain or gzip) into a blmv-trace, streaming line by line, and reports what it did.

import { createReadStream } from "node:fs";
import { open, rm } from "node:fs/promises";
import { basename } from "node:path";
import { StringDecoder } from "node:string_decoder";
import { createGunzip } from "node:zlib";
import { defaultHeader, type TraceEvent, type TraceHeader } from "../event.js";
import { writeTrace } from "../writer.js";
import { parseLogLine, type LogLine } from "./log.js";
import { MultiCpuLogError, QemuLogConverter } from "./convert.js";
import { MAX_CPUS } from "../../core/machine.js";
import { sum, type ImportSummary } from "./summary.js";

export { MultiCpuLogError } from "./convert.js";
export { ClockConflictError } from "./clock.js";
export { formatImportSummary, type ImportSummary } from "./summary.js";

export interface ImportOptions {
  /**
   * "auto" (default): time from the `iotime:` icount lines when the log has them, otherwise a
   * synthetic clock; "untimed": always the synthetic clock (iotime lines are ignored).
   */
  timing?: "auto" | "untimed";
  /** Text of the `!source` directive; by default it names the input file and the timing. */
  source?: string;
}

/** The input is not a QEMU log at all. */
export class NotQemuLogError extends Error {
  override readonly name = "NotQemuLogError";
}

/** The input is a truncated or corrupt gzip file: nothing is imported from it. */
export class CorruptLogError extends Error {
  override readonly name = "CorruptLogError";
  constructor(input: string, lines: number, why: string) {
    super(`${input}: corrupt or truncated gzip data after ${lines} complete lines (${why}); nothing imported`);
  }
}

/** Lines read before the timing is decided and the input is judged a QEMU log or not. */
const LOOKAHEAD_LINES = 100_000;

interface ParsedLine {
  entry: LogLine;
  text: string;
}

/** The input's lines, decompressed if gzip; a truncated or corrupt gzip throws CorruptLogError. */
async function* readLines(path: string): AsyncGenerator<string> {
  const handle = await open(path, "r");
  const magic = Buffer.alloc(2);
  await handle.read(magic, 0, 2, 0);
  await handle.close();
  const raw = createReadStream(path);
  const isGzip = magic[0] === 0x1f && magic[1] === 0x8b;
  const stream = isGzip ? raw.pipe(createGunzip()) : raw;
  if (isGzip) raw.on("error", (err) => stream.destroy(err));
  const decoder = new StringDecoder("utf8");
  let rest = "";
  let count = 0;
  try {
    for await (const chunk of stream) {
      const text = rest + decoder.write(chunk as Buffer);
      const lines = text.split("\n");
      rest = lines.pop()!;
      for (const line of lines) {
        count++;
        yield line.endsWith("\r") ? line.slice(0, -1) : line;
      }
    }
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code ?? "";
    if (code.startsWith("Z_")) throw new CorruptLogError(path, count, (err as Error).message);
    throw err;
  }
  rest += decoder.end();
  if (rest.length > 0) yield rest;
}

function isQemuLine(entry: LogLine): boolean {
  return entry.kind !== "unknown" && entry.kind !== "blank";
}

/** Reads ahead until the timing is clear: an `iotime` line, or a guest access before any. */
async function lookAhead(lines: AsyncIterator<string>): Promise<{ parsed: ParsedLine[]; timed: boolean; recognised: boolean }> {
  const parsed: ParsedLine[] = [];
  let recognised = false;
  while (parsed.length < LOOKAHEAD_LINES) {
    const next = await lines.next();
    if (next.done) break;
    const entry = parseLogLine(next.value);
    parsed.push({ entry, text: next.value });
    recognised ||= isQemuLine(entry);
    if (entry.kind === "iotime") return { parsed, timed: true, recognised };
    if (entry.kind === "access" && entry.cpu >= 0) return { parsed, timed: false, recognised };
  }
  return { parsed, timed: false, recognised };
}

const VCPU_ACCESS = /^memory_region_ops_(?:read|write) cpu (\d+) /;

/**
 * How many CPUs the log's accesses name: one more than the highest vCPU index (a first pass).
 * An index the board cannot have throws MultiCpuLogError naming its line.
 */
async function countCpus(path: string): Promise<number> {
  let highest = 0;
  let line = 0;
  for await (const text of readLines(path)) {
    line++;
    const m = VCPU_ACCESS.exec(text);
    if (m === null) continue;
    const cpu = Number(m[1]);
    if (cpu >= MAX_CPUS) throw new MultiCpuLogError(line, cpu, `a board has at most ${MAX_CPUS} CPUs`);
    highest = Math.max(highest, cpu);
  }
  return highest + 1;
}

function sourceText(input: string, timed: boolean): string {
  const time = timed ? "time from iotime icount (1 instruction = 1 ns)" : "synthetic time (no iotime lines)";
  return `QEMU 7.2 log ${basename(input)}; ${time}`;
}

/** Header of an imported trace: a PC with all four devices and `cpus` CPUs, QEMU's behaviour, line 0 from the trace. */
function importHeader(source: string, cpus: number): TraceHeader {
  return { ...defaultHeader(), source: source.replace(/[#\r\n]/g, " "), pitIrq0: false, compatQemu: true, cpus };
}

/** Converts the QEMU log `input` into the blmv-trace `output` (gzip when it ends in .gz). */
export async function importQemuLog(input: string, output: string, opts: ImportOptions = {}): Promise<ImportSummary> {
  const lines = readLines(input)[Symbol.asyncIterator]();
  const ahead = await lookAhead(lines);
  if (!ahead.recognised) {
    const why = ahead.parsed.length === 0 ? "it is empty" : `none of its first ${ahead.parsed.length} lines is a QEMU trace, -d int or iotime line`;
    throw new NotQemuLogError(`${input} is not a QEMU log: ${why}`);
  }
  const timed = ahead.timed && opts.timing !== "untimed";
  // A timed log must come from one CPU (the converter refuses a second one, naming its line).
  const cpus = timed ? 1 : await countCpus(input);
  const converter = new QemuLogConverter(timed, cpus);
  let lineCount = 0;
  let eventCount = 0;

  async function* events(): AsyncGenerator<TraceEvent> {
    const feed = (entry: LogLine, text: string) => converter.feed(entry, ++lineCount, text);
    for (const { entry, text } of ahead.parsed) feed(entry, text);
    for (let next = await lines.next(); !next.done; next = await lines.next()) {
      feed(parseLogLine(next.value), next.value);
      const done = converter.take();
      eventCount += done.length;
      yield* done;
    }
    converter.finish();
    const done = converter.take();
    eventCount += done.length;
    yield* done;
  }

  try {
    await writeTrace(output, importHeader(opts.source ?? sourceText(input, timed), cpus), events());
  } catch (err) {
    await rm(output, { force: true });
    throw err;
  }
  const counts = converter.counts;
  return {
    input,
    output,
    timing: timed ? "icount" : "synthetic",
    cpus,
    lines: lineCount,
    events: eventCount,
    ...counts,
    ...converter.clock.counts,
    intas: counts.eventsByOp["inta"] ?? 0,
    otherDeviceLines: sum(counts.otherDevices),
    virtualTimeNs: converter.clock.now,
  };
}
