// The local APIC as the SDM describes it, and QEMU 7.2's departures under compatQemu.

import { describe, expect, it } from "vitest";
import { Machine } from "../src/core/machine.js";
import {
  ALL_EXCLUDING_SELF, ALL_INCLUDING_SELF, LAPIC, LEVEL, MASKED, MSR_APIC_BASE, MSR_TSC_DEADLINE, PERIODIC, REG, SELF,
  TSC_DEADLINE, apicMachine, bitOf, ioEntry, ioRead, lapicOf, readReg, writeReg,
} from "./arbitraries/apic.js";

/** An APIC-only machine with the local APIC software-enabled. */
function enabled(options: Parameters<typeof apicMachine>[0] = {}): Machine {
  const m = apicMachine(options);
  writeReg(m, REG.svr, 0x1ff);
  return m;
}

const selfIpi = (m: Machine, v: number) => writeReg(m, REG.icrLow, SELF | v);
const irrHas = (m: Machine, v: number) => bitOf(lapicOf(m).irr, v);
const tmrHas = (m: Machine, v: number) => bitOf(lapicOf(m).tmr, v);
const isrHas = (m: Machine, v: number) => bitOf(lapicOf(m).isr, v);
/** The ESR as a driver reads it: write, then read. */
function esr(m: Machine): number {
  writeReg(m, REG.esr, 0);
  return readReg(m, REG.esr);
}

describe("local APIC registers", () => {
  it("comes out of reset as the SDM says: version 0x50014, SVR 0xff, DFR all ones, every LVT masked", () => {
    const m = apicMachine();
    expect(m.rdmsr(MSR_APIC_BASE)).toBe(0xfee00900n);
    expect(readReg(m, REG.version)).toBe(0x00050014);
    expect(readReg(m, REG.id)).toBe(0);
    expect(readReg(m, REG.svr)).toBe(0xff);
    expect(readReg(m, REG.dfr)).toBe(0xffffffff);
    for (let i = 0; i < 6; i++) expect(readReg(m, REG.lvtTimer + 0x10 * i)).toBe(MASKED);
    expect(readReg(m, REG.divide)).toBe(0);
  });

  it("QEMU: LINT0 of the BSP comes out of reset as ExtINT, unmasked", () => {
    const m = apicMachine({ compatQemu: true });
    expect(readReg(m, REG.lvtLint0)).toBe(0x700);
    expect(readReg(m, REG.lvtLint1)).toBe(MASKED);
  });

  it("keeps only the writable bits of each register", () => {
    const m = enabled();
    writeReg(m, REG.id, 0xffffffff);
    writeReg(m, REG.tpr, 0xffffffff);
    writeReg(m, REG.ldr, 0xffffffff);
    writeReg(m, REG.dfr, 0x0);
    writeReg(m, REG.icrHigh, 0xffffffff);
    writeReg(m, REG.divide, 0xffffffff);
    for (let i = 0; i < 6; i++) writeReg(m, REG.lvtTimer + 0x10 * i, 0xffffffff);
    expect(readReg(m, REG.id)).toBe(0xff000000);
    expect(readReg(m, REG.tpr)).toBe(0xff);
    expect(readReg(m, REG.ldr)).toBe(0xff000000);
    expect(readReg(m, REG.dfr)).toBe(0x0fffffff);
    expect(readReg(m, REG.icrHigh)).toBe(0xff000000);
    expect(readReg(m, REG.divide)).toBe(0xb);
    expect([0, 1, 2, 3, 4, 5].map((i) => readReg(m, REG.lvtTimer + 0x10 * i))).toEqual([
      0x000700ff, 0x000107ff, 0x000107ff, 0x0001a7ff, 0x0001a7ff, 0x000100ff,
    ]);
    writeReg(m, REG.svr, 0xffffffff);
    expect(readReg(m, REG.svr)).toBe(0x3ff);
    writeReg(m, REG.icrLow, 0xfff3f000 | ALL_EXCLUDING_SELF);
    expect(readReg(m, REG.icrLow)).toBe(0x000cc000); // delivery status reads idle
  });

  it("QEMU: keeps LVTs and the ICR as written, and only 9 bits of the SVR", () => {
    const m = enabled({ compatQemu: true });
    writeReg(m, REG.lvtPerf, 0xfffeffff);
    writeReg(m, REG.icrLow, 0xfff3f000 | ALL_EXCLUDING_SELF);
    writeReg(m, REG.svr, 0xffffffff);
    expect(readReg(m, REG.lvtPerf)).toBe(0xfffeffff);
    expect(readReg(m, REG.icrLow)).toBe((0xfff3f000 | ALL_EXCLUDING_SELF) >>> 0);
    expect(readReg(m, REG.svr)).toBe(0x1ff);
  });

  it("ignores writes to read-only registers", () => {
    const m = enabled();
    for (const reg of [REG.version, REG.apr, REG.ppr, REG.isr, REG.tmr + 0x10, REG.irr + 0x70, REG.currentCount]) {
      writeReg(m, reg, 0xffffffff);
    }
    expect(readReg(m, REG.version)).toBe(0x00050014);
    expect(lapicOf(m)).toMatchObject({ isr: Array(8).fill(0), irr: Array(8).fill(0), tmr: Array(8).fill(0) });
    expect(esr(m)).toBe(0);
  });
});

