// The machine as the hypervisor sees it, for the page's second view: the device record its
// capture reads through the hardware interface and its shadows (never a device's internals),
// laid out per chip, and its VM-exit counters by reason, port, register and MSR.
// Capture reads nothing that changes what the guest sees (see assembly/hypervisor/*/state.ts),
// so the view may be taken between two slices of a running guest. See docs/monitor.md.

import { DeviceStateError, type Machine } from "../core/machine.js";
import type { ExitReport } from "../core/exits.js";

type Fields = Record<string, unknown>;

export interface RedirectionEntry {
  pin: number;
  vector: number;
  deliveryMode: number;
  destinationMode: "physical" | "logical";
  pending: boolean;
  polarity: "high" | "low";
  remoteIrr: boolean;
  trigger: "edge" | "level";
  masked: boolean;
  destination: number;
}

export interface MachineView {
  virtualNs: number;
  running: boolean;
  /** Why there is no device view (a policy that keeps no shadows). */
  unavailable?: string;
  pic?: { master: Fields; slave: Fields };
  pit?: { port61: number; channels: Fields[] };
  /** One per CPU. */
  lapics: Fields[];
  ioapic?: { id: number; ioregsel: number; entries: RedirectionEntry[] };
  exits: ExitReport;
}

export function machineView(machine: Machine, virtualNs: number, running: boolean): MachineView {
  const exits = machine.exits();
  let record: Fields;
  try {
    record = machine.capture() as unknown as Fields;
  } catch (e) {
    if (e instanceof DeviceStateError) return { virtualNs, running, unavailable: e.message, lapics: [], exits };
    throw e;
  }
  const pic = record.pic as Fields | undefined;
  const pit = record.pit as Fields | undefined;
  const apic = (record.apic ?? {}) as Fields;
  const picShadow = pic?.shadow as Fields | undefined;
  const pitShadow = pit?.shadow as { channels: Fields[] } | undefined;
  const ioapic = apic.ioapic as { id: number; ioregsel: number; entries: { low: number; high: number }[] } | undefined;
  const config = record.config as Fields;
  return {
    virtualNs,
    running,
    pic: pic && config.pic ? { master: chipHalf(pic, picShadow, "master"), slave: chipHalf(pic, picShadow, "slave") } : undefined,
    pit:
      pit && config.pit
        ? { port61: pit.port61 as number, channels: (pit.channels as Fields[]).map((c, i) => ({ ...c, ...pick(pitShadow?.channels[i] ?? {}, ["mode", "rwMode", "bcd", "countRegister"]) })) }
        : undefined,
    // A record of several CPUs lists them; one of one CPU names its local APIC.
    lapics: Array.isArray(apic.lapics) ? (apic.lapics as Fields[]) : apic.lapic && config.lapic ? [apic.lapic as Fields] : [],
    ioapic: ioapic && config.ioapic ? { id: ioapic.id, ioregsel: ioapic.ioregsel, entries: ioapic.entries.map(redirection) } : undefined,
    exits,
  };
}

/** One 8259A: what reads back (IRR, ISR, IMR, ELCR) and what only the shadow knows (ICWs, modes). */
function chipHalf(pic: Fields, shadow: Fields | undefined, half: "master" | "slave"): Fields {
  const { pollStatus: _poll, ...modes } = (shadow?.[half] ?? {}) as Fields;
  return { ...(pic[half] as Fields), ...modes };
}

function pick(o: Fields, keys: string[]): Fields {
  return Object.fromEntries(keys.filter((k) => k in o).map((k) => [k, o[k]]));
}

/** An 82093AA redirection table entry, decoded from its two 32-bit halves. */
export function redirection({ low, high }: { low: number; high: number }, pin: number): RedirectionEntry {
  return {
    pin,
    vector: low & 0xff,
    deliveryMode: (low >>> 8) & 7,
    destinationMode: low & (1 << 11) ? "logical" : "physical",
    pending: (low & (1 << 12)) !== 0,
    polarity: low & (1 << 13) ? "low" : "high",
    remoteIrr: (low & (1 << 14)) !== 0,
    trigger: low & (1 << 15) ? "level" : "edge",
    masked: (low & (1 << 16)) !== 0,
    destination: high >>> 24,
  };
}
