// The text `blmv import-qemu-state` prints: what the stream held, what was skipped, the rebuilt
// machine's registers as read back through the interface, and the named exceptions.
// docs/qemu-state.md.

import { LVT_NAMES, MpState, redirectionFields } from "../kvm/layout.js";
import type { KvmPicState, KvmPitChannelState } from "../kvm/layout.js";
import type { KvmState } from "../kvm/state.js";
import type { QemuImport } from "./import.js";

const hex = (n: number | bigint, width = 2) => `0x${n.toString(16).padStart(width, "0")}`;
const MP_STATE_NAMES: Record<number, string> = {
  [MpState.Runnable]: "running",
  [MpState.Uninitialized]: "waiting for INIT",
  [MpState.InitReceived]: "waiting for a start-up IPI",
  [MpState.Halted]: "halted",
  [MpState.SipiReceived]: "start-up IPI received",
};

export function formatStreamSummary(imp: Pick<QemuImport, "stream" | "skipped">): string[] {
  const s = imp.stream;
  const lines = [
    `stream: machine ${s.machine ?? "(no configuration section)"}, capabilities ${s.capabilities.join(", ") || "none"}, ` +
      (s.descriptionOffset === undefined ? "no JSON description" : `JSON description at byte ${s.descriptionOffset}`),
    `ram: ${s.ram.blocks.length} blocks (${s.ram.blocks.map((b) => b.name).join(", ")}); ${s.ram.pages} pages and ${s.ram.zeroPages} zero pages skipped`,
    "sections:",
  ];
  for (const x of s.sections) {
    if (x.kind !== "full") continue;
    const skip = imp.skipped.find((k) => k.name === x.name && k.instance === x.instance);
    lines.push(`  ${`${x.name}/${x.instance}`.padEnd(28)} v${String(x.version).padEnd(3)} bytes ${x.offset}..${x.end}  ${skip ? `skipped: ${skip.reason}` : "used"}`);
  }
  if (s.layoutNotes.length) lines.push("layout notes:", ...s.layoutNotes.map((n) => `  ${n}`));
  return lines;
}

function picLine(name: string, p: KvmPicState): string {
  return (
    `  pic ${name}: irr=${hex(p.irr)} imr=${hex(p.imr)} isr=${hex(p.isr)} priority_add=${p.priorityAdd} irq_base=${hex(p.irqBase)} ` +
    `read_isr=${p.readRegSelect} elcr=${hex(p.elcr)} aeoi=${p.autoEoi} sfnm=${p.specialFullyNested} special_mask=${p.specialMask} init_state=${p.initState}`
  );
}

function pitLine(i: number, c: KvmPitChannelState): string {
  return `  pit channel ${i}: mode ${c.mode} rw ${c.rwMode} bcd ${c.bcd} gate ${c.gate} count ${c.count} loaded at ${c.countLoadTime} ns${c.countLatched ? ` latched ${c.latchedCount}` : ""}${c.statusLatched ? ` status ${hex(c.status)}` : ""}`;
}

/** The registers of `state` (read back from the rebuilt machine), one device per block. */
export function formatRegisters(state: KvmState): string[] {
  const lines = [picLine("master", state.picMaster), picLine("slave", state.picSlave)];
  state.pit.channels.forEach((c, i) => lines.push(pitLine(i, c)));
  const io = state.ioapic;
  lines.push(`  ioapic: id ${io.id} ioregsel ${hex(io.ioregsel)}`);
  io.redirtbl.forEach((e, pin) => {
    const f = redirectionFields(e);
    if (!f.mask || f.vector) lines.push(`    pin ${String(pin).padEnd(2)} ${hex(e, 16)} vec=${f.vector} dest=${f.destId} ${f.trigMode ? "level" : "edge"}${f.remoteIrr ? " remote-irr" : ""}${f.mask ? " masked" : ""}`);
  });
  state.cpus.forEach((c, k) => {
    const l = c.lapic;
    lines.push(
      `  cpu ${k}: apic base ${hex(c.sregs.apicBase, 8)}, ${MP_STATE_NAMES[c.mpState.mpState] ?? `activity ${c.mpState.mpState}`}`,
      `    lapic id ${hex(l.id, 8)} tpr ${hex(l.tpr)} ppr ${hex(l.ppr)} ldr ${hex(l.ldr, 8)} dfr ${hex(l.dfr, 8)} svr ${hex(l.svr, 3)} esr ${hex(l.esr)}`,
      `    lvt ${LVT_NAMES.map((n) => `${n.slice(3).toLowerCase()}=${hex(l[n], 8)}`).join(" ")}`,
      `    timer divide ${hex(l.divideConfig, 1)} initial ${l.initialCount} current ${l.currentCount}; icr ${hex(l.icrHigh, 8)}:${hex(l.icrLow, 8)}`,
      `    isr ${vectors(l.isr)}  irr ${vectors(l.irr)}  tmr ${vectors(l.tmr)}`,
    );
  });
  return lines;
}

/** The vectors set in a 256-bit register, or "(none)". */
export function vectors(words: readonly number[]): string {
  const out: number[] = [];
  words.forEach((w, i) => {
    for (let b = 0; b < 32; b++) if ((w >>> b) & 1) out.push(i * 32 + b);
  });
  return out.length ? out.map((v) => hex(v)).join(" ") : "(none)";
}
