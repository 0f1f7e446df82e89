// A command of the command line described once: its synopsis, its text and a table of its
// options, from which both its --help and its parser are made. docs/usage.md lists them.

import { parseArgs } from "node:util";
import { UsageError } from "./usage.js";

export interface OptionSpec {
  type: "string" | "boolean";
  /** What the help shows after the option's name, e.g. SIZE. */
  value?: string;
  help: string;
  /** A string option's value when it is not given; the help shows it unless `defaultText` says otherwise. */
  default?: string;
  /** How the help describes the default when it is not a plain value ("the workload's"). */
  defaultText?: string;
  short?: string;
  multiple?: boolean;
  /** The heading the help lists the option under. */
  group?: string;
}

export type OptionTable = Readonly<Record<string, OptionSpec>>;

/** The parsed value of each option: booleans are false unless given, strings undefined unless given or defaulted. */
export type OptionValues<T extends OptionTable> = {
  [K in keyof T]: T[K] extends { type: "boolean" } ? boolean : T[K] extends { multiple: true } ? string[] : T[K] extends { default: string } ? string : string | undefined;
};

export interface CommandSpec<T extends OptionTable = OptionTable> {
  /** As typed after `blmv`: "replay", "migrate send". */
  name: string;
  /** What follows the name in the usage line: "<trace> [options]". */
  synopsis: string;
  /** One line for the list of commands. */
  summary: string;
  /** Paragraphs after the usage line. */
  about?: string;
  options: T;
  /** How many positional arguments it takes. */
  positionals?: number;
  /** Text after the options (notes, examples). */
  footer?: string;
}

export interface Parsed<T extends OptionTable> {
  values: OptionValues<T>;
  positionals: string[];
}

/** A command ready to run: `main` shows its help on -h/--help, else parses and runs it. */
export interface Command extends CommandSpec {
  main(argv: string[]): Promise<number>;
}

export function defineCommand<const T extends OptionTable>(spec: CommandSpec<T> & { run(parsed: Parsed<T>): Promise<number> }): Command {
  return {
    ...spec,
    async main(argv) {
      const end = argv.indexOf("--");
      if ((end < 0 ? argv : argv.slice(0, end)).some((a) => a === "--help" || a === "-h")) {
        console.log(helpText(spec));
        return 0;
      }
      return spec.run(parseCommand(spec, argv));
    },
  };
}

/** A table with some options' fields changed (a command's own default or wording). */
export function adjust<T extends OptionTable>(table: T, changes: { [K in keyof T]?: Partial<OptionSpec> }): T {
  const out: Record<string, OptionSpec> = { ...table };
  for (const [name, change] of Object.entries(changes)) out[name] = { ...table[name], ...change } as OptionSpec;
  return out as T;
}

/** A table without the named options. */
export function without<T extends OptionTable, K extends keyof T>(table: T, ...names: K[]): Omit<T, K> {
  const out: Record<string, OptionSpec> = { ...table };
  for (const name of names) delete out[name as string];
  return out as Omit<T, K>;
}

const HELP_COLUMN = 24;
const HELP_WIDTH = 100;

/** The command's --help text, made from its table. */
export function helpText(spec: CommandSpec): string {
  const lines = [`usage: blmv ${spec.name} ${spec.synopsis}`.trimEnd()];
  if (spec.about) lines.push("", spec.about);
  // Each group once, where its first option stands.
  const groups = new Map<string, [string, OptionSpec][]>();
  for (const [name, o] of Object.entries(spec.options)) groups.set(o.group ?? "options", [...(groups.get(o.group ?? "options") ?? []), [name, o]]);
  for (const [heading, options] of groups) {
    lines.push("", `${heading}:`);
    for (const [name, o] of options) lines.push(...optionHelp(name, o));
  }
  if (spec.footer) lines.push("", spec.footer);
  return lines.join("\n");
}

/** An option's lines in the help: the flag, its text and its default. */
function optionHelp(name: string, o: OptionSpec): string[] {
  const flag = `  ${o.short ? `-${o.short}, ` : ""}--${name}${o.value ? ` ${o.value}` : ""}`;
  const def = o.defaultText !== undefined ? `default: ${o.defaultText}` : o.default !== undefined && o.default !== "" ? `default ${o.default}` : undefined;
  return wrap(flag, def ? `${o.help} (${def})` : o.help);
}

