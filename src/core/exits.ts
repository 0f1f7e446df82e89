// The VM-exit report, read from the core's counters (assembly/hypervisor/exits.ts).

import { ExitReason as Reason, MmioRegion, MsrSlot } from "../../assembly/abi/codes.js";
import type { CoreExports } from "./core.js";

/** How the report names each of the core's ExitReason, MmioRegion and MsrSlot codes. */
const REASON_NAMES = {
  [Reason.IoIn]: "io-in",
  [Reason.IoOut]: "io-out",
  [Reason.MmioRead]: "mmio-read",
  [Reason.MmioWrite]: "mmio-write",
  [Reason.MsrRead]: "msr-read",
  [Reason.MsrWrite]: "msr-write",
  [Reason.ExternalInterrupt]: "external-interrupt",
  [Reason.InitSignal]: "init-signal",
  [Reason.Sipi]: "sipi",
} as const satisfies Record<Exclude<Reason, Reason.Count>, string>;
const REGION_NAMES = { [MmioRegion.LocalApic]: "lapic", [MmioRegion.IoApic]: "ioapic", [MmioRegion.Other]: "other" } as const satisfies Record<Exclude<MmioRegion, MmioRegion.Count>, string>;
const MSR_NAMES = { [MsrSlot.Tsc]: "0x10", [MsrSlot.ApicBase]: "0x1b", [MsrSlot.TscDeadline]: "0x6e0", [MsrSlot.X2Apic]: "x2apic", [MsrSlot.Other]: "other" } as const satisfies Record<Exclude<MsrSlot, MsrSlot.Count>, string>;

/** Exit reasons in the core's order. */
export const EXIT_REASONS = Object.values(REASON_NAMES);
export type ExitReason = (typeof REASON_NAMES)[keyof typeof REASON_NAMES];
const MMIO_REGIONS = Object.values(REGION_NAMES);
const MSR_SLOTS = Object.values(MSR_NAMES);

export interface ExitReport {
  total: number;
  byReason: Record<ExitReason, number>;
  /** Ports with at least one exit. */
  byPort: { port: number; in: number; out: number }[];
  /** MMIO registers (region, offset) with at least one exit. */
  byRegister: { region: (typeof MMIO_REGIONS)[number]; offset: number; read: number; write: number }[];
  byMsr: { msr: (typeof MSR_SLOTS)[number]; read: number; write: number }[];
  /** Exits of each CPU (index = CPU number), every reason together. */
  byCpu: number[];
}

export function readExits(core: CoreExports): ExitReport {
  const used = core.exitPortsUsed();
  const buf = core.memory.buffer;
  const reasons = new Float64Array(buf, core.exitsByReason(), EXIT_REASONS.length);
  const ports = new Uint32Array(buf, core.exitsByPort(), 2 * 65536);
  const regs = new Uint32Array(buf, core.exitsByMmioRegister(), 2 * MMIO_REGIONS.length * 256);
  const msrs = new Uint32Array(buf, core.exitsByMsr(), 2 * MSR_SLOTS.length);
  const byReason = Object.fromEntries(EXIT_REASONS.map((r, i) => [r, reasons[i]])) as Record<ExitReason, number>;
  // The core lists the ports with exits: no 65536-port scan here.
  const byPort: ExitReport["byPort"] = [...new Uint32Array(buf, core.exitPortList(), used)].map((port) => ({ port, in: ports[port], out: ports[65536 + port] }));
  const byRegister: ExitReport["byRegister"] = [];
  const half = MMIO_REGIONS.length * 256;
  for (let k = 0; k < half; k++) {
    const read = regs[k];
    const write = regs[half + k];
    if (read || write) byRegister.push({ region: MMIO_REGIONS[k >> 8], offset: (k & 0xff) << 4, read, write });
  }
  const byMsr = MSR_SLOTS.map((msr, i) => ({ msr, read: msrs[i], write: msrs[MSR_SLOTS.length + i] })).filter((m) => m.read || m.write);
  const total = reasons.reduce((a, b) => a + b, 0);
  const byCpu = [...new Float64Array(buf, core.exitsByCpu(), core.cpuCount())];
  return { total, byReason, byPort, byRegister, byMsr, byCpu };
}
