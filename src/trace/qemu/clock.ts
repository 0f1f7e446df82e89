// Virtual time for events converted from a QEMU log.
//
// Timed logs (`iotime:` lines): with -icount shift=0,sleep=off one guest instruction is 1 ns, so
// time = icount + offset, less one for every data-access page fault (the plugin counts the
// faulting attempt, QEMU's virtual time does not). A fault on an instruction fetch is raised
// while translating, before the plugin counts anything, so it moves nothing. A HLT warps time to
// the next timer deadline without logging how far. When the interrupt that ends the HLT comes
// from a timer whose deadline is known (a PIT OUT0 change or a local APIC timer expiry), time is
// resynchronised to that deadline; otherwise the clock goes on from a lower bound in a new
// `frame`: times in one frame are all off by the same unknown constant, so differences within a
// frame stay exact. A line whose time is not known (no counted instruction bounds it) never
// moves the clock, and an instruction whose time falls before an event already placed is a
// conflict: resolved by a stated rule (CONFLICT_RULES) or an error naming the line.
//
// Raw logs: there is no time. Each guest access advances a synthetic clock by 1 ns — never more
// than real time, since an access takes at least one instruction — and the clock jumps to a local
// APIC timer expiry where the log shows one (plus one divided timer period: docs/traces.md), so
// the model's timer fires at that point too.

import { NO_FRAME, sameFrame } from "./timers.js";

/** The rules by which a clock conflict is resolved, and what each one says. */
export const CONFLICT_RULES = {
  "resume after the latest signal":
    "a timer signal placed during a HLT after the one that woke the CPU is later than the wake-up deadline: the CPU resumes at that signal's time, not before it",
} as const;

export type ConflictRule = keyof typeof CONFLICT_RULES;

/** An instruction's icount time falls before an event already placed, and no rule explains it. */
export class ClockConflictError extends Error {
  override readonly name = "ClockConflictError";
  constructor(readonly line: number, time: number, placed: number) {
    super(`line ${line}: clock conflict: the instruction's icount time ${time} is ${placed - time} ns before an event already placed at ${placed}, and no rule explains it`);
  }
}

export interface ClockCounts {
  hlts: number;
  /** HLTs whose wake-up was a timer deadline: time known again exactly. */
  resyncs: number;
  /** HLTs woken by something without a known deadline: time continues in a new frame. */
  unexplainedWakes: number;
  /** Local APIC timer expiries whose deadline did not fit where the log shows them. */
  offClockSignals: number;
  /** Instructions whose icount time fell before an event already placed, and no rule explained (always 0 in a finished import). */
  conflicts: number;
  /** Conflicts resolved, by rule (CONFLICT_RULES). */
  conflictsResolved: Partial<Record<ConflictRule, number>>;
  /** Data-access page faults: each takes one instruction off the plugin's count. */
  pageFaults: number;
  /** Instruction-fetch page faults: raised before the plugin counts the instruction, so they move nothing. */
  fetchFaults: number;
  /** Timer signals on lines whose time is not known (no counted instruction bounds them): they left the clock alone. */
  untimedSignals: number;
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
  readonly counts: ClockCounts = {
    hlts: 0,
    resyncs: 0,
    unexplainedWakes: 0,
    offClockSignals: 0,
    conflicts: 0,
    conflictsResolved: {},
    pageFaults: 0,
    fetchFaults: 0,
    untimedSignals: 0,
  };
  private offset = 0;
  private halt: Halt | null = null;
  private nextFrame = 1;
  /**
   * The next plugin-counted instruction, once known, bounds every signal before it; after an
   * instruction is placed and until the next is announced, that instruction bounds them (the
   * lines logged after an MMIO access and before its iotime line happen during that access).
   * Infinity: no instruction bounds the lines being handled, so their time is not known.
   */
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
   * handled: no timer signal among them can be later. `pageFaultsBefore`: data-access faults
   * among them.
   */
  expectInstruction(icount: number, pageFaultsBefore: number): void {
    this.nextIcount = icount;
    this.nextPageFaults = this.counts.pageFaults + pageFaultsBefore;
  }

  /** The lines handled next have no counted instruction after them (end of log, overlong gap). */
  timeUnknown(): void {
    this.nextIcount = Infinity;
  }

  /**
   * A guest instruction the plugin counted (`iotime:` on log line `line`): the clock moves to
   * its time. Throws ClockConflictError if that time is before an event already placed.
   */
  instruction(icount: number, line: number): void {
    this.endHalt();
    const t = icount - this.counts.pageFaults + this.offset;
    this.nextIcount = icount;
    this.nextPageFaults = this.counts.pageFaults;
    if (t < this.now) {
      this.counts.conflicts++;
      throw new ClockConflictError(line, t, this.now);
    }
    this.now = t;
  }

  /** A HLT at plugin count `icount` (logged before it executes, on line `line`). */
  hlt(icount: number, line: number): void {
    this.instruction(icount, line);
    this.counts.hlts++;
    this.halt = { icount, pageFaults: this.counts.pageFaults, wake: null };
  }

  /** A page fault entered its handler; `fetch`: raised by an instruction fetch (error code bit 4). */
  pageFault(fetch: boolean): void {
    if (fetch) this.counts.fetchFaults++;
    else this.counts.pageFaults++;
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
    if (this.nextIcount === Infinity) {
      this.counts.untimedSignals++;
      return false;
    }
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
   * log's clock jumps to the expiry plus `margin` (the time after it is unknown anyway), so the
   * model's timer fires at this point too, even one rebuilt by a migration up to `margin` late.
   */
  selfTimedExpiry(time: number, frame: number, margin: number): void {
    if (!this.timed) {
      if (time + margin > this.now) this.now = time + margin;
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

  private resolved(rule: ConflictRule): void {
    this.counts.conflictsResolved[rule] = (this.counts.conflictsResolved[rule] ?? 0) + 1;
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
      let resumeTime = halt.wake.time;
      if (this.now > resumeTime) {
        resumeTime = this.now;
        this.resolved("resume after the latest signal");
      }
      this.offset = resumeTime - resumedAt;
      this.frame = halt.wake.frame;
      this.counts.resyncs++;
    } else {
      this.offset = this.now - resumedAt;
      this.frame = this.nextFrame++;
      this.counts.unexplainedWakes++;
    }
  }
}
