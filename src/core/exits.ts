// The VM-exit report, read from the core's counters (assembly/hypervisor/exits.ts).

import type { CoreExports } from "./core.js";

/** Exit reasons in the core's ExitReason order. */
export const EXIT_REASONS = ["io-in", "io-out", "mmio-read", "mmio-write", "msr-read", "msr-write", "external-interrupt"] as const;
export type ExitReason = (typeof EXIT_REASONS)[number];
/** MMIO regions and MSR slots in the core's MmioRegion and MsrSlot order. */
const MMIO_REGIONS = ["lapic", "ioapic", "other"] as const;
const MSR_SLOTS = ["0x10", "0x1b", "0x6e0", "other"] as const;

export interface ExitReport {
  total: number;
  byReason: Record<ExitReason, number>;
  /** Ports with at least one exit. */
  byPort: { port: number; in: number; out: number }[];
  /** MMIO registers (region, offset) with at least one exit. */
  byRegister: { region: (typeof MMIO_REGIONS)[number]; offset: number; read: number; write: number }[];
  byMsr: { msr: (typeof MSR_SLOTS)[number]; read: number; write: number }[];
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
  return { total, byReason, byPort, byRegister, byMsr };
}
