// `blmv record <script> -o <out.trace>`: run a script against a recording machine and write
// what it did, with every read's value as an expectation, as a new regression trace. A script
// that fails is reported at its own line.

import { spawnSync } from "node:child_process";
import { pathToFileURL } from "node:url";
import { resolve } from "node:path";
import { RecordingMachine } from "../trace/recorder.js";
import { writeTrace } from "../trace/writer.js";
import { defineCommand } from "./command.js";
import { EXIT_OK, UsageError, checkReadable, checkWritable } from "./usage.js";

export const record = defineCommand({
  name: "record",
  synopsis: "<script.mjs> -o <out.trace[.gz]> [--no-pic] [--no-pit] [--no-lapic] [--no-ioapic] [--compat-qemu]",
  summary: "run a script against a recording machine and write what it did as a trace",
  about:
    "<script.mjs> exports a default (async) function that receives a recording machine with the\n" +
    "host API (outb, inb, readl, writel, rdmsr, wrmsr, setIrq, setGsi, inta, advanceTo, mark,\n" +
    "migrate) and drives it; every read it makes is written with the value it returned. A script\n" +
    "that throws, or asks for what a trace cannot hold, is reported at its line; nothing is written.",
  positionals: 1,
  options: {
    output: { type: "string", short: "o", value: "FILE", help: "the trace to write, .gz for gzip (required)" },
    "no-pic": { type: "boolean", help: "a machine without the 8259A pair" },
    "no-pit": { type: "boolean", help: "without the 8254" },
    "no-lapic": { type: "boolean", help: "without the local APIC" },
    "no-ioapic": { type: "boolean", help: "without the I/O APIC" },
    "compat-qemu": { type: "boolean", help: "devices as QEMU models them (the trace says '!compat qemu')" },
  },
  async run({ values, positionals }) {
    const script = positionals[0];
    if (!script) throw new UsageError("record: missing <script.mjs>");
    const output = values.output;
    if (!output) throw new UsageError("record: missing -o <out.trace>");
    await checkReadable("record", script);
    await checkWritable("record", output);
    const url = pathToFileURL(resolve(script)).href;
    let run: unknown;
    try {
      run = (await import(url)).default;
    } catch (e) {
      throw new UsageError(`record: cannot load ${scriptPlace(script, url, e) || syntaxPlace(script)}${(e as Error).message}`);
    }
    if (typeof run !== "function") throw new UsageError(`record: ${script} must export a default function (machine) => …`);
    const m = new RecordingMachine(
      { pic: !values["no-pic"], pit: !values["no-pit"], lapic: !values["no-lapic"], ioapic: !values["no-ioapic"], compatQemu: values["compat-qemu"] },
      `recorded by blmv record from ${script}`,
    );
    try {
      await run(m);
    } catch (e) {
      throw new UsageError(`record: ${scriptPlace(script, url, e) || `${script}: `}${e instanceof Error ? e.message : `threw ${String(e)}`} (nothing was written)`);
    }
    await writeTrace(output, m.header, m.events);
    console.log(`${output}: ${m.events.length.toLocaleString("en-US")} events`);
    return EXIT_OK;
  },
});

/** "script.mjs:12: " for the script's innermost line in the error's stack, else "". */
function scriptPlace(script: string, url: string, e: unknown): string {
  const stack = e instanceof Error ? (e.stack ?? "") : "";
  const at = stack.split("\n").find((line) => line.includes(url));
  const line = at?.slice(at.indexOf(url) + url.length).match(/^:(\d+)/)?.[1];
  return line ? `${script}:${line}: ` : "";
}

/** "script.mjs:2: " for a script that does not compile (the loader's error has no place: node --check finds it). */
function syntaxPlace(script: string): string {
  const path = resolve(script);
  const { stderr } = spawnSync(process.execPath, ["--check", path], { encoding: "utf8" });
  const line = stderr?.match(new RegExp(`${path.replace(/[.*+?^${}()|[\]\\]/g, "\\$&")}:(\\d+)`))?.[1];
  return line ? `${script}:${line}: ` : `${script}: `;
}
