// The line grammar of blmv-trace version 1: one parser that turns text lines into a header and
// events, checking everything the format defines. The streaming reader feeds it; the writer
// runs its own output through it so that nothing it writes can fail to read back.

import { MAX_CLOCK_HZ, MAX_CPUS } from "../core/machine.js";
import {
  Check,
  Op,
  OP_NAMES,
  defaultHeader,
  isCheckable,
  splitU64,
  valueWidthMask,
  type TraceEvent,
  type TraceHeader,
} from "./event.js";
import { OPERANDS, cpuProblem, hex, sourceProblem, tooLarge } from "./operands.js";
import { printable } from "../common/printable.js";

/** A trace that breaks the format: which file, which 1-based line, and what is wrong. */
export class TraceError extends Error {
  override readonly name = "TraceError";
  constructor(
    readonly file: string,
    readonly line: number,
    /** What is wrong, without the location. */
    readonly reason: string,
  ) {
    super(`${printable(file)}:${line}: ${printable(reason)}`);
  }
}

export const MAGIC_LINE = "blmv-trace 1";

const OPS = new Map<string, Op>(OP_NAMES.map((name, code) => [name, code as Op]).filter(([name]) => name !== "") as [string, Op][]);

const MAX_TIME = Number.MAX_SAFE_INTEGER;
const U32_MAX = 0xffff_ffff;
const U64_MAX = (1n << 64n) - 1n;
const DECIMAL = /^[0-9]+$/;
const HEX = /^0x[0-9a-fA-F]+$/;
const MACHINE_KEYS = ["pic", "pit", "lapic", "ioapic"] as const;

/** Raised inside the parser; the caller adds file and line. */
class Reject extends Error {}

function isSpace(c: number): boolean {
  return c === 0x20 || (c >= 0x09 && c <= 0x0d);
}

/** The whitespace-separated words of a trimmed text. */
function words(text: string): string[] {
  const out: string[] = [];
  let start = 0;
  for (let i = 0; i <= text.length; i++) {
    if (i < text.length && !isSpace(text.charCodeAt(i))) continue;
    if (i > start) out.push(text.slice(start, i));
    start = i + 1;
  }
  return out;
}

function hexDigit(c: number): number {
  if (c >= 0x30 && c <= 0x39) return c - 0x30;
  const lower = c | 0x20;
  return lower >= 0x61 && lower <= 0x66 ? lower - 0x61 + 10 : -1;
}

/**
 * An unsigned decimal or 0x-hex number. Exact up to 2^53 − 1; longer text gives a value above
 * every limit the format has, so range checks still reject it.
 */
function parseNumber(token: string, what: string): number {
  const n = token.length;
  let v = 0;
  if (n > 2 && token.charCodeAt(0) === 0x30 && token.charCodeAt(1) === 0x78 /* 0x */) {
    for (let i = 2; i < n; i++) {
      const d = hexDigit(token.charCodeAt(i));
      if (d < 0) throw new Reject(`bad number '${token}' for ${what}`);
      v = v * 16 + d;
    }
    return v;
  }
  if (n === 0) throw new Reject(`bad number '' for ${what}`);
  for (let i = 0; i < n; i++) {
    const d = token.charCodeAt(i) - 0x30;
    if (d < 0 || d > 9) throw new Reject(`bad number '${token}' for ${what}`);
    v = v * 10 + d;
  }
  return v;
}

function parseLimited(token: string, what: string, max: number): number {
  const v = parseNumber(token, what);
  if (v > max) throw new Reject(tooLarge(what, token, max));
  return v;
}

function parseU64(token: string, what: string): bigint {
  if (!DECIMAL.test(token) && !HEX.test(token)) throw new Reject(`bad number '${token}' for ${what}`);
  const v = BigInt(token);
  if (v > U64_MAX) throw new Reject(`${what} ${token} does not fit in 64 bits`);
  return v;
}

function parseOnOff(token: string, key: string): boolean {
  if (token === "on") return true;
  if (token === "off") return false;
  throw new Reject(`bad value '${token}' for ${key} (on or off)`);
}

/** `key=value` pairs of a directive. */
function pairs(tokens: readonly string[], directive: string): [string, string][] {
  return tokens.map((t) => {
    const eq = t.indexOf("=");
    if (eq <= 0 || eq !== t.lastIndexOf("=")) throw new Reject(`bad setting '${t}' in ${directive} (key=value)`);
    return [t.slice(0, eq), t.slice(eq + 1)];
  });
}