describe("priorities", () => {
  it("computes PPR from TPR and the highest in-service class (SDM 10.8.3.1)", () => {
    const m = enabled();
    writeReg(m, REG.tpr, 0x45);
    expect(readReg(m, REG.ppr)).toBe(0x45);
    writeReg(m, REG.tpr, 0);
    selfIpi(m, 0x61);
    expect(m.inta()).toBe(0x61);
    expect(readReg(m, REG.ppr)).toBe(0x60);
    writeReg(m, REG.tpr, 0x45);
    expect(readReg(m, REG.ppr)).toBe(0x60);
    writeReg(m, REG.tpr, 0x6f);
    expect(readReg(m, REG.ppr)).toBe(0x6f);
    writeReg(m, REG.tpr, 0x75);
    expect(readReg(m, REG.ppr)).toBe(0x75);
  });

  it("delivers only a vector whose class is above the PPR's", () => {
    const m = enabled();
    writeReg(m, REG.tpr, 0x50);
    selfIpi(m, 0x5f);
    expect(m.inta()).toBe(-1);
    selfIpi(m, 0x61);
    expect(m.inta()).toBe(0x61);
    expect(m.inta()).toBe(-1); // 0x5f: class 5 is not above PPR 0x60
    writeReg(m, REG.eoi, 0);
    writeReg(m, REG.tpr, 0x4f);
    expect(m.inta()).toBe(0x5f);
    selfIpi(m, 0x50);
    expect(m.inta()).toBe(-1); // same class as the one in service
    writeReg(m, REG.eoi, 0);
    expect(m.inta()).toBe(0x50);
  });

  it("computes APR as the highest of TPR, ISR and IRR classes; QEMU reads 0", () => {
    const m = enabled();
    writeReg(m, REG.tpr, 0x35);
    expect(readReg(m, REG.apr)).toBe(0x35);
    writeReg(m, REG.tpr, 0x85);
    selfIpi(m, 0x61);
    expect(readReg(m, REG.apr)).toBe(0x85);
    writeReg(m, REG.tpr, 0x25);
    expect(readReg(m, REG.apr)).toBe(0x60);
    const q = enabled({ compatQemu: true });
    writeReg(q, REG.tpr, 0x35);
    expect(readReg(q, REG.apr)).toBe(0);
  });

  it("QEMU: a PPR of 0 lets even a class-0 vector through", () => {
    const q = enabled({ compatQemu: true });
    selfIpi(q, 0x05);
    expect(q.inta()).toBe(0x05);
    selfIpi(q, 0x03);
    expect(q.inta()).toBe(0x03); // PPR is still 0: ISR 0x05 has class 0
  });
});