/** The option's flag column and its help, wrapped to the width. */
function wrap(flag: string, help: string): string[] {
  const out: string[] = [];
  let line = flag.length < HELP_COLUMN - 1 ? flag.padEnd(HELP_COLUMN) : `${flag}\n${" ".repeat(HELP_COLUMN)}`;
  let room = HELP_WIDTH - HELP_COLUMN;
  for (const word of help.split(" ")) {
    if (room < word.length && !line.endsWith(" ".repeat(HELP_COLUMN))) {
      out.push(line.trimEnd());
      line = " ".repeat(HELP_COLUMN);
      room = HELP_WIDTH - HELP_COLUMN;
    }
    line += word + " ";
    room -= word.length + 1;
  }
  out.push(line.trimEnd());
  return out.flatMap((l) => l.split("\n"));
}

/**
 * Parses `argv` by the command's table. Every mistake is a usage error naming the option: an
 * unknown one (with the nearest known name), a missing value, a value given to a switch, or a
 * stray argument.
 */
export function parseCommand<T extends OptionTable>(spec: CommandSpec<T>, argv: string[]): Parsed<T> {
  const config: Record<string, { type: "string" | "boolean"; short?: string }> = {};
  for (const [name, o] of Object.entries(spec.options)) config[name] = { type: o.type, ...(o.short ? { short: o.short } : {}) };
  const { tokens } = parseArgs({ args: argv, options: config, strict: false, allowPositionals: true, tokens: true });
  const values: Record<string, string | boolean | string[] | undefined> = {};
  for (const [name, o] of Object.entries(spec.options)) values[name] = o.type === "boolean" ? false : o.multiple ? [] : o.default;
  const positionals: string[] = [];
  const fail = (text: string): never => {
    throw new UsageError(`${spec.name}: ${text} (blmv ${spec.name} --help lists the options)`);
  };
  for (const token of tokens) {
    if (token.kind === "positional") {
      if (positionals.length >= (spec.positionals ?? 0)) fail(`unexpected argument ${JSON.stringify(token.value)}`);
      positionals.push(token.value);
    }
    if (token.kind !== "option") continue;
    const o = spec.options[token.name] as OptionSpec | undefined;
    if (!o) fail(`unknown option ${token.rawName}${suggestion(token.name, Object.keys(spec.options))}`);
    const flag = `--${token.name}`;
    if (o!.type === "boolean") {
      if (token.inlineValue) fail(`${flag} takes no value, got ${JSON.stringify(token.value)}`);
      values[token.name] = true;
      continue;
    }
    const value = token.value;
    if (value === undefined || (!token.inlineValue && value.startsWith("-") && value.length > 1)) {
      fail(`${flag} needs a value${o!.value ? ` (${o!.value})` : ""}${value !== undefined ? `, got the option ${JSON.stringify(value)}; write ${flag}=${value} if that is the value` : ""}`);
    }
    if (o!.multiple) (values[token.name] as string[]).push(value!);
    else values[token.name] = value;
  }
  return { values: values as OptionValues<T>, positionals };
}

/** ", did you mean --x?" when a known option is one or two edits away or starts the same. */
function suggestion(name: string, known: string[]): string {
  const close = known.find((k) => (name.length >= 3 && (k.startsWith(name) || name.startsWith(k))) || (name.length >= 4 && editDistance(k, name) <= 2));
  return close ? `; did you mean --${close}?` : "";
}

function editDistance(a: string, b: string): number {
  let previous = Array.from({ length: b.length + 1 }, (_, j) => j);
  for (let i = 1; i <= a.length; i++) {
    const row = [i];
    for (let j = 1; j <= b.length; j++) row[j] = Math.min(previous[j] + 1, row[j - 1] + 1, previous[j - 1] + (a[i - 1] === b[j - 1] ? 0 : 1));
    previous = row;
  }
  return previous[b.length];
}
