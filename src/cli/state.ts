// `blmv state export --format kvm` and `blmv state import`: a machine's device state written as
// Linux KVM's structs (from a trace replayed to a point, a snapshot, or a fresh board), and a
// machine rebuilt from such structs through the register interface. docs/interchange.md.

import { Machine, MAX_CPUS, POLICIES, type DeviceRecord, type Policy } from "../core/machine.js";
import { Op, type TraceEvent } from "../trace/event.js";
import { MigrationRequestError } from "../trace/replay.js";
import { isBadKvmInput, readKvmDirectory, writeKvmDirectory } from "../interchange/kvm/container.js";
import { exportKvmState } from "../interchange/kvm/from-capture.js";
import { IOAPIC_ENTRY_MASKED } from "../interchange/kvm/conventions.js";
import { START_UP_RESET, START_UP_WAITING, X2APIC_ID_FORMATS, lapicRecords, type DeviceRecordBody, type KvmException, type X2apicIdFormat } from "../interchange/kvm/state.js";
import { machineFromKvm } from "../interchange/kvm/to-machine.js";
import { defineCommand } from "./command.js";
import { openSnapshot } from "./migrate.js";
import { replayFile } from "./replay.js";
import { EXIT_OK, UsageError, checkReadable, integerOption } from "./usage.js";

const FORMATS = ["kvm"];

export const stateExport = defineCommand({
  name: "state export",
  synopsis: "--format kvm -o <dir> [--trace <trace> --at N|LABEL | --snapshot <file> | --cpus N [--qemu]] [--json]",
  summary: "write a machine's device state as Linux KVM's structs",
  about:
    "Captures a machine through the hypervisor and writes its interrupt and timer chips as the structs\n" +
    "KVM_GET_IRQCHIP, KVM_GET_PIT2, KVM_GET_LAPIC, KVM_GET_SREGS, KVM_GET_MP_STATE, KVM_GET_VCPU_EVENTS and\n" +
    "KVM_GET_MSRS return, one file each, with a manifest.json (docs/interchange.md). The machine is a\n" +
    "trace replayed to event N or to its first 'mark LABEL', a snapshot's guest, or else a fresh board.\n" +
    "Prints the captured fields the structs cannot carry.",
  options: {
    format: { type: "string", value: "F", help: `the layout: ${FORMATS.join(" | ")}` },
    output: { type: "string", short: "o", value: "DIR", help: "the directory to write (created if need be)" },
    trace: { type: "string", value: "FILE", group: "the machine", help: "replay this trace (text or .btrace) …" },
    at: { type: "string", value: "N|LABEL", group: "the machine", help: "… up to event N or its first 'mark LABEL', and capture there" },
    policy: { type: "string", value: "P", default: "blmvisor", group: "the machine", help: "the policy the trace runs under: blmvisor | full" },
    snapshot: { type: "string", value: "FILE", group: "the machine", help: "the guest a snapshot holds (blmv resume's input)" },
    cpus: { type: "string", value: "N", default: "1", group: "the machine", help: "a fresh board with N CPUs" },
    qemu: { type: "boolean", group: "the machine", help: "the fresh board follows QEMU 7.2 (!compat qemu)" },
    "x2apic-ids": { type: "string", value: "F", default: "32-bit", help: `how an x2APIC's ID sits in its page: ${X2APIC_ID_FORMATS.join(" | ")}` },
    json: { type: "boolean", help: "print the files and exceptions as JSON" },
  },
  async run({ values }) {
    const cmd = "state export";
    if (values.format === undefined) throw new UsageError(`${cmd}: missing --format (the layout: ${FORMATS.join(", ")})`);
    if (!FORMATS.includes(values.format)) throw new UsageError(`${cmd}: --format must be one of ${FORMATS.join(", ")}, got ${JSON.stringify(values.format)}`);
    if (values.output === undefined) throw new UsageError(`${cmd}: missing -o <dir>`);
    const ids = values["x2apic-ids"] as X2apicIdFormat;
    if (!X2APIC_ID_FORMATS.includes(ids)) throw new UsageError(`${cmd}: --x2apic-ids must be one of ${X2APIC_ID_FORMATS.join(", ")}, got ${JSON.stringify(ids)}`);
    const record = await captureSource(cmd, values);
    const { state, exceptions } = exportKvmState(record as unknown as DeviceRecordBody, ids);
    let files: string[];
    try {
      files = writeKvmDirectory(values.output, state);
    } catch (e) {
      throw new UsageError(`${cmd}: cannot write ${values.output}: ${(e as Error).message}`);
    }
    if (values.json) console.log(JSON.stringify({ directory: values.output, timeNs: state.clock.modelTimeNs, files, exceptions }, null, 2));
    else console.log([`${values.output}: ${files.length} files, the machine at ${state.clock.modelTimeNs} ns (${state.board.cpus} CPU${state.board.cpus > 1 ? "s" : ""})`, ...formatExceptions("not carried by the structs", exceptions)].join("\n"));
    return EXIT_OK;
  },
});