describe("errors", () => {
  it("ESR is write-then-read: a write latches the errors so far and clears them", () => {
    const m = enabled();
    readReg(m, REG.unimplemented);
    expect(readReg(m, REG.esr)).toBe(0);
    writeReg(m, REG.esr, 0);
    expect(readReg(m, REG.esr)).toBe(0x80);
    expect(readReg(m, REG.esr)).toBe(0x80);
    writeReg(m, REG.esr, 0);
    expect(readReg(m, REG.esr)).toBe(0);
  });

  it("flags illegal vectors: sent (ICR) and received (I/O APIC message, local timer)", () => {
    const m = enabled();
    selfIpi(m, 0x05);
    expect(irrHas(m, 5)).toBe(false);
    expect(esr(m)).toBe(0x20);
    ioEntry(m, 20, 0x07);
    m.setGsi(20, 1);
    expect(irrHas(m, 7)).toBe(false);
    expect(esr(m)).toBe(0x40);
    writeReg(m, REG.lvtTimer, 0x09);
    writeReg(m, REG.initialCount, 10);
    m.advanceTo(m.now() + 20);
    expect(esr(m)).toBe(0x40);
    expect(lapicOf(m).irr).toEqual(Array(8).fill(0));
  });

  it("raises the error LVT on an error", () => {
    const m = enabled();
    writeReg(m, REG.lvtError, 0xfe);
    readReg(m, 0x3f0);
    expect(m.inta()).toBe(0xfe);
    writeReg(m, REG.lvtError, 0x02); // an illegal error vector is one more error, not a loop
    readReg(m, 0x3f0);
    expect(esr(m)).toBe(0xc0);
  });

  it("QEMU: only illegal addresses set the ESR, readable at once, and writes do not clear it", () => {
    const q = enabled({ compatQemu: true });
    selfIpi(q, 0x05);
    expect(irrHas(q, 5)).toBe(true);
    readReg(q, REG.unimplemented);
    expect(readReg(q, REG.esr)).toBe(0x80);
    writeReg(q, REG.esr, 0);
    expect(readReg(q, REG.esr)).toBe(0x80);
  });
});

