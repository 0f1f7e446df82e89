// VM-exit accounting: a counter per reason and per port, register offset or MSR, and per CPU.
// Counting is a few array increments, cheap enough to leave on for every run.

import { ExitReason, MmioRegion, MsrSlot } from "../abi/codes";
import { MAX_CPUS } from "../board/config";

const PORT_TABLE_BYTES: i32 = 2 * 65536 * 4;
/**
 * The per-port table is static memory, which a fresh instance has zeroed without touching it:
 * a new machine pays for the pages only once exits land in them. (One hypervisor per instance.)
 */
const PORT_TABLE: usize = memory.data(PORT_TABLE_BYTES, 16);

export class ExitCounters {
  byReason: StaticArray<f64> = new StaticArray<f64>(ExitReason.Count);
  /** [direction (0 in, 1 out) × 65536 ports] of u32 */
  byPort: usize = PORT_TABLE;
  private portsCounted: bool = false;
  /** [direction (0 read, 1 write) × region × 256 registers (offset >> 4)] */
  byMmioRegister: StaticArray<u32> = new StaticArray<u32>(2 * MmioRegion.Count * 256);
  /** [direction (0 read, 1 write) × MSR slot] */
  byMsr: StaticArray<u32> = new StaticArray<u32>(2 * MsrSlot.Count);
  /** Exits of each CPU, all reasons together. */
  byCpu: StaticArray<f64> = new StaticArray<f64>(MAX_CPUS);
  /** The CPU whose exits are being counted (the one running when it exits). */
  cpu: i32 = 0;

  clear(): void {
    this.byReason.fill(0);
    this.byCpu.fill(0);
    this.cpu = 0;
    if (this.portsCounted) memory.fill(this.byPort, 0, PORT_TABLE_BYTES);
    this.portsCounted = false;
    this.byMmioRegister.fill(0);
    this.byMsr.fill(0);
  }

  @inline
  io(port: u32, write: bool): void {
    const reason = write ? ExitReason.IoOut : ExitReason.IoIn;
    unchecked((this.byReason[reason] += 1));
    unchecked((this.byCpu[this.cpu] += 1));
    const at = this.byPort + ((<usize>(write ? 65536 : 0) + <usize>(port & 0xffff)) << 2);
    store<u32>(at, load<u32>(at) + 1);
    this.portsCounted = true;
  }

  /** Writes the ports with at least one exit, ascending, as u32s at `list`; returns how many. */
  usedPorts(list: usize): i32 {
    if (!this.portsCounted) return 0;
    let n = 0;
    for (let port: usize = 0; port < 65536; port++) {
      if ((load<u32>(this.byPort + (port << 2)) | load<u32>(this.byPort + ((65536 + port) << 2))) != 0) {
        store<u32>(list + (<usize>n << 2), <u32>port);
        n++;
      }
    }
    return n;
  }

  @inline
  mmio(region: MmioRegion, offset: u32, write: bool): void {
    unchecked((this.byReason[write ? ExitReason.MmioWrite : ExitReason.MmioRead] += 1));
    unchecked((this.byCpu[this.cpu] += 1));
    const i = ((write ? MmioRegion.Count : 0) + <i32>region) * 256 + <i32>((offset >>> 4) & 0xff);
    unchecked((this.byMmioRegister[i] += 1));
  }

  @inline
  msr(msr: u32, write: bool): void {
    unchecked((this.byReason[write ? ExitReason.MsrWrite : ExitReason.MsrRead] += 1));
    unchecked((this.byCpu[this.cpu] += 1));
    let slot = MsrSlot.Other;
    if (msr == 0x10) slot = MsrSlot.Tsc;
    else if (msr == 0x1b) slot = MsrSlot.ApicBase;
    else if (msr == 0x6e0) slot = MsrSlot.TscDeadline;
    else if (msr >= 0x800 && msr <= 0x8ff) slot = MsrSlot.X2Apic;
    unchecked((this.byMsr[(write ? MsrSlot.Count : 0) + <i32>slot] += 1));
  }

  @inline
  externalInterrupt(): void {
    unchecked((this.byReason[ExitReason.ExternalInterrupt] += 1));
    unchecked((this.byCpu[this.cpu] += 1));
  }

  /** An INIT or start-up exit: it happens on the CPU that receives the signal, `target`. */
  cpuSignal(reason: ExitReason, target: i32): void {
    unchecked((this.byReason[reason] += 1));
    unchecked((this.byCpu[target] += 1));
  }
}
