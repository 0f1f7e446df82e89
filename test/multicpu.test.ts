// Several CPUs, each with its own local APIC (spec "Several CPUs", SDM vol. 3 ch. 10): IDs and
// reset state, IPIs of every delivery mode and destination form, lowest-priority arbitration,
// NMI, INIT and start-up, per-CPU timers, I/O APIC routing, ExtINT through every LINT0, x2APIC.

import { describe, expect, it } from "vitest";
import { INTA_NMI, Machine, type MachineOptions } from "../src/core/machine.js";
import { ALL_EXCLUDING_SELF, ALL_INCLUDING_SELF, LEVEL, MSR_APIC_BASE, PERIODIC, REG, SELF, ioEntry, readReg, writeReg } from "./arbitraries/apic.js";

const FIXED = 0 << 8;
const LOWEST = 1 << 8;
const SMI = 2 << 8;
const NMI = 4 << 8;
const INIT = 5 << 8;
const STARTUP = 6 << 8;
const LOGICAL = 1 << 11;
const ASSERT = 1 << 14;
const X2APIC_ENABLE = 0xc00n;

/**
 * N CPUs with the APICs only (no PIC, no PIT): the APs started (unless `waiting`), then every
 * APIC software-enabled (an INIT leaves it disabled).
 */
function smp(cpus: number, options: MachineOptions = {}, waiting = false): Machine {
  const m = Machine.create({ pic: false, pit: false, pitIrq0: false, cpus, ...options });
  if (!waiting) for (let k = 1; k < cpus; k++) startAp(m, k);
  for (let k = 0; k < cpus; k++) onCpu(m, k, () => writeReg(m, REG.svr, 0x1ff));
  return m;
}

function onCpu<T>(m: Machine, k: number, f: () => T): T {
  const before = m.cpu;
  m.selectCpu(k);
  try {
    return f();
  } finally {
    m.selectCpu(before);
  }
}

function sendIpi(m: Machine, low: number, dest = 0): void {
  writeReg(m, REG.icrHigh, dest << 24);
  writeReg(m, REG.icrLow, low);
}

/** Starts CPU k as an OS does: INIT assert, INIT de-assert, start-up. */
function startAp(m: Machine, k: number, vector = 0x9a): void {
  sendIpi(m, INIT | ASSERT | LEVEL, k);
  sendIpi(m, INIT | LEVEL, k);
  sendIpi(m, STARTUP | vector, k);
}

const irrOf = (m: Machine, k: number) => onCpu(m, k, () => readReg(m, REG.irr + ((0x40 >> 5) << 4)));
const intaOn = (m: Machine, k: number) => onCpu(m, k, () => m.inta());

describe("several CPUs: reset", () => {
  it("gives CPU K APIC ID K, and the BSP flag to CPU 0 only", () => {
    const m = Machine.create({ cpus: 4 });
    for (let k = 0; k < 4; k++) {
      m.selectCpu(k);
      expect(readReg(m, REG.id)).toBe(k << 24);
      expect(m.rdmsr(MSR_APIC_BASE)).toBe(k === 0 ? 0xfee00900n : 0xfee00800n);
      expect(m.sipiState()).toBe(k === 0 ? "reset" : "waiting");
    }
  });

  it("refuses a CPU the board lacks, more than 64 CPUs, and several CPUs without local APICs", () => {
    const m = Machine.create({ cpus: 2 });
    expect(() => m.selectCpu(2)).toThrow(/CPUs 0\.\.1/);
    expect(() => Machine.create({ cpus: 65 })).toThrow(/1 to 64/);
    expect(() => Machine.create({ cpus: 2, lapic: false })).toThrow(/lapic/);
    expect(Machine.create({ cpus: 64 }).config.cpus).toBe(64);
  });
});

