// Writes a header and events as blmv-trace text (gzip-compressed when the path ends in .gz).
// Every line written is parsed again by the reader's own parser and must give back the event
// it came from, so a written trace always reads back identically; anything else is a
// TraceError naming the output file and line. Times are written absolute, in decimal ns;
// ports, addresses, values and vectors in hex; lines, pins and levels in decimal.

import { createWriteStream } from "node:fs";
import { Readable } from "node:stream";
import { pipeline } from "node:stream/promises";
import { createGzip } from "node:zlib";
import { Check, Op, OP_NAMES, sameEvent, sameHeader, valueWidthMask, type TraceEvent, type TraceHeader } from "./event.js";
import { MAGIC_LINE, TraceError, TraceParser } from "./parse.js";

const BLOCK_CHARS = 1 << 16;

function hex(n: number): string {
  return "0x" + n.toString(16);
}

/** A 64-bit value given as 32-bit halves, in hex. */
function hex64(lo: number, hi: number): string {
  return hi === 0 ? hex(lo) : hex(hi) + lo.toString(16).padStart(8, "0");
}

/** The header lines, magic line first, each ending in a newline. */
export function formatHeader(h: TraceHeader): string {
  const onOff = (b: boolean) => (b ? "on" : "off");
  const m = h.machine;
  let text = `${MAGIC_LINE}\n`;
  if (h.source !== undefined) text += `!source ${h.source}\n`;
  text += `!machine pic=${onOff(m.pic)} pit=${onOff(m.pit)} lapic=${onOff(m.lapic)} ioapic=${onOff(m.ioapic)}\n`;
  text += `!apic-bus-hz ${h.apicBusHz}\n!tsc-hz ${h.tscHz}\n!wire pit-irq0=${onOff(h.pitIrq0)}\n`;
  if (h.compatQemu) text += "!compat qemu\n";
  if (h.cpus !== 1) text += `!cpus ${h.cpus}\n`;
  return text;
}

/** One event as a line (without the newline), with its absolute time. */
export function formatEvent(e: TraceEvent): string {
  let text = `${e.time} ${OP_NAMES[e.op]}`;
  switch (e.op) {
    case Op.Irq:
    case Op.Gsi:
      text += ` ${e.a} ${e.b}`;
      break;
    case Op.Wrmsr:
      text += ` ${hex(e.a)} ${hex64(e.b, e.bHi)}`;
      break;
    case Op.Mark:
      text += ` ${e.label}`;
      break;
    case Op.Cpu:
      text += ` ${e.a}`;
      break;
    case Op.Inta:
    case Op.Sipi:
    case Op.Migrate:
      break;
    default:
      text += e.op === Op.Outb || e.op === Op.Outw || e.op === Op.Outl || e.op === Op.Writel ? ` ${hex(e.a)} ${hex(e.b)}` : ` ${hex(e.a)}`;
  }
  if (e.check === Check.NoInterrupt) return text + " = none";
  if (e.check === Check.Nmi) return text + " = nmi";
  if (e.check !== Check.Value) return text;
  if (e.op === Op.Rdmsr) {
    text += ` = ${hex64(e.value, e.valueHi)}`;
    return e.mask === 0xffffffff && e.maskHi === 0xffffffff ? text : `${text}/${hex64(e.mask, e.maskHi)}`;
  }
  text += ` = ${hex(e.value)}`;
  return e.mask === valueWidthMask(e.op) ? text : `${text}/${hex(e.mask)}`;
}

/** Writes a whole trace to `path`, reading `events` as it goes. */
export async function writeTrace(path: string, header: TraceHeader, events: Iterable<TraceEvent> | AsyncIterable<TraceEvent>): Promise<void> {
  const text = Readable.from(checkedText(path, header, events), { objectMode: false });
  if (path.endsWith(".gz")) await pipeline(text, createGzip(), createWriteStream(path));
  else await pipeline(text, createWriteStream(path));
}

/** The trace text in blocks, each line checked to read back as what it was written from. */
async function* checkedText(path: string, header: TraceHeader, events: Iterable<TraceEvent> | AsyncIterable<TraceEvent>): AsyncGenerator<string> {
  const parser = new TraceParser(path);
  let block = formatHeader(header);
  const headerLines = block.split("\n");
  headerLines.pop();
  headerLines.forEach((l, i) => parser.parseLine(l, i + 1));
  if (!sameHeader(parser.header, header)) {
    throw new TraceError(path, 1, `header does not survive writing: ${JSON.stringify(header)}`);
  }
  let line = headerLines.length;
  for await (const e of events) {
    const text = formatEvent(e);
    line++;
    const back = parser.parseLine(text, line);
    if (back === null || !sameEvent(back, e)) throw new TraceError(path, line, `event does not survive writing: ${JSON.stringify(e)}`);
    block += text + "\n";
    if (block.length >= BLOCK_CHARS) {
      yield block;
      block = "";
    }
  }
  yield block;
}
