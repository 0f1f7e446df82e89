// `blmv record <script> -o <out.trace>`: run a script against a recording machine and write
// what it did, with every read's value as an expectation, as a new regression trace.

import { pathToFileURL } from "node:url";
import { resolve } from "node:path";
import { RecordingMachine } from "../trace/recorder.js";
import { writeTrace } from "../trace/writer.js";
import { EXIT_OK, UsageError, checkReadable, checkWritable, parseOptions } from "./usage.js";

export const RECORD_USAGE = `usage: blmv record <script.mjs> -o <out.trace[.gz]> [--no-pic] [--no-pit] [--no-lapic] [--no-ioapic] [--compat-qemu]

  <script.mjs> exports a default (async) function that receives a recording machine with the
  host API (outb, inb, readl, writel, rdmsr, wrmsr, setIrq, setGsi, inta, advanceTo, mark,
  migrate) and drives it; every read it makes is written with the value it returned.`;

export async function runRecord(argv: string[]): Promise<number> {
  const { values, positionals } = parseOptions(
    "record",
    argv,
    {
      output: { type: "string", short: "o" },
      "no-pic": { type: "boolean", default: false },
      "no-pit": { type: "boolean", default: false },
      "no-lapic": { type: "boolean", default: false },
      "no-ioapic": { type: "boolean", default: false },
      "compat-qemu": { type: "boolean", default: false },
    },
    1,
  );
  const script = positionals[0];
  if (!script) throw new UsageError(`record: missing <script.mjs>\n${RECORD_USAGE}`);
  const output = values.output as string | undefined;
  if (!output) throw new UsageError(`record: missing -o <out.trace>\n${RECORD_USAGE}`);
  await checkReadable("record", script);
  await checkWritable("record", output);
  let run: unknown;
  try {
    run = (await import(pathToFileURL(resolve(script)).href)).default;
  } catch (e) {
    throw new UsageError(`record: cannot load ${script}: ${(e as Error).message}`);
  }
  if (typeof run !== "function") throw new UsageError(`record: ${script} must export a default function (machine) => …`);
  const m = new RecordingMachine(
    { pic: !values["no-pic"], pit: !values["no-pit"], lapic: !values["no-lapic"], ioapic: !values["no-ioapic"], compatQemu: !!values["compat-qemu"] },
    `recorded by blmv record from ${script}`,
  );
  await run(m);
  await writeTrace(output, m.header, m.events);
  console.log(`${output}: ${m.events.length.toLocaleString("en-US")} events`);
  return EXIT_OK;
}