interface SourceOptions {
  trace?: string;
  at?: string;
  policy: string;
  snapshot?: string;
  cpus: string;
  qemu: boolean;
}

/** The record of the machine the options name. */
async function captureSource(cmd: string, o: SourceOptions): Promise<DeviceRecord> {
  if (o.trace !== undefined && o.snapshot !== undefined) throw new UsageError(`${cmd}: --trace and --snapshot name two machines; give one`);
  if ((o.trace === undefined) !== (o.at === undefined)) throw new UsageError(`${cmd}: --trace and --at go together (replay the trace up to a point)`);
  if (o.snapshot !== undefined) {
    await checkReadable(cmd, o.snapshot);
    const { guest } = openSnapshot(cmd, o.snapshot);
    return guest.machine.capture();
  }
  if (o.trace !== undefined && o.at !== undefined) return captureFromTrace(cmd, o.trace, o.at, o.policy);
  const cpus = integerOption(cmd, "cpus", o.cpus, 1)!;
  if (cpus > MAX_CPUS) throw new UsageError(`${cmd}: --cpus must be at most ${MAX_CPUS}, got ${cpus}`);
  const m = Machine.create({ cpus, compatQemu: o.qemu });
  try {
    return m.capture();
  } finally {
    m.release();
  }
}

async function captureFromTrace(cmd: string, path: string, at: string, policyText: string): Promise<DeviceRecord> {
  const policy = policyText as Policy;
  if (!POLICIES.includes(policy) || policy === "none") throw new UsageError(`${cmd}: --policy must be blmvisor or full (none keeps no shadows to capture), got ${JSON.stringify(policyText)}`);
  const events = /^\d+$/.test(at) ? integerOption(cmd, "at", at, 1)! : undefined;
  if (events === undefined && !/^\S+$/.test(at)) throw new UsageError(`${cmd}: --at expects an event number or a mark label, got ${JSON.stringify(at)}`);
  const point = events !== undefined ? { afterEvents: [events] } : { atLabels: [at] };
  // The trace's own `migrate` events are migration points too: only the one asked for counts.
  const asked = (p: { events: number; event: TraceEvent }) => (events !== undefined ? p.events === events : p.event.op === Op.Mark && p.event.label === at);
  let record: DeviceRecord | undefined;
  try {
    await replayFile(path, { policy, ...point, onCapture: (r, p) => void (asked(p) && (record ??= r)) });
  } catch (e) {
    if (e instanceof MigrationRequestError) throw new UsageError(`${cmd}: ${e.message}`);
    throw e;
  }
  if (!record) throw new UsageError(`${cmd}: ${path}: the trace never reaches ${/^\d+$/.test(at) ? `event ${at}` : `'mark ${at}'`}`);
  return record;
}

