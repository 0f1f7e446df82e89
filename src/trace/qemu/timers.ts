// What QEMU 7.2's 8254 and local APIC timer do with time, mirrored from the writes a log shows,
// so that the importer can tell WHEN each logged timer event happened and WHICH reads depend on
// time. It never computes a device value: every expectation comes from the log itself.
//
// Times carry a `frame`: times in one frame differ from true virtual time by one constant, so
// differences within a frame are exact (see VirtualClock). A time-dependent read can be checked
// only when the state it depends on was set in the frame the read happens in.

import { PIT_HZ } from "../../../assembly/common/hardware.js";

/** The frame of times that are not virtual time at all (a raw log's synthetic clock). */
export const NO_FRAME = -1;

/** Whether two times can be subtracted exactly. */
export function sameFrame(a: number, b: number): boolean {
  return a === b && a !== NO_FRAME;
}

const NS_PER_S = 1_000_000_000;

/** floor(n * mul / div) for n < 2^53 and mul, div <= 1e9, without leaving exact integers. */
function mulDiv(n: number, mul: number, div: number): number {
  const q = Math.floor(n / div);
  const r = n - q * div;
  return q * mul + Math.floor((r * mul) / div);
}

/** PIT input clock edges in a duration (QEMU: muldiv64(d, PIT_FREQ, 1e9)). */
function pitTicks(ns: number): number {
  return mulDiv(ns, PIT_HZ, NS_PER_S);
}

/** Duration of n PIT clocks, rounded down (QEMU: muldiv64(n, 1e9, PIT_FREQ)). */
function pitTicksToNs(n: number): number {
  return mulDiv(n, NS_PER_S, PIT_HZ);
}

export interface TimedLevel {
  time: number;
  frame: number;
  level: 0 | 1;
}

/** The part of a time-dependent read that can be compared, and why the rest cannot. */
export interface ReadDependence {
  /** The read's value does not depend on time, or its time base is in the reader's frame. */
  exact: boolean;
  /** Bits that do not depend on time (compared when `exact` is false); 0 = none. */
  timeFreeMask: number;
  /** What the time-dependent part is, for the import summary. */
  what: string;
}

const RW_MSB = 2;
const RW_WORD0 = 3;
const RW_WORD1 = 4;

class PitChannel {
  mode = 3;
  count = 0x10000;
  loadTime = 0;
  loadFrame = 0;
  rwMode = 0;
  readState = 0;
  writeState = 0;
  gate: boolean;
  /** First byte of a two-byte count write. */
  writeLatch = 0;
  /** Bytes of a latched count still to read (QEMU's count_latched state), and when it was latched. */
  countLatched = 0;
  latchFrame = 0;
  statusLatched = false;
  statusFrame = 0;

  constructor(gate: boolean) {
    this.gate = gate;
  }

  /** QEMU's pit_get_out at absolute time t. */
  out(t: number): 0 | 1 {
    const d = pitTicks(t - this.loadTime);
    const c = this.count;
    switch (this.mode) {
      case 1:
        return d < c ? 1 : 0;
      case 2:
        return d % c === 0 && d !== 0 ? 1 : 0;
      case 3:
        return d % c < (c + 1) >> 1 ? 1 : 0;
      case 4:
      case 5:
        return d === c ? 1 : 0;
      default:
        return d >= c ? 1 : 0;
    }
  }

  /** QEMU's pit_get_next_transition_time: the time OUT is next re-evaluated, or -1. */
  nextTransition(t: number): number {
    const d = pitTicks(t - this.loadTime);
    const c = this.count;
    let next: number;
    switch (this.mode) {
      case 2: {
        const base = d - (d % c);
        next = d - base === 0 && d !== 0 ? base + c : base + c + 1;
        break;
      }
      case 3: {
        const base = d - (d % c);
        const half = (c + 1) >> 1;
        next = d - base < half ? base + half : base + c;
        break;
      }
      case 4:
      case 5:
        if (d < c) next = c;
        else if (d === c) next = c + 1;
        else return -1;
        break;
      default:
        if (d < c) next = c;
        else return -1;
    }
    const at = this.loadTime + pitTicksToNs(next);
    return at <= t ? t + 1 : at;
  }

  load(value: number, time: number, frame: number): void {
    this.count = value === 0 ? 0x10000 : value;
    this.loadTime = time;
    this.loadFrame = frame;
  }

  latchCount(frame: number): void {
    if (this.countLatched !== 0) return;
    this.countLatched = this.rwMode;
    this.latchFrame = frame;
  }
}

