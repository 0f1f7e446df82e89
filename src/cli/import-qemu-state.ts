// `blmv import-qemu-state <stream>`: a QEMU 7.2 migration stream read, its interrupt and timer
// chips rebuilt through the register interface, and their registers read back. docs/qemu-state.md.

import { readFileSync } from "node:fs";
import { QemuStreamError } from "../interchange/qemu/cursor.js";
import { continueMachine } from "../interchange/qemu/continue.js";
import { importQemuState, readBack } from "../interchange/qemu/import.js";
import { formatRegisters, formatStreamSummary } from "../interchange/qemu/report.js";
import { KvmStateError } from "../interchange/kvm/state.js";
import { defineCommand } from "./command.js";
import { EXIT_OK, UsageError, checkReadable, fileProblem, integerOption } from "./usage.js";

export const importQemuStateCommand = defineCommand({
  name: "import-qemu-state",
  synopsis: "<stream[.gz]> [--run NS] [--json]",
  summary: "rebuild the interrupt and timer chips of a QEMU 7.2 migration stream",
  about:
    "Reads a QEMU 7.2 migration stream (as `migrate \"exec:cat > FILE\"` writes it; RAM is skipped),\n" +
    "converts its i8259, i8254, apic, ioapic and CPU sections to KVM's structs and rebuilds them on\n" +
    "a fresh machine through the register interface, with QEMU's semantics (!compat qemu). Prints\n" +
    "the sections found and skipped, the registers read back, and every field that could not be\n" +
    "carried. Exits 2 for a stream that is truncated or corrupt (naming the byte) or whose values\n" +
    "no machine can have.",
  positionals: 1,
  options: {
    run: { type: "string", value: "NS", help: "then run the rebuilt machine on for NS ns of virtual time, taking interrupts, and list them" },
    json: { type: "boolean", help: "print everything as one JSON object" },
  },
  async run({ values, positionals }) {
    const path = positionals[0];
    if (!path) throw new UsageError("import-qemu-state: missing <stream>");
    const runNs = integerOption("import-qemu-state", "run", values.run);
    await checkReadable("import-qemu-state", path);
    let file: Buffer;
    try {
      file = readFileSync(path);
    } catch (e) {
      throw new UsageError(`import-qemu-state: cannot read ${path}: ${fileProblem(e)}`);
    }
    let imp;
    try {
      imp = importQemuState(file);
    } catch (e) {
      if (e instanceof QemuStreamError || e instanceof KvmStateError) throw new UsageError(`import-qemu-state: ${path}: ${e.message}`);
      throw e;
    }
    try {
      const registers = readBack(imp.machine);
      const taken = runNs === undefined ? undefined : continueMachine(imp.machine, runNs, { slave: imp.state.picSlave, settleNs: imp.timerPhases });
      if (values.json) {
        const { stream, skipped, exceptions } = imp;
        console.log(JSON.stringify({ stream: { ...stream, states: undefined }, skipped, exceptions, readBack: registers, taken }, (_, v) => (typeof v === "bigint" ? v.toString() : v)));
        return EXIT_OK;
      }
      const lines = [
        `${path}:`,
        ...formatStreamSummary(imp),
        `rebuilt through the register interface: ${imp.state.board.cpus} CPU${imp.state.board.cpus > 1 ? "s" : ""} at QEMU's virtual time ${imp.state.clock.modelTimeNs} ns; registers read back:`,
        ...formatRegisters(registers),
        imp.exceptions.length ? "not carried:" : "not carried: nothing",
        ...imp.exceptions.map((x) => `  ${x.field}: ${x.reason}`),
      ];
      if (taken) {
        lines.push(`run on for ${runNs} ns: ${taken.length} interrupt${taken.length === 1 ? "" : "s"} taken`);
        lines.push(...taken.map((t) => `  ${t.timeNs} ns  cpu ${t.cpu}  vector 0x${t.vector.toString(16)} (${t.from})`));
      }
      console.log(lines.join("\n"));
      return EXIT_OK;
    } finally {
      imp.machine.release();
    }
  },
});