describe("timer", () => {
  it("periodic: counts down from the load, reloads on reaching 0, interrupts each period", () => {
    const m = enabled();
    writeReg(m, REG.divide, 0xb); // divide by 1
    writeReg(m, REG.lvtTimer, PERIODIC | 0x40);
    m.advanceTo(5000);
    writeReg(m, REG.initialCount, 1000);
    expect(readReg(m, REG.currentCount)).toBe(1000);
    m.advanceTo(5001);
    expect(readReg(m, REG.currentCount)).toBe(999);
    m.advanceTo(5999);
    expect(readReg(m, REG.currentCount)).toBe(1);
    expect(m.inta()).toBe(-1);
    m.advanceTo(6000);
    expect(readReg(m, REG.currentCount)).toBe(1000);
    expect(m.inta()).toBe(0x40);
    writeReg(m, REG.eoi, 0);
    m.advanceTo(6999);
    expect(m.inta()).toBe(-1);
    m.advanceTo(7000);
    expect(m.inta()).toBe(0x40);
  });

  it("counts divided periods of the bus clock exactly (divide 16 at 100 MHz)", () => {
    const m = enabled({ apicBusHz: 100_000_000 });
    writeReg(m, REG.divide, 0x3);
    writeReg(m, REG.lvtTimer, PERIODIC | 0x40);
    writeReg(m, REG.initialCount, 3);
    // One divided period is 16 bus cycles of 10 ns.
    m.advanceTo(159);
    expect(readReg(m, REG.currentCount)).toBe(3);
    m.advanceTo(160);
    expect(readReg(m, REG.currentCount)).toBe(2);
    m.advanceTo(479);
    expect(readReg(m, REG.currentCount)).toBe(1);
    expect(m.inta()).toBe(-1);
    m.advanceTo(480);
    expect(readReg(m, REG.currentCount)).toBe(3);
    expect(m.inta()).toBe(0x40);
  });

  it("uses every divide encoding", () => {
    const divisors: Record<number, number> = { 0x0: 2, 0x1: 4, 0x2: 8, 0x3: 16, 0x8: 32, 0x9: 64, 0xa: 128, 0xb: 1 };
    for (const [code, divisor] of Object.entries(divisors)) {
      const m = enabled();
      writeReg(m, REG.divide, Number(code));
      writeReg(m, REG.initialCount, 100);
      m.advanceTo(divisor - 1);
      expect(readReg(m, REG.currentCount), `divide ${code}`).toBe(100);
      m.advanceTo(divisor * 7);
      expect(readReg(m, REG.currentCount), `divide ${code}`).toBe(93);
    }
  });

  it("one-shot: stops at 0 after one interrupt; writing 0 stops the count", () => {
    const m = enabled();
    writeReg(m, REG.divide, 0xb);
    writeReg(m, REG.lvtTimer, 0x41);
    writeReg(m, REG.initialCount, 50);
    m.advanceTo(49);
    expect(m.inta()).toBe(-1);
    m.advanceTo(50);
    expect(readReg(m, REG.currentCount)).toBe(0);
    expect(m.inta()).toBe(0x41);
    writeReg(m, REG.eoi, 0);
    m.advanceTo(10_000);
    expect(m.inta()).toBe(-1);
    expect(readReg(m, REG.initialCount)).toBe(50);
    writeReg(m, REG.initialCount, 50);
    m.advanceTo(10_020);
    writeReg(m, REG.initialCount, 0);
    expect(readReg(m, REG.currentCount)).toBe(0);
    m.advanceTo(20_000);
    expect(m.inta()).toBe(-1);
  });

  it("sets IRR once for any number of periods that expire while it cannot be taken, without stepping per period", () => {
    const m = enabled();
    writeReg(m, REG.divide, 0xb);
    writeReg(m, REG.lvtTimer, PERIODIC | 0x40);
    writeReg(m, REG.initialCount, 1);
    const started = performance.now();
    m.advanceTo(1e13); // ten trillion periods
    expect(performance.now() - started).toBeLessThan(1000);
    expect(m.inta()).toBe(0x40);
    expect(m.inta()).toBe(-1);
    expect(m.core.nextTimerEvent()).toBe(1e13 + 1);
  });

  it("after a long-pending timer request is taken, the next one comes at the first expiry after the acknowledge", () => {
    const m = enabled();
    writeReg(m, REG.divide, 0xb);
    writeReg(m, REG.lvtTimer, PERIODIC | 0x40);
    writeReg(m, REG.initialCount, 100);
    m.advanceTo(1050); // expiries at 100, 200, … 1000 all fold into one request
    expect(m.inta()).toBe(0x40);
    writeReg(m, REG.eoi, 0);
    m.advanceTo(1099);
    expect(m.inta()).toBe(-1);
    m.advanceTo(1100);
    expect(m.inta()).toBe(0x40);
  });

  it("a masked timer counts on and raises nothing", () => {
    const m = enabled();
    writeReg(m, REG.divide, 0xb);
    writeReg(m, REG.lvtTimer, PERIODIC | MASKED | 0x40);
    writeReg(m, REG.initialCount, 100);
    m.advanceTo(250);
    expect(readReg(m, REG.currentCount)).toBe(50);
    expect(m.inta()).toBe(-1);
    writeReg(m, REG.lvtTimer, PERIODIC | 0x40);
    m.advanceTo(299);
    expect(m.inta()).toBe(-1);
    m.advanceTo(300);
    expect(m.inta()).toBe(0x40);
  });

  it("TSC deadline: fires when floor(t·tscHz/1e9) reaches it, then reads back 0", () => {
    const m = enabled({ tscHz: 3_000_000_000 });
    writeReg(m, REG.lvtTimer, TSC_DEADLINE | 0x42);
    m.wrmsr(MSR_TSC_DEADLINE, 3001n); // reached at t = 1000.33… ns, so at 1001
    expect(m.rdmsr(MSR_TSC_DEADLINE)).toBe(3001n);
    m.advanceTo(1000);
    expect(m.inta()).toBe(-1);
    m.advanceTo(1001);
    expect(m.rdmsr(MSR_TSC_DEADLINE)).toBe(0n);
    expect(m.inta()).toBe(0x42);
    expect(readReg(m, REG.currentCount)).toBe(0);
  });

  it("TSC deadline: 0 disarms, a past value fires at once, other modes ignore the MSR, a mode change disarms", () => {
    const m = enabled();
    writeReg(m, REG.lvtTimer, TSC_DEADLINE | 0x42);
    m.wrmsr(MSR_TSC_DEADLINE, 500n);
    m.wrmsr(MSR_TSC_DEADLINE, 0n);
    m.advanceTo(1000);
    expect(m.inta()).toBe(-1);
    m.wrmsr(MSR_TSC_DEADLINE, 999n);
    expect(m.inta()).toBe(0x42);
    writeReg(m, REG.eoi, 0);
    m.wrmsr(MSR_TSC_DEADLINE, 5000n);
    writeReg(m, REG.lvtTimer, 0x42); // to one-shot: disarmed
    writeReg(m, REG.lvtTimer, TSC_DEADLINE | 0x42);
    expect(m.rdmsr(MSR_TSC_DEADLINE)).toBe(0n);
    m.advanceTo(6000);
    expect(m.inta()).toBe(-1);
    writeReg(m, REG.lvtTimer, 0x42);
    m.wrmsr(MSR_TSC_DEADLINE, 7000n);
    expect(m.rdmsr(MSR_TSC_DEADLINE)).toBe(0n);
    writeReg(m, REG.lvtTimer, TSC_DEADLINE | 0x42);
    writeReg(m, REG.initialCount, 100); // ignored in TSC-deadline mode
    expect(readReg(m, REG.initialCount)).toBe(0);
  });

  it("a masked TSC deadline passes silently", () => {
    const m = enabled();
    writeReg(m, REG.lvtTimer, TSC_DEADLINE | MASKED | 0x42);
    m.wrmsr(MSR_TSC_DEADLINE, 100n);
    m.advanceTo(200);
    expect(m.rdmsr(MSR_TSC_DEADLINE)).toBe(0n);
    writeReg(m, REG.lvtTimer, TSC_DEADLINE | 0x42);
    m.advanceTo(300);
    expect(m.inta()).toBe(-1);
  });

  it("QEMU: counts I…0 and expires one period after 0 (period I+1); no TSC-deadline timer", () => {
    const q = enabled({ compatQemu: true });
    writeReg(q, REG.divide, 0xb);
    writeReg(q, REG.lvtTimer, PERIODIC | 0x40);
    writeReg(q, REG.initialCount, 10);
    q.advanceTo(10);
    expect(readReg(q, REG.currentCount)).toBe(0);
    expect(q.inta()).toBe(-1);
    q.advanceTo(11);
    expect(readReg(q, REG.currentCount)).toBe(10);
    expect(q.inta()).toBe(0x40);
    writeReg(q, REG.eoi, 0);
    writeReg(q, REG.lvtTimer, TSC_DEADLINE | 0x40); // bit 18 means nothing to QEMU: one-shot
    q.wrmsr(MSR_TSC_DEADLINE, 5n);
    expect(q.rdmsr(MSR_TSC_DEADLINE)).toBe(0n);
    writeReg(q, REG.initialCount, 10);
    q.advanceTo(21);
    expect(q.inta()).toBe(-1);
    q.advanceTo(22);
    expect(q.inta()).toBe(0x40);
    q.advanceTo(100);
    expect(readReg(q, REG.currentCount)).toBe(0);
  });

  it("QEMU: matches a recorded Linux calibration (divide 16, initial 0xfffffff) read for read", () => {
    const q = enabled({ compatQemu: true });
    writeReg(q, REG.lvtTimer, 0x000300ec);
    writeReg(q, REG.divide, 0x3);
    const t0 = 4_676_619_691;
    q.advanceTo(t0);
    writeReg(q, REG.initialCount, 0x0fffffff);
    const reads: [number, number][] = [
      [4_680_619_692, 0x0ffc2f6f],
      [4_684_619_664, 0x0ff85ee1],
      [4_688_619_639, 0x0ff48e53],
      [4_692_619_611, 0x0ff0bdc4],
    ];
    for (const [t, value] of reads) {
      q.advanceTo(t);
      expect(readReg(q, REG.currentCount)).toBe(value);
    }
  });

  it("QEMU: a divider change re-derives the count from the load time; the datasheet model keeps the count", () => {
    const q = enabled({ compatQemu: true });
    const m = enabled();
    for (const x of [q, m]) {
      writeReg(x, REG.divide, 0xb);
      writeReg(x, REG.initialCount, 1000);
      x.advanceTo(100);
      writeReg(x, REG.divide, 0x0); // divide by 2
    }
    expect(readReg(q, REG.currentCount)).toBe(950);
    expect(readReg(m, REG.currentCount)).toBe(900);
    m.advanceTo(102);
    expect(readReg(m, REG.currentCount)).toBe(899);
  });
});