describe("several CPUs: INIT and start-up", () => {
  it("INIT-SIPI-SIPI starts an AP at the first start-up vector; later start-ups are ignored", () => {
    const m = smp(3, {}, true);
    startAp(m, 1, 0x9a);
    sendIpi(m, STARTUP | 0x9b, 1);
    m.selectCpu(1);
    expect(m.sipiState()).toBe(0x9a);
    m.selectCpu(2);
    expect(m.sipiState()).toBe("waiting");
  });

  it("a waiting CPU takes no interrupt, but its APIC collects requests in IRR", () => {
    const m = smp(2, {}, true);
    sendIpi(m, NMI, 1);
    expect(intaOn(m, 1)).toBe(-1);
    // A software-disabled APIC refuses fixed interrupts: enable it as the AP's own code would not yet.
    onCpu(m, 1, () => writeReg(m, REG.svr, 0x1ff));
    sendIpi(m, FIXED | 0x40, 1);
    expect(irrOf(m, 1) & 1).toBe(1);
    expect(intaOn(m, 1)).toBe(-1);
    sendIpi(m, STARTUP | 0x10, 1);
    expect(intaOn(m, 1)).toBe(INTA_NMI);
    expect(intaOn(m, 1)).toBe(0x40);
  });

  it("INIT resets the target's APIC but its ID and base, and sends an AP back to wait; de-assert changes nothing", () => {
    const m = smp(2);
    onCpu(m, 1, () => {
      writeReg(m, REG.tpr, 0x20);
      writeReg(m, REG.ldr, 0x04000000);
      writeReg(m, REG.id, 0x05000000);
    });
    sendIpi(m, INIT | LEVEL, 5); // de-assert
    expect(onCpu(m, 1, () => readReg(m, REG.tpr))).toBe(0x20);
    sendIpi(m, INIT | ASSERT, 5);
    onCpu(m, 1, () => {
      expect(readReg(m, REG.tpr)).toBe(0);
      expect(readReg(m, REG.ldr)).toBe(0);
      expect(readReg(m, REG.svr)).toBe(0xff);
      expect(readReg(m, REG.id)).toBe(0x05000000);
      expect(m.rdmsr(MSR_APIC_BASE)).toBe(0xfee00800n);
      expect(m.sipiState()).toBe("waiting");
    });
  });

  it("counts INIT and start-up exits on the target CPU under blmvisor, none on bare metal", () => {
    const m = smp(2);
    const e = m.exits();
    expect(e.byReason["init-signal"]).toBe(1);
    expect(e.byReason.sipi).toBe(1);
    expect(e.byCpu).toEqual([0, 2]);
    const bare = smp(2, { policy: "none" });
    expect(bare.exits().total).toBe(0);
  });
});

