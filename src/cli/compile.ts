// `blmv compile <trace> -o <out.btrace>`: the binary form that replays without parsing text.

import { compileTrace } from "../trace/compiled.js";
import { EXIT_OK, UsageError, checkReadable, checkWritable, parseOptions } from "./usage.js";

export const COMPILE_USAGE = `usage: blmv compile <trace> -o <out.btrace>

  Compiles a blmv-trace (text or .gz) into fixed-size binary records that the core replays
  without parsing; the text stays the source of truth.`;

export async function runCompile(argv: string[]): Promise<number> {
  const { values, positionals } = parseOptions("compile", argv, { output: { type: "string", short: "o" } }, 1);
  const input = positionals[0];
  if (!input) throw new UsageError(`compile: missing <trace>\n${COMPILE_USAGE}`);
  const output = values.output as string | undefined;
  if (!output) throw new UsageError(`compile: missing -o <out.btrace>\n${COMPILE_USAGE}`);
  await checkReadable("compile", input);
  await checkWritable("compile", output);
  const { records, labels } = await compileTrace(input, output);
  console.log(`${output}: ${records.toLocaleString("en-US")} records, ${labels} labels`);
  return EXIT_OK;
}
