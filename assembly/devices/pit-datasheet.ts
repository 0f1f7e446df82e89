// The 82C54 counting element, per the datasheet, on the spec's clock: PIT clock edge n falls at
// clock.pitEdgeTime(n), a count written is transferred at the first edge after the write, and
// each later edge is one counting step. The element is kept as a closed form anchored at an
// edge, so any edge's count and OUT level cost O(1) and time passes without stepping:
//   one-shot (modes 0, 1, 4, 5, and any frozen state): the value `start` at edge `anchor`,
//     decremented per edge while `counting`, wrapping modulo 2^16 (10^4 in BCD); the terminal
//     count falls at `tcEdge` while `armed`;
//   periodic (modes 2 and 3 while running): period `start` restarted at edge `anchor`.
// The one scheduled change is `loadEdge`: a count register transfer at the next edge, or in a
// running mode 2/3 the new count taken at the next period (mode 3: half-cycle) boundary.
//
// Model choices where the datasheet leaves the chip undefined:
// - After a control word the counting element keeps its value; in modes 0/4 (gate high) and
//   1/5 it keeps counting (wrapping) with OUT at the mode's initial level and no terminal count
//   ahead; in modes 2/3 it holds until a count is loaded.
// - A gate trigger (modes 1, 2, 3, 5) before any count was written after the control word does
//   nothing. In modes 2/3 a count transfer needs the gate high; the rising edge loads it.
// - Count 1 in modes 2 and 3 (illegal): mode 2 keeps OUT low, mode 3 keeps OUT high (count 0).
// - The first byte of a two-byte count in mode 0 also cancels a transfer not yet done.
// - In BCD a non-decimal digit counts at its nibble value; once counting the value is decimal.

import { NEVER, pitEdgeTime } from "../common/clock";
import { FieldIO } from "../common/fields";
import { countModulus, countSteps, countValue, effectiveMode, toBcd, STATUS_NULL_COUNT, STATUS_OUT } from "../registers/pit";
import { PitCounter } from "./pit-counter";

export class DatasheetCounter extends PitCounter {
  private nullCount: bool = false;
  /** The edge everything is settled to. */
  private edge: i64 = 0;
  private periodic: bool = false;
  private anchor: i64 = 0;
  /** One-shot: the count at `anchor`; periodic: the period. In the counting base (BCD: decimal). */
  private start: i64 = 0;
  private counting: bool = false;
  private armed: bool = false;
  private tcEdge: i64 = NEVER;
  /** One-shot: OUT before the terminal count. */
  private outBefore: bool = false;
  /** Mode 0: the first byte of a two-byte count is written; counting is disabled. */
  private holding: bool = false;
  private loadEdge: i64 = NEVER;

  resetCounter(index: i32): void {
    this.resetRegisters();
    this.gate = index != 2;
    this.nullCount = false;
    this.edge = 0;
    this.periodic = false;
    this.anchor = 0;
    this.start = 0;
    this.counting = false;
    this.armed = false;
    this.tcEdge = NEVER;
    this.outBefore = false;
    this.holding = false;
    this.loadEdge = NEVER;
  }

  syncTo(now: i64, edge: i64): void {
    this.edge = edge;
    const load = this.loadEdge;
    if (load <= edge) {
      this.loadEdge = NEVER;
      this.transfer(load);
    }
  }

  // ---- closed forms ----------------------------------------------------------------------

  @inline
  private modulus(): i64 {
    return countModulus(this.bcd);
  }

  /** The count at edge `e` (>= anchor), in the counting base. */
  private valueAt(e: i64): i64 {
    const m = this.modulus();
    if (!this.periodic) {
      if (!this.counting) return this.start;
      const v = (this.start - (e - this.anchor)) % m;
      return v < 0 ? v + m : v;
    }
    const n = this.start;
    const p = (e - this.anchor) % n;
    if (effectiveMode(this.mode) == 2) return (n - p) % m;
    const half = (n + 1) >> 1;
    const q = p < half ? p : p - half;
    return ((n & ~1) - 2 * q) % m;
  }

  private outAt(e: i64): bool {
    const mode = effectiveMode(this.mode);
    if (!this.periodic) {
      if (e < this.tcEdge) return this.outBefore;
      return mode == 0 || mode == 1 || e != this.tcEdge;
    }
    const n = this.start;
    const p = (e - this.anchor) % n;
    return mode == 2 ? p != n - 1 : p < (n + 1) >> 1;
  }

  /** The first periodic boundary (a reload; in mode 3 either half-cycle start) after edge `e`. */
  private nextBoundary(e: i64): i64 {
    const n = this.start;
    const p = (e - this.anchor) % n;
    const half = (n + 1) >> 1;
    if (effectiveMode(this.mode) == 3 && p < half) return e + half - p;
    return e + n - p;
  }

  @inline
  private raw(v: i64): u32 {
    return this.bcd ? toBcd(<u32>v) : <u32>v;
  }

  // ---- state changes -----------------------------------------------------------------------

  /** One-shot form from the current edge on, keeping the count; `armed` survives if still ahead. */
  private reanchor(counting: bool): void {
    const e = this.edge;
    const value = this.valueAt(e);
    if (this.armed && this.tcEdge <= e) this.armed = false;
    this.periodic = false;
    this.start = value;
    this.anchor = e;
    this.counting = counting;
    if (this.armed) this.tcEdge = counting ? e + (value == 0 ? this.modulus() : value) : NEVER;
  }