describe("EOI and the I/O APIC", () => {
  it("broadcasts the EOI of a level-triggered vector: remote IRR clears and a held line delivers again", () => {
    const m = enabled();
    ioEntry(m, 9, LEVEL | 0x39);
    m.setGsi(9, 1);
    expect(tmrHas(m, 0x39)).toBe(true);
    expect(ioRead(m, 0x10 + 18) & (1 << 14)).not.toBe(0);
    expect(m.inta()).toBe(0x39);
    writeReg(m, REG.eoi, 0);
    expect(irrHas(m, 0x39)).toBe(true); // re-delivered: the line is still high
    expect(m.inta()).toBe(0x39);
    m.setGsi(9, 0);
    writeReg(m, REG.eoi, 0);
    expect(ioRead(m, 0x10 + 18) & (1 << 14)).toBe(0);
    expect(m.inta()).toBe(-1);
  });

  it("does not broadcast an edge vector's EOI, and EOI clears the highest in-service vector", () => {
    const m = enabled();
    ioEntry(m, 9, LEVEL | 0x39);
    m.setGsi(9, 1);
    expect(m.inta()).toBe(0x39);
    selfIpi(m, 0x81);
    expect(m.inta()).toBe(0x81);
    writeReg(m, REG.eoi, 0); // 0x81, edge: the I/O APIC hears nothing
    expect(isrHas(m, 0x81)).toBe(false);
    expect(isrHas(m, 0x39)).toBe(true);
    expect(ioRead(m, 0x10 + 18) & (1 << 14)).not.toBe(0);
  });
});