/** More than one CPU needs the local APICs (each CPU has its own). */
function checkCpusHaveApics(h: TraceHeader): void {
  if (h.cpus > 1 && !h.machine.lapic) throw new Reject(`!cpus ${h.cpus} needs lapic=on (each CPU has its own local APIC)`);
}

function parseHz(tokens: readonly string[], directive: string): number {
  if (tokens.length !== 1) throw new Reject(`${directive} takes one number`);
  const hz = parseLimited(tokens[0], directive, MAX_CLOCK_HZ);
  if (hz === 0) throw new Reject(`${directive} must not be 0`);
  return hz;
}

/**
 * Parses one trace line at a time. Lines must be fed in order; the parser keeps the header,
 * whether events have started, and the time of the previous event.
 */
export class TraceParser {
  readonly header: TraceHeader = defaultHeader();
  /** Whether the magic line has been seen. */
  started = false;
  /** Whether an event has been seen (directives are no longer allowed). */
  inEvents = false;
  private lastTime = 0;

  constructor(readonly file: string) {}

  /**
   * Parses `text`, line number `line`. Returns the event it holds, or null for the magic line,
   * a directive, a comment or a blank line. Throws TraceError.
   */
  parseLine(text: string, line: number): TraceEvent | null {
    try {
      return this.parse(text, line);
    } catch (e) {
      if (e instanceof Reject) throw new TraceError(this.file, line, e.message);
      throw e;
    }
  }

  /** Checks that the input, now ended at line `lastLine`, held at least the magic line. */
  finish(lastLine: number): void {
    if (!this.started) throw new TraceError(this.file, Math.max(lastLine, 1), `missing '${MAGIC_LINE}' line (empty trace)`);
  }

  private parse(raw: string, line: number): TraceEvent | null {
    const hash = raw.indexOf("#");
    const text = (hash >= 0 ? raw.slice(0, hash) : raw).trim();
    if (text === "") return null;
    if (!this.started) {
      const tokens = words(text);
      if (tokens[0] !== "blmv-trace") throw new Reject(`expected '${MAGIC_LINE}' as the first line, found '${text}'`);
      if (tokens.length !== 2 || tokens[1] !== "1") throw new Reject(`unsupported format '${text}' (this reader knows '${MAGIC_LINE}')`);
      this.started = true;
      return null;
    }
    if (text.charCodeAt(0) === 0x21 /* ! */) {
      if (this.inEvents) throw new Reject(`directive after the first event: '${words(text)[0]}'`);
      this.directive(text);
      return null;
    }
    this.inEvents = true;
    return this.event(text, line);
  }

  private directive(text: string): void {
    const tokens = words(text);
    const name = tokens[0];
    const args = tokens.slice(1);
    const h = this.header;
    switch (name) {
      case "!machine":
        for (const [key, value] of pairs(args, name)) {
          if (!(MACHINE_KEYS as readonly string[]).includes(key)) throw new Reject(`unknown device '${key}' in !machine`);
          h.machine[key as (typeof MACHINE_KEYS)[number]] = parseOnOff(value, key);
        }
        checkCpusHaveApics(h);
        return;
      case "!cpus": {
        if (args.length !== 1) throw new Reject("!cpus takes one number");
        const n = parseLimited(args[0], "!cpus", MAX_CPUS);
        if (n === 0) throw new Reject(`!cpus must be 1 to ${MAX_CPUS}`);
        h.cpus = n;
        checkCpusHaveApics(h);
        return;
      }
      case "!apic-bus-hz":
        h.apicBusHz = parseHz(args, name);
        return;
      case "!tsc-hz":
        h.tscHz = parseHz(args, name);
        return;
      case "!wire":
        for (const [key, value] of pairs(args, name)) {
          if (key !== "pit-irq0") throw new Reject(`unknown wire '${key}' in !wire`);
          h.pitIrq0 = parseOnOff(value, key);
        }
        return;
      case "!source": {
        const source = text.slice(name.length).trim();
        const problem = sourceProblem(source);
        if (problem !== null) throw new Reject(problem);
        h.source = source;
        return;
      }
      case "!compat":
        if (args.length !== 1 || args[0] !== "qemu") throw new Reject(`unknown compat mode '${args.join(" ")}' (only 'qemu')`);
        h.compatQemu = true;
        return;
      default:
        throw new Reject(`unknown directive '${name}'`);
    }
  }