describe("several CPUs: interprocessor interrupts", () => {
  it("fixed IPIs reach physical, logical flat and logical cluster destinations and the shorthands", () => {
    const m = smp(4);
    // Flat: CPU k has logical bit k.
    for (let k = 0; k < 4; k++) onCpu(m, k, () => writeReg(m, REG.ldr, (1 << k) << 24));
    sendIpi(m, FIXED | LOGICAL | 0x40, 0b1010);
    expect([0, 1, 2, 3].map((k) => irrOf(m, k) & 1)).toEqual([0, 1, 0, 1]);
    for (const k of [1, 3]) intaOn(m, k);
    // Cluster: CPUs 0, 1 in cluster 1, CPUs 2, 3 in cluster 2; member bit = k & 1.
    for (let k = 0; k < 4; k++) onCpu(m, k, () => {
      writeReg(m, REG.dfr, 0x0fffffff);
      writeReg(m, REG.ldr, (((k < 2 ? 1 : 2) << 4) | (1 << (k & 1))) << 24);
    });
    sendIpi(m, FIXED | LOGICAL | 0x41, 0x22);
    expect([0, 1, 2, 3].map((k) => (irrOf(m, k) >>> 1) & 1)).toEqual([0, 0, 0, 1]);
    sendIpi(m, FIXED | 0x42, 2);
    expect([0, 1, 2, 3].map((k) => (irrOf(m, k) >>> 2) & 1)).toEqual([0, 0, 1, 0]);
    sendIpi(m, FIXED | 0x43, 0xff);
    expect([0, 1, 2, 3].map((k) => (irrOf(m, k) >>> 3) & 1)).toEqual([1, 1, 1, 1]);
    onCpu(m, 2, () => sendIpi(m, ALL_EXCLUDING_SELF | 0x44));
    expect([0, 1, 2, 3].map((k) => (irrOf(m, k) >>> 4) & 1)).toEqual([1, 1, 0, 1]);
    onCpu(m, 2, () => sendIpi(m, SELF | 0x45));
    expect([0, 1, 2, 3].map((k) => (irrOf(m, k) >>> 5) & 1)).toEqual([0, 0, 1, 0]);
    onCpu(m, 1, () => sendIpi(m, ALL_INCLUDING_SELF | 0x46));
    expect([0, 1, 2, 3].map((k) => (irrOf(m, k) >>> 6) & 1)).toEqual([1, 1, 1, 1]);
  });

  it("delivery status reads idle at once", () => {
    const m = smp(2);
    sendIpi(m, FIXED | 0x40, 1);
    expect(readReg(m, REG.icrLow) & (1 << 12)).toBe(0);
  });

  it("lowest priority goes to the lowest PPR, a tie to the lowest APIC ID", () => {
    const m = smp(3);
    onCpu(m, 0, () => writeReg(m, REG.tpr, 0x30));
    onCpu(m, 1, () => writeReg(m, REG.tpr, 0x20));
    onCpu(m, 2, () => writeReg(m, REG.tpr, 0x20));
    sendIpi(m, LOWEST | 0x40, 0xff);
    expect([0, 1, 2].map((k) => irrOf(m, k) & 1)).toEqual([0, 1, 0]);
    onCpu(m, 1, () => writeReg(m, REG.tpr, 0x50));
    sendIpi(m, LOWEST | 0x41, 0xff);
    expect([0, 1, 2].map((k) => (irrOf(m, k) >>> 1) & 1)).toEqual([0, 0, 1]);
  });

  it("QEMU: lowest priority goes to the first CPU of the destination set, whatever its priority", () => {
    const m = smp(2, { compatQemu: true });
    onCpu(m, 0, () => writeReg(m, REG.tpr, 0xf0));
    sendIpi(m, LOWEST | 0x40, 0xff);
    expect([0, 1].map((k) => irrOf(m, k) & 1)).toEqual([1, 0]);
  });

  it("an NMI is taken before any maskable interrupt; SMI is accepted and does nothing", () => {
    const m = smp(2);
    sendIpi(m, FIXED | 0x40, 1);
    sendIpi(m, NMI, 1);
    sendIpi(m, SMI, 1);
    expect(intaOn(m, 1)).toBe(INTA_NMI);
    expect(intaOn(m, 1)).toBe(0x40);
    expect(intaOn(m, 1)).toBe(-1);
    expect(m.inta()).toBe(-1);
  });
});

describe("several CPUs: timers, I/O APIC and PIC", () => {
  it("each CPU's APIC timer runs on its own", () => {
    const m = smp(2);
    for (const [k, count] of [[0, 1000], [1, 300]] as const) onCpu(m, k, () => {
      writeReg(m, REG.divide, 0xb);
      writeReg(m, REG.lvtTimer, PERIODIC | (0x30 + k));
      writeReg(m, REG.initialCount, count);
    });
    m.advanceTo(350);
    expect(intaOn(m, 1)).toBe(0x31);
    expect(intaOn(m, 0)).toBe(-1);
    expect(onCpu(m, 1, () => readReg(m, REG.currentCount))).toBe(250);
    expect(onCpu(m, 0, () => readReg(m, REG.currentCount))).toBe(650);
  });

  it("routes I/O APIC entries to any CPU and takes the EOI broadcast from the CPU that sends it", () => {
    const m = smp(2);
    ioEntry(m, 5, LEVEL | 0x50, 1);
    m.setGsi(5, 1);
    expect(intaOn(m, 1)).toBe(0x50);
    expect(intaOn(m, 0)).toBe(-1);
    writeReg(m, REG.eoi, 0); // CPU 0 has nothing in service
    m.setGsi(5, 0);
    m.setGsi(5, 1);
    expect(intaOn(m, 1)).toBe(-1); // remote IRR still set
    onCpu(m, 1, () => writeReg(m, REG.eoi, 0));
    expect(intaOn(m, 1)).toBe(0x50);
    ioEntry(m, 6, LOWEST | 0x60, 0xff);
    onCpu(m, 0, () => writeReg(m, REG.tpr, 0x70));
    m.setGsi(6, 1);
    expect(intaOn(m, 1)).toBe(0x60);
    ioEntry(m, 7, NMI, 1);
    m.setGsi(7, 1);
    expect(intaOn(m, 1)).toBe(INTA_NMI);
  });

  it("the PIC's INT reaches every CPU whose LINT0 is ExtINT; the first to acknowledge takes the vector", () => {
    const m = Machine.create({ cpus: 2, pit: false, pitIrq0: false });
    startAp(m, 1);
    expect(m.exits().byCpu).toEqual([0, 2]);
    m.outb(0x20, 0x11); m.outb(0x21, 0x20); m.outb(0x21, 0x04); m.outb(0x21, 0x01); m.outb(0x21, 0x00);
    for (let k = 0; k < 2; k++) onCpu(m, k, () => { writeReg(m, REG.svr, 0x1ff); writeReg(m, REG.lvtLint0, 0x700); });
    m.setIrq(3, 1);
    expect(intaOn(m, 1)).toBe(0x23);
    expect(intaOn(m, 0)).toBe(-1);
  });
});

