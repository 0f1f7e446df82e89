// Virtual time for events converted from a QEMU log.
//
// Timed logs (`iotime:` lines): with -icount shift=0,sleep=off one guest instruction is 1 ns, so
// time = icount + offset, less one for every page fault (the plugin counts a faulting
// instruction twice). A HLT warps time to the next timer deadline without logging how far. When
// the interrupt that ends the HLT comes from a timer whose deadline is known (a PIT OUT0 change
// or a local APIC timer expiry), time is resynchronised to that deadline; otherwise the clock
// goes on from a lower bound in a new `frame`: times in one frame are all off by the same
// unknown constant, so differences within a frame stay exact.
//
// Raw logs: there is no time. Each guest access advances a synthetic clock by 1 ns — never more
// than real time, since an access takes at least one instruction — and the clock jumps to a local
// APIC timer expiry where the log shows one, so the model's timer fires at that point too.

import { NO_FRAME, sameFrame } from "./timers.js";

export interface ClockCounts {
  hlts: number;
  /** HLTs whose wake-up was a timer deadline: time known again exactly. */
  resyncs: number;
  /** HLTs woken by something without a known deadline: time continues in a new frame. */
  unexplainedWakes: number;
  /** Local APIC timer expiries whose deadline did not fit where the log shows them. */
  offClockSignals: number;
  /** Instructions whose icount time fell before an event already placed (placed at that event). */
  conflicts: number;
  pageFaults: number;
}

interface Halt {
  icount: number;
  pageFaults: number;
  /** The latest timer signal that could have ended the HLT, or null after an unexplained one. */
  wake: { time: number; frame: number } | null;
}

export class VirtualClock {
  /** Time of the latest event. */
  now = 0;
  /** Frame of `now` (NO_FRAME for a raw log). */
  frame: number;
  readonly counts: ClockCounts = { hlts: 0, resyncs: 0, unexplainedWakes: 0, offClockSignals: 0, conflicts: 0, pageFaults: 0 };
  private offset = 0;
  private halt: Halt | null = null;
  private nextFrame = 1;
  /** The next plugin-counted instruction, once known, bounds every signal before it. */
  private nextIcount = Infinity;
  private nextPageFaults = 0;

  /** `timed`: the log has icount lines (frame 0 is true virtual time, reset at 0). */
  constructor(readonly timed: boolean) {
    this.frame = timed ? 0 : NO_FRAME;
  }

  /** A guest port or MMIO access (raw logs: the synthetic clock's step). */
  access(): void {
    if (!this.timed) this.now += 1;
  }

  /**
   * Announces the next plugin-counted instruction before the lines that precede it are
   * handled: no timer signal among them can be later. `pageFaultsBefore`: faults among them.
   */
  expectInstruction(icount: number, pageFaultsBefore: number): void {
    this.nextIcount = icount;
    this.nextPageFaults = this.counts.pageFaults + pageFaultsBefore;
  }

  /** A guest instruction the plugin counted (`iotime:`): the clock moves to its time. */
  instruction(icount: number): void {
    this.endHalt();
    const t = icount - this.counts.pageFaults + this.offset;
    this.nextIcount = Infinity;
    if (t < this.now) this.counts.conflicts++;
    else this.now = t;
  }

  /** A HLT at plugin count `icount` (logged before it executes). */
  hlt(icount: number): void {
    this.instruction(icount);
    this.counts.hlts++;
    this.halt = { icount, pageFaults: this.counts.pageFaults, wake: null };
  }

  pageFault(): void {
    this.counts.pageFaults++;
  }

  /** The CPU took an interrupt: a HLT, if any, ended when that interrupt arrived. */
  interruptTaken(): void {
    this.endHalt();
  }

  /**
   * Whether a device timer's deadline fits where the log shows its signal: not before an event
   * already placed, not after the next counted instruction, and in the current frame unless
   * the CPU is halted (then the deadline is the best time there is).
   */
  fits(time: number, frame: number): boolean {
    if (!this.timed) return true;
    if (time < this.now) return false;
    if (this.halt !== null) return true;
    const bound = this.nextIcount - this.nextPageFaults + this.offset;
    return sameFrame(frame, this.frame) && time <= bound;
  }

  /**
   * A device timer changed an interrupt input at a deadline that fits (see `fits`). `raises`:
   * the change can request an interrupt. Raw logs keep their synthetic time.
   */
  lineSignal(time: number, frame: number, raises: boolean): void {
    if (this.timed) this.place(time, frame, raises);
  }

  /**
   * A timer the model runs by itself (the local APIC timer) expired where the log shows it. A raw
   * log's clock jumps to the expiry, so the model's timer fires at this point too.
   */
  selfTimedExpiry(time: number, frame: number): void {
    if (!this.timed) {
      if (time > this.now) this.now = time;
    } else if (this.fits(time, frame)) {
      this.place(time, frame, true);
    } else {
      this.counts.offClockSignals++;
    }
  }

  /** An interrupt input went high at a time the log does not give (another device, an MSI). */
  unexplainedRise(): void {
    if (this.halt !== null) this.halt.wake = null;
  }

  private place(time: number, frame: number, raises: boolean): void {
    this.now = time;
    if (this.halt !== null) {
      this.frame = frame;
      if (raises) this.halt.wake = { time, frame };
    }
  }

  private endHalt(): void {
    const halt = this.halt;
    if (halt === null) return;
    this.halt = null;
    // The first instruction after the HLT has plugin count icount + 1.
    const resumedAt = halt.icount + 1 - halt.pageFaults;
    if (halt.wake !== null) {
      this.offset = halt.wake.time - resumedAt;
      this.frame = halt.wake.frame;
      this.counts.resyncs++;
    } else {
      this.offset = this.now - resumedAt;
      this.frame = this.nextFrame++;
      this.counts.unexplainedWakes++;
    }
  }
}