  private event(text: string, line: number): TraceEvent {
    const eq = text.indexOf("=");
    const tokens = words(eq >= 0 ? text.slice(0, eq) : text);
    const time = this.time(tokens[0]);
    if (tokens.length < 2) throw new Reject("missing op after the time");
    const opName = tokens[1];
    const op = OPS.get(opName);
    if (op === undefined) throw new Reject(`unknown op '${opName}'`);
    const operands = tokens.length - 2;
    if (operands !== OPERANDS[op].length) {
      const usage = OPERANDS[op].length === 0 ? "no operands" : OPERANDS[op].map((o) => o.name).join(" ");
      throw new Reject(`${opName} takes ${usage}, got ${operands} operand${operands === 1 ? "" : "s"}`);
    }
    const e: TraceEvent = {
      time,
      op,
      a: 0,
      b: 0,
      bHi: 0,
      check: Check.None,
      value: 0,
      mask: 0,
      valueHi: 0,
      maskHi: 0,
      label: "",
      line,
    };
    this.operands(e, tokens);
    if (eq >= 0) this.expectation(e, opName, text.slice(eq + 1).trim());
    this.lastTime = time;
    return e;
  }

  private time(token: string): number {
    let t: number;
    if (token.charCodeAt(0) === 0x2b /* + */) {
      t = this.lastTime + parseLimited(token.slice(1), "relative time", MAX_TIME);
      if (t > MAX_TIME) throw new Reject(`time ${t} is beyond 2^53 - 1 ns`);
    } else {
      t = parseLimited(token, "time", MAX_TIME);
      if (t < this.lastTime) throw new Reject(`time goes backwards: ${t} after ${this.lastTime}`);
    }
    return t;
  }

  private operands(e: TraceEvent, t: readonly string[]): void {
    OPERANDS[e.op].forEach((o, i) => {
      const token = t[2 + i];
      if (o.field === "label") e.label = token;
      else if (o.field === "u64") [e.b, e.bHi] = splitU64(parseU64(token, o.what));
      else e[o.field] = parseLimited(token, o.what, o.max);
    });
    if (e.op === Op.Cpu) {
      const problem = cpuProblem(e.a, this.header.cpus);
      if (problem !== null) throw new Reject(problem);
    }
  }

  private expectation(e: TraceEvent, opName: string, text: string): void {
    if (!isCheckable(e.op)) {
      const what = OPERANDS[e.op].length === 2 ? "a write" : "an op that reads nothing";
      throw new Reject(`expectation on ${what} (${opName})`);
    }
    if (text === "") throw new Reject("missing expected value after '='");
    if (words(text).length !== 1) throw new Reject(`bad expected value '${text}'`);
    if (text === "none") {
      if (e.op !== Op.Inta && e.op !== Op.Sipi) throw new Reject(`'= none' is only for inta and sipi, not ${opName}`);
      e.check = Check.NoInterrupt;
      return;
    }
    if (text === "nmi") {
      if (e.op !== Op.Inta) throw new Reject(`'= nmi' is only for inta, not ${opName}`);
      e.check = Check.Nmi;
      return;
    }
    const slash = text.indexOf("/");
    const valueText = slash >= 0 ? text.slice(0, slash) : text;
    const maskText = slash >= 0 ? text.slice(slash + 1) : null;
    e.check = Check.Value;
    if (e.op === Op.Rdmsr) {
      [e.value, e.valueHi] = splitU64(parseU64(valueText, "expected value"));
      [e.mask, e.maskHi] = maskText === null ? [U32_MAX, U32_MAX] : splitU64(parseU64(maskText, "mask"));
      return;
    }
    const width = valueWidthMask(e.op);
    e.value = parseLimited(valueText, `expected ${opName} value`, width);
    if (maskText === null) {
      e.mask = width;
      return;
    }
    const mask = parseNumber(maskText, "mask");
    if (mask > width) throw new Reject(`mask ${maskText} has bits outside the ${opName} result (${hex(width)})`);
    e.mask = mask;
  }
}