describe("LINT0 and the PIC", () => {
  function withPic(compatQemu = false): Machine {
    const m = Machine.create({ pit: false, pitIrq0: false, compatQemu });
    m.outb(0x20, 0x11);
    m.outb(0x21, 0x20);
    m.outb(0x21, 0x04);
    m.outb(0x21, 0x01);
    m.outb(0x21, 0x00);
    return m;
  }

  it("an ExtINT LINT0 runs a PIC acknowledge; masked it does not", () => {
    const m = withPic();
    m.setIrq(1, 1);
    expect(m.inta()).toBe(-1); // reset: LINT0 masked
    writeReg(m, REG.svr, 0x1ff);
    writeReg(m, REG.lvtLint0, 0x700);
    expect(m.inta()).toBe(0x21);
  });

  it("QEMU: LINT0 is ExtINT from reset, and a software-disabled APIC still passes it", () => {
    const q = withPic(true);
    q.setIrq(1, 1);
    expect(q.inta()).toBe(0x21);
  });

  it("a level-triggered fixed LINT0 holds remote IRR until the EOI of its vector, then delivers again", () => {
    const m = withPic();
    writeReg(m, REG.svr, 0x1ff);
    writeReg(m, REG.lvtLint0, LEVEL | 0x55);
    m.setIrq(1, 1);
    expect(readReg(m, REG.lvtLint0)).toBe(LEVEL | (1 << 14) | 0x55);
    expect(tmrHas(m, 0x55)).toBe(true);
    expect(m.inta()).toBe(0x55);
    expect(m.inta()).toBe(-1);
    writeReg(m, REG.eoi, 0);
    expect(irrHas(m, 0x55)).toBe(true);
    m.outb(0x21, 0x02); // the PIC masks IRQ1: its INT output, LINT0, falls
    expect(m.inta()).toBe(0x55);
    writeReg(m, REG.eoi, 0);
    expect(readReg(m, REG.lvtLint0)).toBe(LEVEL | 0x55);
    expect(m.inta()).toBe(-1);
  });

  it("QEMU: LINT0 falling withdraws the held timer's vector and the timer runs on from then, the clock firing it", () => {
    const q = withPic(true);
    writeReg(q, REG.svr, 0x1ff);
    writeReg(q, REG.lvtLint0, LEVEL | 0x40);
    writeReg(q, REG.lvtTimer, PERIODIC | 0x40);
    writeReg(q, REG.initialCount, 1000);
    q.advanceTo(q.nextTimerEvent());
    expect(irrHas(q, 0x40)).toBe(true);
    q.setIrq(1, 1);
    q.outb(0x21, 0x02); // the PIC masks IRQ1: INT, and with it LINT0, falls and takes 0x40 out of IRR
    expect(irrHas(q, 0x40)).toBe(false);
    const next = q.nextTimerEvent();
    expect(next).toBeGreaterThan(q.now());
    // Running the clock past the released timer's next expiry fires it, with no register access in between.
    q.advanceTo(next);
    expect(irrHas(q, 0x40)).toBe(true);
  });
});

