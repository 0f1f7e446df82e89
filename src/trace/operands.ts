// What each trace op takes and which values its fields may hold: one table that the text parser
// (parse.ts) reads its operands by and the compiled reader (compiled.ts) checks its records
// against, so a .btrace file is exactly as strict as a text trace. docs/trace-format.md.

import { MAX_CPUS } from "../../assembly/abi/codes.js";
import { Check, Op, isCheckable, valueWidthMask, type TraceEvent } from "./event.js";

/** Where an operand's value goes in a TraceEvent. */
export type OperandField = "a" | "b" | "u64" | "label";

export interface Operand {
  /** Its name in the usage text: PORT, VALUE, … */
  name: string;
  /** What it is, in an error message: "port", "outb value", … */
  what: string;
  field: OperandField;
  /** Largest value (fields a and b). */
  max: number;
}

const U32_MAX = 0xffff_ffff;

const port: Operand = { name: "PORT", what: "port", field: "a", max: 0xffff };
const address: Operand = { name: "ADDR", what: "address", field: "a", max: U32_MAX };
const msr: Operand = { name: "MSR", what: "MSR", field: "a", max: U32_MAX };
const level: Operand = { name: "LEVEL", what: "level", field: "b", max: 1 };
const written = (op: Op, name: string): Operand => ({ name: "VALUE", what: `${name} value`, field: "b", max: valueWidthMask(op) });

/** The operands of each op, indexed by op code; a new op adds its row here. */
export const OPERANDS: readonly (readonly Operand[])[] = [
  [],
  [port, written(Op.Outb, "outb")],
  [port, written(Op.Outw, "outw")],
  [port, written(Op.Outl, "outl")],
  [port], // inb
  [port], // inw
  [port], // inl
  [address, written(Op.Writel, "writel")],
  [address], // readl
  [msr, { name: "VALUE", what: "wrmsr value", field: "u64", max: 0 }],
  [msr], // rdmsr
  [{ name: "LINE", what: "ISA line", field: "a", max: 15 }, level],
  [{ name: "PIN", what: "I/O APIC pin", field: "a", max: 23 }, level],
  [], // inta
  [{ name: "LABEL", what: "label", field: "label", max: 0 }],
  [], // migrate
  [{ name: "K", what: "CPU", field: "a", max: MAX_CPUS - 1 }], // cpu
  [], // sipi
];

/** Which event fields each op's operands fill, by op code: worked out once, not per record. */
const FILLS: readonly { a: boolean; b: boolean; high: boolean }[] = OPERANDS.map((operands) => {
  const fields = new Set<OperandField>(operands.map((o) => o.field));
  return { a: fields.has("a") || fields.has("label"), b: fields.has("b") || fields.has("u64"), high: fields.has("u64") };
});

/** The last op code the table knows. */
export const LAST_OP = OPERANDS.length - 1;

export function hex(n: number | bigint): string {
  return "0x" + n.toString(16);
}

/** The message for `what` given as `text` above `max` (hex when the text was hex). */
export function tooLarge(what: string, text: string, max: number): string {
  return `${what} ${text} is too large (max ${text.startsWith("0x") ? hex(max) : max})`;
}

/** Why `label` cannot be a mark's label (one word of the trace text), or null. */
export function labelProblem(label: string): string | null {
  if (label === "") return "empty label";
  if (/[\t-\r #=]/.test(label)) return `label '${label}' contains a space, '#' or '='`;
  return null;
}

/** Why `source` cannot be the text of a `!source` directive, or null. */
export function sourceProblem(source: string): string | null {
  if (source === "") return "!source needs a text";
  if (source !== source.trim() || /[#\n]/.test(source)) return "!source text has surrounding space, a line break or '#'";
  return null;
}

/** Why `cpu K` cannot name a CPU of a board with `cpus` CPUs, or null. */
export function cpuProblem(k: number, cpus: number): string | null {
  return k < cpus ? null : `cpu ${k}: the board has ${cpus === 1 ? "one CPU (0)" : `CPUs 0..${cpus - 1} (!cpus ${cpus})`}`;
}

/** What the trace's header lets operands name: its labels and its CPUs. */
export interface OperandScope {
  labelCount: number;
  cpus: number;
}

/**
 * Why the decoded event `e` is not one the text parser could have produced, or null: known op,
 * each operand within its limit, the check and expectation the op allows, every unused field 0.
 * (The text parser enforces the same limits while it reads the numbers, with their spelling.)
 */
export function eventProblem(e: TraceEvent, scope: OperandScope): string | null {
  if (!(e.op >= 1 && e.op <= LAST_OP)) return `unknown op ${e.op}`;
  const operands = OPERANDS[e.op];
  const fills = FILLS[e.op];
  for (const o of operands) {
    if (o.field === "label" && e.a >= scope.labelCount) return `label index ${e.a} out of range`;
    if ((o.field === "a" || o.field === "b") && e[o.field] > o.max) return tooLarge(o.what, hex(e[o.field]), o.max);
  }
  if (e.op === Op.Cpu) {
    const problem = cpuProblem(e.a, scope.cpus);
    if (problem !== null) return problem;
  }
  if (!fills.a && e.a !== 0) return `operand a ${hex(e.a)} on an op that has none`;
  if (!fills.b && e.b !== 0) return `operand b ${hex(e.b)} on an op that has none`;
  if (!fills.high && e.bHi !== 0) return `high value word ${hex(e.bHi)} on an op other than wrmsr`;
  return expectationProblem(e);
}

function expectationProblem(e: TraceEvent): string | null {
  const width = valueWidthMask(e.op);
  const rdmsr = e.op === Op.Rdmsr;
  switch (e.check) {
    case Check.None:
    case Check.NoInterrupt:
    case Check.Nmi:
      if (e.check === Check.NoInterrupt && e.op !== Op.Inta && e.op !== Op.Sipi) return `check ${e.check} not allowed on op ${e.op}`;
      if (e.check === Check.Nmi && e.op !== Op.Inta) return `check ${e.check} not allowed on op ${e.op}`;
      if (e.value !== 0 || e.mask !== 0 || e.valueHi !== 0 || e.maskHi !== 0) return "expected value or mask without a value check";
      return null;
    case Check.Value:
      if (!isCheckable(e.op)) return `check ${e.check} not allowed on op ${e.op}`;
      if (e.value > width) return tooLarge("expected value", hex(e.value), width);
      if (e.mask > width) return `mask ${hex(e.mask)} has bits outside the result (${hex(width)})`;
      if (!rdmsr && (e.valueHi !== 0 || e.maskHi !== 0)) return "high words of a value check on an op other than rdmsr";
      return null;
    default:
      return `unknown check ${e.check}`;
  }
}
