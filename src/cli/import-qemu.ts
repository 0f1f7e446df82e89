// `blmv import-qemu <log> [-o out.trace.gz] [--untimed] [--json]`: a QEMU 7.2 interrupt/timer
// trace log (raw or with iotime lines) as a blmv-trace.

import { basename } from "node:path";
import { ClockConflictError, CorruptLogError, MultiCpuLogError, NotQemuLogError, formatImportSummary, importQemuLog } from "../trace/qemu/import.js";
import { EXIT_FAILED, EXIT_OK, UsageError, checkReadable, checkWritable, parseOptions } from "./usage.js";

export const IMPORT_USAGE = `usage: blmv import-qemu <log[.gz]> [-o <out.trace.gz>] [--untimed] [--json]

  Converts a QEMU 7.2 log recorded with the interrupt/timer trace events (and, optionally, the
  iotime instruction-count lines) into a blmv-trace with '!compat qemu'. Reads keep their values
  as expectations; time-dependent reads stay checked wherever the virtual time is known.
  Exits 2 for input that is not a QEMU log or is a truncated or corrupt .gz, and 1 for a
  clock conflict that no stated rule resolves (naming its line); neither writes a trace.
  --untimed   ignore iotime lines even when present
  --json      print the import summary as JSON`;

export async function runImportQemu(argv: string[]): Promise<number> {
  const { values, positionals } = parseOptions(
    "import-qemu",
    argv,
    { output: { type: "string", short: "o" }, untimed: { type: "boolean", default: false }, json: { type: "boolean", default: false } },
    1,
  );
  const input = positionals[0];
  if (!input) throw new UsageError(`import-qemu: missing <log>\n${IMPORT_USAGE}`);
  const output = (values.output as string | undefined) ?? basename(input).replace(/(\.log)?(\.gz)?$/, "") + ".trace.gz";
  await checkReadable("import-qemu", input);
  await checkWritable("import-qemu", output);
  try {
    const summary = await importQemuLog(input, output, { timing: values.untimed ? "untimed" : "auto" });
    console.log(values.json ? JSON.stringify(summary, null, 2) : formatImportSummary(summary));
  } catch (e) {
    if (e instanceof NotQemuLogError || e instanceof MultiCpuLogError || e instanceof CorruptLogError) throw new UsageError(`import-qemu: ${e.message}`);
    if (e instanceof ClockConflictError) {
      console.error(`blmv: import-qemu: ${input}: ${e.message}; no trace written`);
      return EXIT_FAILED;
    }
    throw e;
  }
  return EXIT_OK;
}