describe("software and global disable", () => {
  it("software-disabled: LVT masks are forced and stay set; fixed interrupts are discarded", () => {
    const m = enabled();
    writeReg(m, REG.lvtTimer, 0x40);
    writeReg(m, REG.svr, 0xff);
    expect(readReg(m, REG.lvtTimer)).toBe(MASKED | 0x40);
    writeReg(m, REG.lvtError, 0x41);
    expect(readReg(m, REG.lvtError)).toBe(MASKED | 0x41);
    selfIpi(m, 0x50);
    expect(irrHas(m, 0x50)).toBe(false);
    writeReg(m, REG.svr, 0x1ff);
    expect(readReg(m, REG.lvtTimer)).toBe(MASKED | 0x40);
  });

  it("software-disabled: IRR and ISR are held, not delivered", () => {
    const m = enabled();
    selfIpi(m, 0x50);
    selfIpi(m, 0x60);
    expect(m.inta()).toBe(0x60);
    writeReg(m, REG.svr, 0xff);
    expect(m.inta()).toBe(-1);
    expect(isrHas(m, 0x60) && irrHas(m, 0x50)).toBe(true);
    writeReg(m, REG.svr, 0x1ff);
    writeReg(m, REG.eoi, 0);
    expect(m.inta()).toBe(0x50);
  });

  it("QEMU: software disable neither masks LVTs nor discards requests", () => {
    const q = enabled({ compatQemu: true });
    writeReg(q, REG.lvtTimer, 0x40);
    writeReg(q, REG.svr, 0xff);
    expect(readReg(q, REG.lvtTimer)).toBe(0x40);
    selfIpi(q, 0x50);
    expect(irrHas(q, 0x50)).toBe(true);
    expect(q.inta()).toBe(-1);
  });

  it("moves the page with IA32_APIC_BASE; QEMU does not move it", () => {
    const m = enabled();
    m.wrmsr(MSR_APIC_BASE, 0xfed00900n);
    expect(m.readl(0xfed00030) >>> 0).toBe(0x00050014);
    expect(m.readl(LAPIC + 0x30) >>> 0).toBe(0xffffffff);
    m.wrmsr(MSR_APIC_BASE, 0xfee00000n | (1n << 40n) | 0x900n); // reserved bit: the write faults
    expect(m.rdmsr(MSR_APIC_BASE)).toBe(0xfed00900n);
    const q = enabled({ compatQemu: true });
    q.wrmsr(MSR_APIC_BASE, 0xfed00900n);
    expect(q.rdmsr(MSR_APIC_BASE)).toBe(0xfed00900n);
    expect(q.readl(LAPIC + 0x30) >>> 0).toBe(0x00050014);
  });

  it("global disable: the page is gone, the registers return to power-up, and the APIC can be enabled again", () => {
    const m = enabled();
    writeReg(m, REG.tpr, 0x20);
    selfIpi(m, 0x50);
    m.wrmsr(MSR_APIC_BASE, 0xfee00100n);
    expect(m.readl(LAPIC + REG.version) >>> 0).toBe(0xffffffff);
    expect(m.inta()).toBe(-1);
    m.wrmsr(MSR_APIC_BASE, 0xfee00900n);
    expect(readReg(m, REG.svr)).toBe(0xff);
    expect(readReg(m, REG.tpr)).toBe(0);
    expect(lapicOf(m).irr).toEqual(Array(8).fill(0));
  });

  it("QEMU: global disable clears the software enable, keeps the registers and cannot be undone", () => {
    const q = enabled({ compatQemu: true });
    writeReg(q, REG.tpr, 0x20);
    q.wrmsr(MSR_APIC_BASE, 0xfee00100n);
    q.wrmsr(MSR_APIC_BASE, 0xfee00900n);
    expect(q.rdmsr(MSR_APIC_BASE)).toBe(0xfee00100n);
    expect(lapicOf(q)).toMatchObject({ tpr: 0x20, svr: 0xff });
  });

  it("the BSP flag is writable on the datasheet model, not on QEMU", () => {
    const m = apicMachine();
    m.wrmsr(MSR_APIC_BASE, 0xfee00800n);
    expect(m.rdmsr(MSR_APIC_BASE)).toBe(0xfee00800n);
    const q = apicMachine({ compatQemu: true });
    q.wrmsr(MSR_APIC_BASE, 0xfee00800n);
    expect(q.rdmsr(MSR_APIC_BASE)).toBe(0xfee00900n);
  });
});