  /** Stops counting with OUT held at `out`, nothing ahead. */
  private freeze(out: bool): void {
    this.reanchor(false);
    this.armed = false;
    this.tcEdge = NEVER;
    this.outBefore = out;
  }

  /** The count register enters the counting element at edge `at`. */
  private transfer(at: i64): void {
    const steps = countSteps(this.countRegister, this.bcd);
    this.nullCount = false;
    const mode = effectiveMode(this.mode);
    if (this.periodic) {
      // A new count taken at a boundary continues the waveform: in mode 3 a half-cycle that
      // starts low is placed after the new count's high half.
      const startsHigh = mode == 2 || (at - this.anchor) % this.start == 0;
      this.anchor = startsHigh ? at : at - ((steps + 1) >> 1);
      this.start = steps;
      return;
    }
    if (mode == 2 || mode == 3) {
      this.periodic = true;
      this.anchor = at;
      this.start = steps;
      return;
    }
    this.anchor = at;
    this.start = steps % this.modulus();
    this.counting = mode == 1 || mode == 5 || this.gate;
    this.armed = true;
    this.tcEdge = this.counting ? at + steps : NEVER;
    this.outBefore = mode == 4 || mode == 5;
  }

  controlWritten(mode: u32, bcd: bool): void {
    // The element keeps its bits; a change of base reinterprets them.
    const raw = this.raw(this.valueAt(this.edge));
    const m = effectiveMode(mode);
    this.periodic = false;
    this.start = countValue(raw, bcd);
    this.anchor = this.edge;
    this.counting = m == 1 || m == 5 || ((m == 0 || m == 4) && this.gate);
    this.armed = false;
    this.tcEdge = NEVER;
    this.outBefore = m != 0;
    this.holding = false;
    this.loadEdge = NEVER;
    this.nullCount = true;
  }

  countByteWritten(complete: bool): void {
    const mode = effectiveMode(this.mode);
    if (!complete) {
      if (mode == 0) {
        this.freeze(false);
        this.holding = true;
        this.loadEdge = NEVER;
      }
      return;
    }
    this.nullCount = true;
    if (mode == 0) {
      // Writing a count drives OUT low at once; the count loads on the next edge.
      this.freeze(false);
      this.holding = false;
      this.loadEdge = this.edge + 1;
    } else if (mode == 4) {
      this.loadEdge = this.edge + 1;
    } else if (mode == 2 || mode == 3) {
      if (this.periodic) {
        if (this.loadEdge == NEVER) this.loadEdge = this.nextBoundary(this.edge);
      } else if (this.gate) {
        this.loadEdge = this.edge + 1;
      }
    }
  }

  setGate(level: bool): void {
    if (level == this.gate) return;
    this.gate = level;
    const mode = effectiveMode(this.mode);
    if (mode == 0 || mode == 4) {
      if (!this.holding) this.reanchor(level);
    } else if (mode == 2 || mode == 3) {
      if (!level) {
        // Gate low forces OUT high and suspends counting; a pending load waits for the trigger.
        this.freeze(true);
        this.loadEdge = NEVER;
      } else if (this.countsWritten > 0) {
        this.loadEdge = this.edge + 1;
      }
    } else if (level && this.countsWritten > 0) {
      this.loadEdge = this.edge + 1;
    }
  }

  // ---- observation -------------------------------------------------------------------------

  liveCount(): u32 {
    return this.raw(this.valueAt(this.edge));
  }

  outAndNullBits(): u32 {
    return (this.outAt(this.edge) ? STATUS_OUT : 0) | (this.nullCount ? STATUS_NULL_COUNT : 0);
  }

  out(): bool {
    return this.outAt(this.edge);
  }

  nextOutChange(): i64 {
    const next = this.nextOutEdge();
    return next == NEVER ? NEVER : pitEdgeTime(next);
  }

  /** The first edge after the current one where OUT may change (a load counts as maybe). */
  private nextOutEdge(): i64 {
    const e = this.edge;
    let next = this.loadEdge;
    let change = NEVER;
    if (!this.periodic) {
      const mode = effectiveMode(this.mode);
      if (this.tcEdge != NEVER && this.tcEdge > e) change = this.tcEdge;
      else if (this.tcEdge == e && (mode == 4 || mode == 5)) change = e + 1;
    } else if (this.start > 1) {
      const n = this.start;
      const p = (e - this.anchor) % n;
      if (effectiveMode(this.mode) == 3) change = this.nextBoundary(e);
      else change = p == n - 1 ? e + 1 : e + (n - 1 - p);
    }
    return change < next ? change : next;
  }

  /** Whether a terminal count (mode 4/5: strobe) is still ahead. */
  private armedNow(): bool {
    return !this.periodic && this.armed && (this.tcEdge == NEVER || this.tcEdge > this.edge);
  }

  describeCounter(io: FieldIO): void {
    const e = this.edge;
    const out = this.outAt(e);
    io.field("count", this.raw(this.valueAt(e)));
    io.flag("out", out);
    io.flag("nullCount", this.nullCount);
    // A load due at the next edge replaces whatever was counting or ahead before it.
    const loading = !this.periodic && this.loadEdge != NEVER;
    io.flag("counting", this.periodic || (this.counting && !loading));
    io.flag("armed", this.armedNow() && !loading);
    io.flag("loadPending", loading);
    io.flag("halfOdd", this.periodic && effectiveMode(this.mode) == 3 && out && (this.start & 1) != 0);
    io.wide("nextOutChange", <u64>this.nextOutChange());
  }
}