export const stateImport = defineCommand({
  name: "state import",
  synopsis: "<dir> [--policy blmvisor|full] [--json]",
  summary: "rebuild a machine from Linux KVM's structs through the register interface",
  about:
    "Reads a directory of KVM structs (the layout `blmv state export --format kvm` writes, docs/interchange.md),\n" +
    "checks every value, rebuilds the machine through the register interface, prints every field it could\n" +
    "not carry and the registers the rebuilt machine reads back. Impossible values (a vector below 16 in a\n" +
    "local APIC's ISR, a PIT mode above 7, a reserved I/O APIC delivery mode, a struct of the wrong size)\n" +
    "are refused with exit 2 before any machine is built.",
  positionals: 1,
  options: {
    policy: { type: "string", value: "P", default: "blmvisor", help: "the rebuilt machine's hypervisor policy: blmvisor | full" },
    json: { type: "boolean", help: "print the exceptions and the registers read back as JSON" },
  },
  async run({ values, positionals }) {
    const cmd = "state import";
    const dir = positionals[0];
    if (!dir) throw new UsageError(`${cmd}: missing <dir>`);
    const policy = values.policy as Policy;
    if (!POLICIES.includes(policy) || policy === "none") throw new UsageError(`${cmd}: --policy must be blmvisor or full, got ${JSON.stringify(values.policy)}`);
    let rebuilt: ReturnType<typeof machineFromKvm>;
    try {
      rebuilt = machineFromKvm(readKvmDirectory(dir), { policy });
    } catch (e) {
      if (isBadKvmInput(e)) throw new UsageError(`${cmd}: ${e.message}`);
      throw e;
    }
    const { machine, exceptions } = rebuilt;
    try {
      const readBack = machine.capture() as unknown as DeviceRecordBody;
      if (values.json) console.log(JSON.stringify({ directory: dir, exceptions, registers: registersOf(readBack) }, null, 2));
      else console.log([`${dir}: rebuilt at ${readBack.time} ns`, ...formatExceptions("not carried", exceptions), ...formatRegisters(readBack)].join("\n"));
    } finally {
      machine.release();
    }
    return EXIT_OK;
  },
});

function formatExceptions(heading: string, exceptions: readonly KvmException[]): string[] {
  if (exceptions.length === 0) return [`${heading}: nothing`];
  return [`${heading} (${exceptions.length}):`, ...exceptions.map((e) => `  ${e.field} [${e.kind}]: ${e.reason}`)];
}

const hex = (v: number, width = 2) => `0x${(v >>> 0).toString(16).padStart(width, "0")}`;

/** The registers software reads from the rebuilt machine, per device. */
function registersOf(r: DeviceRecordBody) {
  return {
    timeNs: r.time,
    pic: r.config.pic ? { master: r.pic.master, slave: r.pic.slave } : undefined,
    pit: r.config.pit ? { port61: r.pit.port61, channels: r.pit.channels } : undefined,
    cpus: lapicRecords(r).map((l, k) => ({
      apicBase: l.apicBase,
      startUp: r.cpu[String(k)].startUp,
      ...(r.config.lapic ? { id: l.id, tpr: l.tpr, isr: l.isr, irr: l.irr, lvt: l.lvt, initialCount: l.initialCount, currentCount: l.currentCount } : {}),
    })),
    ioapic: r.config.ioapic ? r.apic.ioapic : undefined,
  };
}

function formatRegisters(r: DeviceRecordBody): string[] {
  const lines = ["registers read back:"];
  if (r.config.pic) {
    for (const chip of ["master", "slave"] as const) {
      const c = r.pic[chip];
      lines.push(`  pic ${chip.padEnd(6)}  irr ${hex(c.irr)}  isr ${hex(c.isr)}  imr ${hex(c.imr)}  elcr ${hex(c.elcr)}`);
    }
  }
  if (r.config.pit) {
    r.pit.channels.forEach((c, i) => lines.push(`  pit ${i}        status ${hex(c.status)}  count ${hex(c.count, 4)}`));
    lines.push(`  port 0x61    ${hex(r.pit.port61)}`);
  }
  lapicRecords(r).forEach((l, k) => {
    const start = r.cpu[String(k)].startUp;
    const state = start === START_UP_RESET ? "running" : start === START_UP_WAITING ? "waiting for SIPI" : `started at vector ${hex(start)}`;
    const vectors = (words: number[]) => words.flatMap((w, i) => Array.from({ length: 32 }, (_, b) => ((w >>> b) & 1 ? i * 32 + b : -1))).filter((v) => v >= 0).map((v) => hex(v)).join(",") || "-";
    lines.push(
      `  cpu ${k}        ${state}; apic base ${hex(l.apicBase, 8)}` +
        (r.config.lapic ? `, id ${hex(l.id, 8)}, tpr ${hex(l.tpr)}, isr ${vectors(l.isr)}, irr ${vectors(l.irr)}, timer ${l.currentCount}/${l.initialCount}` : ""),
    );
  });
  if (r.config.ioapic) {
    const unmasked = r.apic.ioapic.entries.map((e, pin) => ({ ...e, pin })).filter((e) => (e.low & IOAPIC_ENTRY_MASKED) === 0);
    lines.push(`  ioapic       id ${hex(r.apic.ioapic.id, 8)}; unmasked: ${unmasked.map((e) => `pin ${e.pin} ${hex(e.low, 8)}/${hex(e.high, 8)}`).join(", ") || "none"}`);
  }
  return lines;
}
