// Streaming reader for blmv-trace files. It reads the input chunk by chunk (never the whole
// file), decompresses gzip when the data starts with the gzip magic bytes (whatever the name),
// and hands out events in batches, one batch per input chunk, so that a consumer pays one
// await per chunk rather than per event.
//
//   const trace = await openTrace("boot.trace.gz");
//   trace.header.machine.lapic;
//   for await (const e of trace) { ... }            // or: for await (const batch of trace.batches())

import { createReadStream } from "node:fs";
import { isUtf8 } from "node:buffer";
import { Readable, pipeline } from "node:stream";
import { createGunzip } from "node:zlib";
import type { TraceEvent, TraceHeader } from "./event.js";
import { TraceError, TraceParser } from "./parse.js";

export { TraceError } from "./parse.js";

/** No valid line comes near this; a longer one means the input is not a trace. */
export const MAX_LINE_BYTES = 1 << 20;
const CHUNK_BYTES = 1 << 20;
const NEWLINE = 0x0a;

export interface OpenTraceOptions {
  /** Name used in error messages when reading from a stream (default "<stream>"). */
  name?: string;
}

export class TraceReader implements AsyncIterable<TraceEvent> {
  private consumed = false;

  private constructor(
    /** The name errors report. */
    readonly file: string,
    readonly header: TraceHeader,
    private readonly first: TraceEvent[],
    private readonly rest: AsyncGenerator<TraceEvent[]>,
  ) {}

  /** Opens a trace and reads its header (up to the first event). Throws TraceError. */
  static async open(source: string | Readable, options: OpenTraceOptions = {}): Promise<TraceReader> {
    const file = typeof source === "string" ? source : (options.name ?? "<stream>");
    const stream = typeof source === "string" ? createReadStream(source, { highWaterMark: CHUNK_BYTES }) : source;
    const parser = new TraceParser(file);
    const batches = parseBatches(parser, stream);
    // The first batch is yielded only once the header is complete (first event or end of input).
    const first = await batches.next();
    return new TraceReader(file, parser.header, first.done ? [] : first.value, batches);
  }

  /** The events in batches of one input chunk each. The reader can be iterated only once. */
  async *batches(): AsyncGenerator<TraceEvent[]> {
    if (this.consumed) throw new Error(`${this.file}: trace already read`);
    this.consumed = true;
    if (this.first.length > 0) yield this.first;
    yield* this.rest;
  }

  /** Stops reading early and releases the input (not needed after a complete iteration). */
  async close(): Promise<void> {
    this.consumed = true;
    await this.rest.return(undefined);
  }

  async *[Symbol.asyncIterator](): AsyncGenerator<TraceEvent> {
    for await (const batch of this.batches()) yield* batch;
  }
}

/** Opens a trace file (a path) or stream; see TraceReader. */
export function openTrace(source: string | Readable, options?: OpenTraceOptions): Promise<TraceReader> {
  return TraceReader.open(source, options);
}

/** Header and all events of a small trace, as an array (tests and tools; not for big files). */
export async function readTraceFile(source: string | Readable, options?: OpenTraceOptions): Promise<{ header: TraceHeader; events: TraceEvent[] }> {
  const reader = await openTrace(source, options);
  const events: TraceEvent[] = [];
  for await (const batch of reader.batches()) for (const e of batch) events.push(e);
  return { header: reader.header, events };
}

/** Parses the input, yielding each chunk's events once the header is complete. */
async function* parseBatches(parser: TraceParser, input: Readable): AsyncGenerator<TraceEvent[]> {
  let line = 0;
  let partial: Buffer | null = null;
  let batch: TraceEvent[] = [];
  /** Parses the complete lines in bytes[0, end), `end` just after a newline or at the input's end. */
  const parseLines = (bytes: Buffer, end: number): void => {
    if (!isUtf8(bytes.subarray(0, end))) throw new TraceError(parser.file, line + firstBadLine(bytes, end), "not UTF-8 text");
    const text = bytes.toString("utf8", 0, end);
    for (let start = 0; start < text.length; ) {
      let nl = text.indexOf("\n", start);
      if (nl < 0) nl = text.length;
      const stop = nl > start && text.charCodeAt(nl - 1) === 0x0d ? nl - 1 : nl;
      const e = parser.parseLine(text.slice(start, stop), ++line);
      if (e !== null) batch.push(e);
      start = nl + 1;
    }
  };
  try {
    for await (const chunk of decompressed(input)) {
      const bytes: Buffer = partial === null ? chunk : Buffer.concat([partial, chunk]);
      const end = bytes.lastIndexOf(NEWLINE) + 1;
      parseLines(bytes, end);
      partial = end < bytes.length ? bytes.subarray(end) : null;
      if (partial !== null && partial.length > MAX_LINE_BYTES) {
        throw new TraceError(parser.file, line + 1, `line longer than ${MAX_LINE_BYTES} bytes`);
      }
      if (parser.inEvents && batch.length > 0) {
        yield batch;
        batch = [];
      }
    }
  } catch (e) {
    if (isZlibError(e)) throw new TraceError(parser.file, line + 1, `corrupt or truncated gzip data (${(e as Error).message})`);
    throw e;
  }
  if (partial !== null) parseLines(partial, partial.length);
  parser.finish(line);
  yield batch;
}

/** 1-based number, within bytes[0, end), of the first line that is not valid UTF-8. */
function firstBadLine(bytes: Buffer, end: number): number {
  let n = 1;
  for (let start = 0; start < end; n++) {
    let nl = bytes.indexOf(NEWLINE, start);
    if (nl < 0 || nl >= end) nl = end;
    if (!isUtf8(bytes.subarray(start, nl))) return n;
    start = nl + 1;
  }
  return n;
}

/** The bytes of `input`, gunzipped if they start with the gzip magic 1f 8b. */
async function* decompressed(input: Readable): AsyncGenerator<Buffer> {
  const chunks = input[Symbol.asyncIterator]() as AsyncIterator<Buffer | string>;
  try {
    let head = Buffer.alloc(0);
    // Gather at least the two magic bytes (or the whole input, if shorter).
    while (head.length < 2) {
      const next = await chunks.next();
      if (next.done) break;
      head = Buffer.concat([head, asBuffer(next.value)]);
    }
    const all = async function* (): AsyncGenerator<Buffer> {
      if (head.length > 0) yield head;
      for (let next = await chunks.next(); !next.done; next = await chunks.next()) yield asBuffer(next.value);
    };
    if (head.length < 2 || head[0] !== 0x1f || head[1] !== 0x8b) {
      yield* all();
      return;
    }
    // pipeline() forwards an error of either stream to the gunzip output we iterate.
    const output = pipeline(Readable.from(all(), { objectMode: false }), createGunzip({ chunkSize: CHUNK_BYTES }), () => {});
    for await (const chunk of output) yield chunk as Buffer;
  } finally {
    // Closes the input when the reader stops early.
    await chunks.return?.();
  }
}

function asBuffer(chunk: Buffer | string): Buffer {
  return typeof chunk === "string" ? Buffer.from(chunk, "utf8") : chunk;
}

function isZlibError(e: unknown): boolean {
  const code = (e as { code?: unknown } | null)?.code;
  return typeof code === "string" && code.startsWith("Z_");
}