describe("several CPUs: x2APIC", () => {
  it("switches by IA32_APIC_BASE bits 10 and 11: MSR registers, read-only ID and derived LDR, no page", () => {
    const m = smp(20);
    m.selectCpu(19);
    m.wrmsr(MSR_APIC_BASE, 0xfee00000n | X2APIC_ENABLE);
    expect(m.rdmsr(0x802)).toBe(19n);
    expect(m.rdmsr(0x80d)).toBe((1n << 16n) | (1n << 3n));
    m.wrmsr(0x802, 5n);
    expect(m.rdmsr(0x802)).toBe(19n);
    expect(m.readl(0xfee00020) >>> 0).toBe(0xffffffff);
    m.writel(0xfee00080, 0x40);
    expect(m.rdmsr(0x808)).toBe(0n);
    m.wrmsr(0x808, 0x20n);
    expect(m.rdmsr(0x808)).toBe(0x20n);
  });

  it("sends with the 64-bit ICR (broadcast 0xffffffff, 32-bit cluster logical IDs) and the SELF IPI register, and EOIs by MSR", () => {
    const m = smp(20);
    for (let k = 0; k < 20; k++) onCpu(m, k, () => m.wrmsr(MSR_APIC_BASE, 0xfee00000n | X2APIC_ENABLE | (k === 0 ? 0x100n : 0n)));
    m.wrmsr(0x830, (0xffffffffn << 32n) | 0x40n);
    for (let k = 0; k < 20; k++) expect(onCpu(m, k, () => m.rdmsr(0x820 + 2)) & 1n).toBe(1n);
    for (let k = 0; k < 20; k++) expect(intaOn(m, k)).toBe(0x40);
    m.wrmsr(0x830, (((1n << 16n) | (1n << 2n)) << 32n) | BigInt(LOGICAL | 0x51));
    expect(intaOn(m, 18)).toBe(0x51);
    expect(intaOn(m, 2)).toBe(-1);
    onCpu(m, 7, () => m.wrmsr(0x83f, 0x62n));
    expect(intaOn(m, 7)).toBe(0x62);
    onCpu(m, 7, () => {
      expect(m.rdmsr(0x810 + 2)).not.toBe(0n);
      m.wrmsr(0x80b, 0n);
      m.wrmsr(0x80b, 0n);
      expect(m.rdmsr(0x810 + 2)).toBe(0n);
    });
  });

  it("an x2APIC guest's EOIs and IPIs cause no exits under blmvisor; every one exits under full", () => {
    for (const policy of ["blmvisor", "full"] as const) {
      const m = smp(2, { policy });
      const before = m.exits().total;
      for (let k = 0; k < 2; k++) onCpu(m, k, () => m.wrmsr(MSR_APIC_BASE, 0xfee00000n | X2APIC_ENABLE | (k === 0 ? 0x100n : 0n)));
      for (let i = 0; i < 10; i++) {
        m.wrmsr(0x830, (1n << 32n) | 0x40n);
        onCpu(m, 1, () => {
          m.inta();
          m.wrmsr(0x80b, 0n);
        });
      }
      const e = m.exits();
      if (policy === "blmvisor") expect(e.total - before).toBe(0);
      else expect(e.byMsr.find((r) => r.msr === "x2apic")?.write).toBe(20);
    }
  });
});
