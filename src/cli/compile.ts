// `blmv compile <trace> -o <out.btrace>`: the binary form that replays without parsing text.

import { compileTrace } from "../trace/compiled.js";
import { defineCommand } from "./command.js";
import { EXIT_OK, UsageError, checkReadable, checkWritable } from "./usage.js";

export const compile = defineCommand({
  name: "compile",
  synopsis: "<trace> -o <out.btrace>",
  summary: "compile a trace into the binary form the core replays without parsing",
  about: "Compiles a blmv-trace (text or .gz) into fixed-size binary records that the core replays\nwithout parsing; the text stays the source of truth.",
  positionals: 1,
  options: {
    output: { type: "string", short: "o", value: "FILE", help: "the .btrace file to write (required)" },
  },
  async run({ values, positionals }) {
    const input = positionals[0];
    if (!input) throw new UsageError("compile: missing <trace>");
    if (!values.output) throw new UsageError("compile: missing -o <out.btrace>");
    await checkReadable("compile", input);
    await checkWritable("compile", values.output);
    const { records, labels } = await compileTrace(input, values.output);
    console.log(`${values.output}: ${records.toLocaleString("en-US")} records, ${labels} labels`);
    return EXIT_OK;
  },
});