/** QEMU 7.2's i8254 timing: channel 0's OUT changes as QEMU signals them, and read dependence. */
export class QemuPitTiming {
  private readonly channels = [new PitChannel(true), new PitChannel(true), new PitChannel(false)];
  /** OUT0 level signalled by a count load, logged at once. */
  private loadSignal: TimedLevel | null = null;
  /** Channel 0's pending re-evaluation (QEMU's irq timer), or -1, and the frame of its time. */
  private nextIrqTime: number;
  private irqFrame: number;
  /** The HPET's legacy route has disconnected channel 0 from GSI 0 (QEMU's irq_disabled). */
  private irqDisabled = false;

  /** The state after machine reset at time 0 of `frame`: every channel mode 3, count 0x10000. */
  constructor(frame: number) {
    for (const ch of this.channels) ch.loadFrame = frame;
    this.irqFrame = frame;
    this.nextIrqTime = this.channels[0]!.nextTransition(0);
  }

  /** A guest write to port 0x40–0x43 at `time`. */
  write(port: number, value: number, time: number, frame: number): void {
    if (port === 0x43) {
      this.control(value, frame);
      return;
    }
    const index = port - 0x40;
    const ch = this.channels[index]!;
    switch (ch.writeState) {
      case RW_MSB:
        this.loadCount(index, value << 8, time, frame);
        break;
      case RW_WORD0:
        ch.writeState = RW_WORD1;
        ch.writeLatch = value;
        break;
      case RW_WORD1:
        this.loadCount(index, ch.writeLatch | (value << 8), time, frame);
        ch.writeState = RW_WORD0;
        break;
      default:
        this.loadCount(index, value, time, frame);
    }
  }

  private control(value: number, frame: number): void {
    const select = value >> 6;
    if (select === 3) {
      for (let i = 0; i < 3; i++) {
        if ((value & (2 << i)) === 0) continue;
        const ch = this.channels[i]!;
        if ((value & 0x20) === 0) ch.latchCount(frame);
        if ((value & 0x10) === 0 && !ch.statusLatched) {
          ch.statusLatched = true;
          ch.statusFrame = frame;
        }
      }
      return;
    }
    const ch = this.channels[select]!;
    const access = (value >> 4) & 3;
    if (access === 0) {
      ch.latchCount(frame);
      return;
    }
    // QEMU changes the mode without re-arming the OUT timer.
    ch.rwMode = access;
    ch.readState = access;
    ch.writeState = access;
    ch.mode = (value >> 1) & 7;
  }

  private loadCount(index: number, value: number, time: number, frame: number): void {
    const ch = this.channels[index]!;
    ch.load(value, time, frame);
    if (index === 0 && !this.irqDisabled) this.rearmIrq(time, frame);
  }

  /**
   * The HPET's legacy route disconnects (false) or reconnects (true) channel 0 from GSI 0 at
   * `time`: disconnected, it signals nothing, not even at a count load; reconnected, it signals
   * its OUT0 level at once and re-arms.
   */
  setIrqConnected(connected: boolean, time: number, frame: number): void {
    this.irqDisabled = !connected;
    if (connected) {
      this.rearmIrq(time, frame);
    } else {
      this.loadSignal = null;
      this.nextIrqTime = -1;
    }
  }

  private rearmIrq(time: number, frame: number): void {
    const ch0 = this.channels[0]!;
    this.loadSignal = { time, frame, level: ch0.out(time) };
    this.nextIrqTime = ch0.nextTransition(time);
    this.irqFrame = frame;
  }

  /** Port 0x61 write: bit 0 is channel 2's gate; a rising gate restarts modes 1, 2, 3 and 5 only. */
  setGate2(level: boolean, time: number, frame: number): void {
    const ch = this.channels[2]!;
    if (level && !ch.gate && [1, 2, 3, 5].includes(ch.mode)) {
      ch.loadTime = time;
      ch.loadFrame = frame;
    }
    ch.gate = level;
  }

  /** The next OUT0 signal QEMU will log as a GSI 0 change, without consuming it. */
  peekIrq0(): TimedLevel | null {
    if (this.loadSignal !== null) return this.loadSignal;
    if (this.nextIrqTime < 0) return null;
    return { time: this.nextIrqTime, frame: this.irqFrame, level: this.channels[0]!.out(this.nextIrqTime) };
  }

  /** Consumes the signal peekIrq0 returned. */
  takeIrq0(): void {
    if (this.loadSignal !== null) {
      this.loadSignal = null;
      return;
    }
    if (this.nextIrqTime >= 0) this.nextIrqTime = this.channels[0]!.nextTransition(this.nextIrqTime);
  }

  /**
   * Skips channel-0 signals due before `time` that the log never showed, and returns how many.
   * A PIT whose signals go missing is not driving GSI 0, so no further signal is expected from
   * it until its next count load.
   */
  skipIrq0Before(time: number, frame: number): number {
    let skipped = 0;
    const due = (t: number, f: number) => f === frame && t < time;
    if (this.loadSignal !== null && due(this.loadSignal.time, this.loadSignal.frame)) {
      this.loadSignal = null;
      skipped++;
    }
    if (this.loadSignal === null && this.nextIrqTime >= 0 && due(this.nextIrqTime, this.irqFrame)) {
      this.nextIrqTime = -1;
      skipped++;
    }
    return skipped;
  }