describe("IPIs and destinations", () => {
  it("self and all-including-self reach this CPU; all-excluding-self reaches nobody; IPIs are edge", () => {
    const m = enabled();
    writeReg(m, REG.icrLow, SELF | LEVEL | (1 << 14) | 0x50);
    writeReg(m, REG.icrLow, ALL_INCLUDING_SELF | 0x60);
    writeReg(m, REG.icrLow, ALL_EXCLUDING_SELF | 0x70);
    expect([irrHas(m, 0x50), irrHas(m, 0x60), irrHas(m, 0x70)]).toEqual([true, true, false]);
    expect(tmrHas(m, 0x50)).toBe(false);
  });

  it("no shorthand: physical destination by ID or broadcast", () => {
    const m = enabled();
    writeReg(m, REG.id, 0x05000000);
    for (const [dest, v] of [[5, 0x51], [0xff, 0x52], [0, 0x53]]) {
      writeReg(m, REG.icrHigh, dest << 24);
      writeReg(m, REG.icrLow, v);
    }
    expect([irrHas(m, 0x51), irrHas(m, 0x52), irrHas(m, 0x53)]).toEqual([true, true, false]);
  });

  it("records NMI, SMI, INIT and start-up sent to this CPU; shorthand self carries only fixed", () => {
    const m = enabled();
    writeReg(m, REG.icrHigh, 0);
    writeReg(m, REG.icrLow, 0x400); // NMI to ID 0
    writeReg(m, REG.icrLow, 0x200); // SMI
    writeReg(m, REG.icrLow, 0x4500); // INIT assert
    writeReg(m, REG.icrLow, 0x8500); // INIT level de-assert: not on the xAPIC
    writeReg(m, REG.icrLow, 0x608); // start-up
    writeReg(m, REG.icrLow, SELF | 0x400); // invalid combination
    expect(lapicOf(m).cpuEvents).toEqual({ smi: 1, nmi: 1, init: 1, startup: 1, extint: 0 });
  });

  it("logical destinations: flat, cluster, and broadcast (QEMU has no logical broadcast)", () => {
    const m = enabled();
    const q = enabled({ compatQemu: true });
    const aim = (x: Machine, dest: number) => ioEntry(x, 16, (1 << 11) | 0x41, dest);
    for (const x of [m, q]) ioEntry(x, 17, (1 << 11) | 0x52, 0xff);
    /** Pulses both pins: which of the two vectors arrived. */
    const deliver = (x: Machine) => {
      x.setGsi(16, 1);
      x.setGsi(17, 1);
      const got = [irrHas(x, 0x41), irrHas(x, 0x52)];
      x.setGsi(16, 0);
      x.setGsi(17, 0);
      while (x.inta() >= 0) writeReg(x, REG.eoi, 0);
      return got;
    };
    for (const x of [m, q]) aim(x, 0x03);
    expect(deliver(m)).toEqual([false, true]); // LDR 0: only the broadcast
    expect(deliver(q)).toEqual([false, false]);
    for (const x of [m, q]) writeReg(x, REG.ldr, 0x02000000);
    expect(deliver(m)).toEqual([true, true]);
    expect(deliver(q)).toEqual([true, true]); // flat: 0xff shares a bit with any LDR but 0
    for (const x of [m, q]) {
      writeReg(x, REG.dfr, 0x0fffffff); // cluster model
      writeReg(x, REG.ldr, 0x12000000); // cluster 1, member bit 1
    }
    expect(deliver(m)).toEqual([false, true]);
    for (const x of [m, q]) aim(x, 0x13);
    expect(deliver(m)).toEqual([true, true]);
    expect(deliver(q)).toEqual([true, false]); // cluster 0xf is no broadcast to QEMU
  });
});

describe("QEMU MSI window", () => {
  it("a write at offset 0 of the page is an interrupt message", () => {
    const q = enabled({ compatQemu: true });
    q.writel(LAPIC, 0x45);
    expect(irrHas(q, 0x45)).toBe(true);
    const m = enabled();
    m.writel(LAPIC, 0x45);
    expect(irrHas(m, 0x45)).toBe(false);
    expect(esr(m)).toBe(0x80);
  });
});
