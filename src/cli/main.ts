#!/usr/bin/env node
// blmv: the command line. Each command lives in its own module; this file only dispatches and
// turns errors into messages and exit codes (0 ok, 1 checks failed, 2 bad input or usage).

import { TraceError } from "../trace/parse.js";
import { DeviceStateError } from "../core/machine.js";
import { FieldError } from "../core/fields.js";
import { runReplay, REPLAY_USAGE } from "./replay.js";
import { runCompile, COMPILE_USAGE } from "./compile.js";
import { runImportQemu, IMPORT_USAGE } from "./import-qemu.js";
import { runRecord, RECORD_USAGE } from "./record.js";
import { runMigrateCommand, MIGRATE_USAGE } from "./migrate.js";
import { runDemo, DEMO_USAGE } from "./demo.js";
import { runCompare, COMPARE_USAGE } from "./compare.js";
import { runResume, RESUME_USAGE } from "./resume.js";
import { EXIT_BAD_INPUT, EXIT_FAILED, UsageError } from "./usage.js";

const COMMANDS: Record<string, { run: (argv: string[]) => Promise<number>; usage: string }> = {
  demo: { run: runDemo, usage: DEMO_USAGE },
  replay: { run: runReplay, usage: REPLAY_USAGE },
  compile: { run: runCompile, usage: COMPILE_USAGE },
  "import-qemu": { run: runImportQemu, usage: IMPORT_USAGE },
  record: { run: runRecord, usage: RECORD_USAGE },
  migrate: { run: runMigrateCommand, usage: MIGRATE_USAGE },
  compare: { run: runCompare, usage: COMPARE_USAGE },
  resume: { run: runResume, usage: RESUME_USAGE },
};

const HELP = `blmv — a model of BLMVisor: pass-through hypervisor, device-state capture and reconstruction,
trace replay and live migration

commands:
${Object.values(COMMANDS)
  .flatMap((c) => c.usage.split("\n").filter((l) => /^\s*(usage: )?blmv /.test(l)).slice(0, 2))
  .map((l) => "  " + l.replace(/^\s*(usage: )?/, ""))
  .join("\n")}

blmv <command> --help shows a command's options.`;

async function main(argv: string[]): Promise<number> {
  const [name, ...rest] = argv;
  if (!name || name === "--help" || name === "-h" || name === "help") {
    console.log(HELP);
    return name ? 0 : EXIT_BAD_INPUT;
  }
  const command = COMMANDS[name];
  if (!command) throw new UsageError(`unknown command ${JSON.stringify(name)}\n\n${HELP}`);
  if (rest.length === 1 && (rest[0] === "--help" || rest[0] === "-h")) {
    console.log(command.usage);
    return 0;
  }
  return command.run(rest);
}

main(process.argv.slice(2)).then(
  (code) => {
    process.exitCode = code;
  },
  (e: unknown) => {
    if (e instanceof UsageError || e instanceof TraceError || e instanceof DeviceStateError || e instanceof FieldError) {
      console.error(`blmv: ${e.message}`);
      process.exitCode = EXIT_BAD_INPUT;
    } else {
      console.error(`blmv: internal error: ${e instanceof Error ? (e.stack ?? e.message) : String(e)}`);
      process.exitCode = EXIT_FAILED;
    }
  },
);
