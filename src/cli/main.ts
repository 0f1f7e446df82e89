#!/usr/bin/env node
// blmv: the command line. Each command lives in its own module with its options and help; this
// file lists them, dispatches, and turns errors into messages and exit codes (0 ok, 1 checks
// failed, 2 bad input or usage, 130 interrupted). docs/usage.md.

import { TraceError } from "../trace/parse.js";
import { DeviceStateError } from "../core/machine.js";
import { FieldError } from "../core/fields.js";
import { packageInfo } from "../core/package.js";
import { replay } from "./replay.js";
import { compile } from "./compile.js";
import { importQemu } from "./import-qemu.js";
import { importQemuStateCommand } from "./import-qemu-state.js";
import { record } from "./record.js";
import { listenCommand, sendCommand } from "./migrate.js";
import { demo } from "./demo.js";
import { CONTROL_COMMANDS } from "./monitor.js";
import { compare } from "./compare.js";
import { resume } from "./resume.js";
import { stateExport, stateImport } from "./state.js";
import type { Command } from "./command.js";
import { EXIT_BAD_INPUT, EXIT_FAILED, UsageError } from "./usage.js";

/** A command with subcommands (`blmv migrate listen`): its name and theirs. */
interface CommandGroup {
  name: string;
  summary: string;
  subcommands: readonly Command[];
}

const COMMANDS: readonly (Command | CommandGroup)[] = [
  demo,
  replay,
  compile,
  importQemu,
  importQemuStateCommand,
  record,
  { name: "migrate", summary: "live migration between two processes or hosts", subcommands: [listenCommand, sendCommand, ...CONTROL_COMMANDS] },
  resume,
  compare,
  { name: "state", summary: "device state in other hypervisors' layouts", subcommands: [stateExport, stateImport] },
];

const HELP_FLAGS = ["--help", "-h", "help"];
const VERSION_FLAGS = ["--version", "-V", "version"];

function listing(commands: readonly (Command | CommandGroup)[]): string {
  const all = commands.flatMap((c) => ("subcommands" in c ? c.subcommands : [c]));
  const width = Math.max(...all.map((c) => c.name.length));
  return all.map((c) => `  blmv ${c.name.padEnd(width)}  ${c.summary}`).join("\n");
}

function help(): string {
  return `blmv ${packageInfo().version} — a model of BLMVisor: pass-through hypervisor, device-state capture and
reconstruction, trace replay and live migration

usage: blmv <command> [options]

commands:
${listing(COMMANDS)}

  blmv <command> --help   a command's options
  blmv --version          the version`;
}

async function main(argv: string[]): Promise<number> {
  const [name, ...rest] = argv;
  if (!name) {
    console.error(help());
    return EXIT_BAD_INPUT;
  }
  if (HELP_FLAGS.includes(name)) {
    console.log(help());
    return 0;
  }
  if (VERSION_FLAGS.includes(name)) {
    console.log(packageInfo().version);
    return 0;
  }
  const command = COMMANDS.find((c) => c.name === name);
  if (!command) throw new UsageError(`unknown command ${JSON.stringify(name)}; the commands are ${COMMANDS.map((c) => c.name).join(", ")} (blmv --help)`);
  if (!("subcommands" in command)) return command.main(rest);
  const [sub, ...subArgv] = rest;
  const subcommand = command.subcommands.find((c) => c.name === `${command.name} ${sub}`);
  if (subcommand) return subcommand.main(subArgv);
  const names = command.subcommands.map((c) => c.name.slice(command.name.length + 1));
  if (sub === undefined || HELP_FLAGS.includes(sub)) {
    (sub === undefined ? console.error : console.log)(`usage: blmv ${command.name} ${names.join("|")} [options]\n\n${listing(command.subcommands)}\n\n  blmv ${command.name} <${names.join("|")}> --help   its options`);
    return sub === undefined ? EXIT_BAD_INPUT : 0;
  }
  throw new UsageError(`${command.name}: unknown subcommand ${JSON.stringify(sub)}; expected ${names.slice(0, -1).join(", ")} or ${names[names.length - 1]}`);
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