  /** How a read of port 0x40–0x43 at a time in `frame` depends on time; advances QEMU's read state. */
  read(port: number, frame: number): ReadDependence {
    if (port === 0x43) return { exact: true, timeFreeMask: 0xff, what: "" };
    const ch = this.channels[port - 0x40]!;
    if (ch.statusLatched) {
      ch.statusLatched = false;
      // Bit 7 is OUT at latch time; QEMU never sets NULL COUNT (bit 6).
      return { exact: sameFrame(ch.statusFrame, ch.loadFrame), timeFreeMask: 0x7f, what: "PIT status OUT bit" };
    }
    if (ch.countLatched !== 0) {
      const exact = sameFrame(ch.latchFrame, ch.loadFrame);
      ch.countLatched = ch.countLatched === RW_WORD0 ? RW_MSB : 0;
      return { exact, timeFreeMask: 0, what: "PIT latched count" };
    }
    if (ch.readState === RW_WORD0) ch.readState = RW_WORD1;
    else if (ch.readState === RW_WORD1) ch.readState = RW_WORD0;
    return { exact: sameFrame(frame, ch.loadFrame), timeFreeMask: 0, what: "PIT count" };
  }

  /** How a port 0x61 read depends on time: bit 5 is OUT2 (bit 4 toggles per read in QEMU). */
  readPort61(frame: number): ReadDependence {
    return { exact: sameFrame(frame, this.channels[2]!.loadFrame), timeFreeMask: 0xdf, what: "port 0x61 OUT2 bit" };
  }
}

const LVT_MASKED = 1 << 16;
const LVT_PERIODIC = 1 << 17;

/** QEMU 7.2's local APIC timer: when it fires, and whether a current-count read is exact. */
export class QemuLapicTiming {
  private lvt = LVT_MASKED;
  /** log2 of the divisor; QEMU resets it to 0 (divide by 1) until the divide register is written. */
  private shift = 0;
  private initial = 0;
  private loadTime = 0;
  private loadFrame: number;
  private next = -1;

  constructor(frame: number) {
    this.loadFrame = frame;
  }

  /** Register write at APIC page offset `offset` at `time`. */
  write(offset: number, value: number, time: number, frame: number): void {
    switch (offset) {
      case 0x320:
        this.lvt = value;
        this.next = this.nextExpiry(time);
        break;
      case 0x380:
        this.initial = value >>> 0;
        this.loadTime = time;
        this.loadFrame = frame;
        this.next = this.nextExpiry(time);
        break;
      case 0x3e0: {
        // QEMU takes the new divisor without re-arming the pending expiry.
        const code = (value & 3) | ((value >> 1) & 4);
        this.shift = (code + 1) & 7;
        break;
      }
    }
  }

  /** QEMU's apic_next_timer: the first expiry after `t`, or -1. */
  private nextExpiry(t: number): number {
    if ((this.lvt & LVT_MASKED) !== 0) return -1;
    const unit = 2 ** this.shift;
    let d = Math.floor((t - this.loadTime) / unit);
    if ((this.lvt & LVT_PERIODIC) !== 0) {
      if (this.initial === 0) return -1;
      const period = this.initial + 1;
      d = (Math.floor(d / period) + 1) * period;
    } else {
      if (d >= this.initial) return -1;
      d = this.initial + 1;
    }
    return this.loadTime + d * unit;
  }

  /** The divided clock's period in ns (the divisor; QEMU counts at 1 GHz before dividing). */
  get dividedPeriod(): number {
    return 2 ** this.shift;
  }

  /** The vector the timer's LVT entry asks for. */
  get vector(): number {
    return this.lvt & 0xff;
  }

  /** The expiry QEMU logs next as an LVT timer delivery; null if none is armed. */
  peekExpiry(): { time: number; frame: number } | null {
    return this.next < 0 ? null : { time: this.next, frame: this.loadFrame };
  }

  /** The expiry QEMU logs next as an LVT timer delivery, consumed; null if none is armed. */
  takeExpiry(): { time: number; frame: number } | null {
    const expiry = this.peekExpiry();
    if (expiry !== null) this.next = this.nextExpiry(expiry.time);
    return expiry;
  }

  /** How a current-count read (offset 0x390) in `frame` depends on time. */
  readCurrentCount(frame: number): ReadDependence {
    return { exact: sameFrame(frame, this.loadFrame), timeFreeMask: 0, what: "local APIC current count" };
  }
}
