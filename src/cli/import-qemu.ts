// `blmv import-qemu <log> [-o out.trace.gz] [--untimed] [--json]`: a QEMU 7.2 interrupt/timer
// trace log (raw or with iotime lines) as a blmv-trace.

import { basename } from "node:path";
import { ClockConflictError, CorruptLogError, MultiCpuLogError, NotQemuLogError, formatImportSummary, importQemuLog } from "../trace/qemu/import.js";
import { defineCommand } from "./command.js";
import { EXIT_FAILED, EXIT_OK, UsageError, checkReadable, checkWritable } from "./usage.js";

export const importQemu = defineCommand({
  name: "import-qemu",
  synopsis: "<log[.gz]> [-o <out.trace.gz>] [--untimed] [--json]",
  summary: "convert a QEMU 7.2 interrupt/timer trace log into a blmv-trace",
  about:
    "Converts a QEMU 7.2 log recorded with the interrupt/timer trace events (and, optionally, the\n" +
    "iotime instruction-count lines) into a blmv-trace with '!compat qemu'. Reads keep their values\n" +
    "as expectations; time-dependent reads stay checked wherever the virtual time is known.\n" +
    "A raw log from several vCPUs becomes a trace with '!cpus N', each event on its CPU.\n" +
    "Exits 2 for input that is not a QEMU log, is a truncated or corrupt .gz, or is a timed\n" +
    "log from several vCPUs, and 1 for a clock conflict that no stated rule resolves (naming\n" +
    "its line); none of these writes a trace.",
  positionals: 1,
  options: {
    output: { type: "string", short: "o", value: "FILE", defaultText: "the log's name with .trace.gz, here", help: "the trace to write" },
    untimed: { type: "boolean", help: "ignore iotime lines even when present" },
    json: { type: "boolean", help: "print the import summary as JSON" },
  },
  async run({ values, positionals }) {
    const input = positionals[0];
    if (!input) throw new UsageError("import-qemu: missing <log>");
    const output = values.output ?? basename(input).replace(/(\.log)?(\.gz)?$/, "") + ".trace.gz";
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
  },
});
