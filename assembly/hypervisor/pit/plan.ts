// Rebuilding a datasheet-model 8254 channel on a freshly reset chip. The counting element, OUT
// and NULL COUNT cannot be written, only driven: each channel gets a short history of control
// words, count writes and gate changes, timed on PIT clock edges inside the window before the
// resume time T, whose end state at T equals what capture read back. Writes land in "interval
// k", the time between edge k and edge k+1, so a count written there loads at edge k+1.
//
// Only the register view and the captured values are used; the hidden phase of the counting
// element is inferred from them (see the notes at each case; docs/hypervisor.md lists what
// cannot be told apart). The window reaches back at least 2^17 clocks (RECONSTRUCT_WINDOW_NS), enough to
// replay the last load, reload or trigger of any channel with the guest's own count.

import { pitEdgeTime, pitEdgesAt } from "../../common/clock";
import {
  PitChannelRegisters, PIT_CONTROL_PORT, RW_NONE, RW_MSB, RW_WORD, STATUS_NULL_COUNT, STATUS_OUT,
  countModulus, countSteps, countValue, effectiveMode, toBcd, counterPort
} from "../../registers/pit";
import { ChannelPlanner, Timeline } from "./timeline";

const PORT_61: u32 = 0x61;

/** Bits of a count in the channel's format: 0 stands for the full count (2^16 or 10^4). */
function rawCount(steps: i64, bcd: bool): u32 {
  const v = <u32>(steps % countModulus(bcd));
  return bcd ? toBcd(v) : v;
}

/** Whether a count can be written in RW mode `rw` (LSB-only has no MSB, MSB-only no LSB). */
function writable(steps: i64, rw: u32, bcd: bool): bool {
  if (steps < 1) return false;
  const raw = rawCount(steps, bcd);
  if (rw == RW_WORD) return true;
  return rw == RW_MSB ? (raw & 0xff) == 0 : raw < 0x100;
}

/** What one channel must show at T: its registers (from the shadow) and what capture read back. */
class ChannelTarget {
  /** The counting element's value (0 stands for the full count). */
  readonly value: i64;
  /** The full count: 2^16, or 10^4 in BCD. */
  readonly full: i64;
  readonly out: bool;
  readonly nullCount: bool;
  /** The element's value in clocks (0 is the full count), and the count register's. */
  readonly whole: i64;
  readonly period: i64;

  constructor(
    readonly index: i32,
    readonly regs: PitChannelRegisters,
    status: u32,
    count: u32,
    /** Gate 2's level at T (channels 0 and 1: tied high). */
    readonly gate: bool,
  ) {
    this.value = countValue(count, regs.bcd);
    this.full = countModulus(regs.bcd);
    this.out = (status & STATUS_OUT) != 0;
    this.nullCount = (status & STATUS_NULL_COUNT) != 0;
    this.whole = this.value == 0 ? this.full : this.value;
    this.period = countSteps(regs.countRegister, regs.bcd);
  }

  /** Only channel 2 has a gate software drives (port 0x61 bit 0). */
  get gated(): bool {
    return this.index == 2;
  }
}

export class DatasheetPlanner extends ChannelPlanner {
  /** The first PIT clock edge in the window, and the one at or before T. */
  private firstEdge: i64;
  private resumeEdge: i64;
  private gate2: bool = false;

  /** `start`: the destination's clock now; `resume`: T; `port61`: its other bits to keep. */
  constructor(
    private timeline: Timeline,
    private start: i64,
    resume: i64,
    private port61: u32,
  ) {
    super();
    this.firstEdge = pitEdgesAt(start);
    this.resumeEdge = pitEdgesAt(resume);
  }

  // ---- primitives ------------------------------------------------------------------------

  private at(k: i64): i64 {
    const t = pitEdgeTime(k < this.firstEdge ? this.firstEdge : k);
    return t < this.start ? this.start : t;
  }

  private control(k: i64, i: i32, mode: u32, rw: u32, bcd: bool): void {
    // No control word keeps RW mode 0: such a channel is still in its power-on mode.
    if (rw == RW_NONE) return;
    this.timeline.add(this.at(k), PIT_CONTROL_PORT, (<u32>i << 6) | (rw << 4) | (mode << 1) | (bcd ? 1 : 0));
  }

  private writeRaw(k: i64, i: i32, rw: u32, raw: u32): void {
    const port = counterPort(i);
    if (rw == RW_WORD) {
      this.timeline.add(this.at(k), port, raw & 0xff);
      this.timeline.add(this.at(k), port, raw >>> 8);
    } else {
      this.timeline.add(this.at(k), port, rw == RW_MSB ? raw >>> 8 : raw & 0xff);
    }
  }

  private write(k: i64, i: i32, rw: u32, bcd: bool, steps: i64): void {
    this.writeRaw(k, i, rw, rawCount(steps, bcd));
  }

  /** Writes the count register `times` times (how many complete counts the shadow saw). */
  private writeRegister(k: i64, i: i32, regs: PitChannelRegisters, times: u32): void {
    for (let j: u32 = 0; j < times; j++) this.writeRaw(k, i, regs.rwMode, regs.countRegister);
  }

  private gate(k: i64, level: bool): void {
    if (level == this.gate2) return;
    this.gate2 = level;
    this.timeline.add(this.at(k), PORT_61, (this.port61 & 0x0e) | (level ? 1 : 0));
  }

  /**
   * Leaves the element holding `value` at T (counting down to it if `counting`), with the
   * final control word written in the returned interval and the count register holding the
   * shadow's value: a mode-4 load sets the element, a mode-1 control word keeps it (mode 1
   * counts on regardless of gate and loads only on a trigger) while the register value is
   * written, then the real control word. With no clock edge in the window the element keeps
   * its power-on 0.
   */
  private preset(i: i32, regs: PitChannelRegisters, value: i64, counting: bool): i64 {
    const bcd = regs.bcd;
    let k = this.firstEdge;
    // Without a control word the element keeps its power-on 0 (RW mode 0 cannot be restored).
    if (regs.rwMode == RW_NONE) return k;
    if (this.resumeEdge > k) {
      this.control(k, i, 4, RW_WORD, bcd);
      k++;
      this.write(k - 1, i, RW_WORD, bcd, counting ? (value + (this.resumeEdge - k)) % countModulus(bcd) : value);
    }
    this.control(k, i, 1, RW_WORD, bcd);
    this.writeRaw(k, i, RW_WORD, regs.countRegister);
    this.control(k, i, regs.mode, regs.rwMode, bcd);
    return k;
  }

  /**
   * The latest edge at which a count can load (written in the interval before it) such that a
   * count of `base + perEdge * (resumeEdge - loadEdge)` is writable; resumeEdge if none is (the
   * count is then written anyway).
   * Mode 3 (2 per edge) needs at least 2: a count of 1 has no low half-cycle, so the next
   * boundary would start a high one.
   */
  private latestLoad(base: i64, perEdge: i64, rw: u32, bcd: bool): i64 {
    const full = countModulus(bcd);
    for (let loadEdge = this.resumeEdge; loadEdge > this.firstEdge; loadEdge--) {
      const steps = base + perEdge * (this.resumeEdge - loadEdge);
      if (steps > full) break;
      if (steps >= perEdge && writable(steps, rw, bcd)) return loadEdge;
    }
    return this.resumeEdge;
  }

  // ---- per channel -------------------------------------------------------------------------

  /** Plans channel `i` to reach, at T, the captured `status` and `count` with gate `gate`. */
  plan(i: i32, regs: PitChannelRegisters, status: u32, count: u32, gate: bool): void {
    const c = new ChannelTarget(i, regs, status, count, gate);
    const out = c.out;
    if (regs.rwMode == RW_NONE) {
      // Never given a control word: still in its power-on mode 3 with OUT low until a gate-2
      // fall drives it high (a rise does nothing before a count is written).
      if (c.gated && out) {
        this.gate(this.firstEdge, true);
        this.gate(this.firstEdge, false);
      }
      if (regs.countsWritten == 0) {
        if (c.gated) this.gate(this.firstEdge, gate);
        return;
      }
    }
    const mode = effectiveMode(regs.mode);
    if (mode == 2 || mode == 3) this.planPeriodic(c);
    else if (mode == 0 || mode == 4) this.planOneShot(c);
    else this.planTriggered(c);
  }

  /**
   * Modes 2/3. Stopped by gate 2 after a load: replayed. Frozen otherwise (gate low, or no
   * count since the control word) or a first load due at the next edge: preset the element,
   * then the count writes (the last one in interval resumeEdge when the load is due). Running with
   * NULL COUNT 0: the current period (half-cycle) began with the count register's value, and
   * is replayed. Running with a new count pending: the remaining count is loaded, the pending
   * count written after it to be taken at the next period, as on the source.
   */
  private planPeriodic(c: ChannelTarget): void {
    const written = c.regs.countsWritten;
    const bcd = c.regs.bcd;
    const rw = c.regs.rwMode;
    if (c.gated && !c.gate && written > 0 && !c.nullCount) {
      this.replayGateStop(c);
      return;
    }
    if (c.gated) this.gate(this.firstEdge, c.gate);
    const loadDue = c.gate && written == 1 && c.nullCount;
    if (!c.gate || written == 0 || loadDue) {
      const k = this.preset(c.index, c.regs, c.value, false);
      this.writeRegister(loadDue ? this.resumeEdge : k, c.index, c.regs, written);
      return;
    }
    const mode3 = effectiveMode(c.regs.mode) == 3;
    // Mode 3, output high: a half-cycle loaded from an odd count shows 0 for one extra clock.
    // Its parity is the register's when NULL COUNT is 0; otherwise it is assumed to be (a 0
    // then reads as that extra clock rather than a full even count).
    const odd = mode3 && c.out && ((c.period & 1) != 0 || (c.nullCount && c.value == 0));
    // Edges left in this half-cycle (mode 2: until the reload), and where it began.
    const left = !mode3 ? c.whole : c.out && odd ? c.value / 2 + 1 : c.whole / 2;
    const span = !mode3 ? c.period : c.out ? (c.period + 1) >> 1 : c.period >> 1;
    const begin = this.resumeEdge - (span - left);
    const startsHigh = !mode3 || c.out;
    if (!c.nullCount) {
      this.replay(c.index, c.regs, begin, startsHigh, c.period);
      return;
    }
    this.control(this.firstEdge, c.index, c.regs.mode, rw, bcd);
    if (startsHigh) {
      // A fresh load starts a high half-cycle: load the remaining count, as late as writable.
      const base = !mode3 ? c.whole : odd ? c.value + 1 : c.whole;
      const loadEdge = this.latestLoad(base, mode3 ? 2 : 1, rw, bcd);
      this.write(loadEdge - 1, c.index, rw, bcd, base + (mode3 ? 2 : 1) * (this.resumeEdge - loadEdge));
    } else {
      // A low half-cycle: a short count's high half ends at resumeEdge, where the remaining count
      // (written meanwhile) takes over.
      let first: i64 = 2;
      while (first < c.full && !writable(first, rw, bcd)) first += 2;
      const loadEdge = this.resumeEdge - ((first + 1) >> 1);
      this.write(loadEdge - 1, c.index, rw, bcd, first);
      this.write(loadEdge, c.index, rw, bcd, c.whole);
    }
    this.writeRegister(this.resumeEdge, c.index, c.regs, 1);
  }

  /**
   * Channel 2 in mode 2/3 stopped by its gate after the register's count was loaded: load it,
   * let it run down to the frozen value, and lower the gate in interval resumeEdge.
   */
  private replayGateStop(c: ChannelTarget): void {
    const regs = c.regs;
    const mode3 = effectiveMode(regs.mode) == 3;
    // Mode 3 counts by 2 from the even part of the count (taking the high half-cycle).
    const top = mode3 ? c.period & ~1 : c.period;
    const frozen = c.value == 0 && top == c.full ? c.full : c.value;
    const loadEdge = this.resumeEdge - (top - frozen) / (mode3 ? 2 : 1);
    this.gate(this.firstEdge, true);
    this.control(this.firstEdge, 2, regs.mode, regs.rwMode, regs.bcd);
    this.writeRegister(loadEdge - 1, 2, regs, regs.countsWritten);
    this.gate(this.resumeEdge, false);
  }

  /**
   * Replays a running mode 2/3 channel whose current period (half-cycle) began at edge `begin`
   * with the count register's value: a fresh load there (or half a period before, for a low
   * half) gives the same element, NULL COUNT 0, and the same register. A low half that began
   * too soon after power-on for that took the value from an earlier count's high half: so does
   * the replay, with the shortest such count.
   */
  private replay(i: i32, regs: PitChannelRegisters, begin: i64, startsHigh: bool, period: i64): void {
    let loadEdge = startsHigh ? begin : begin - ((period + 1) >> 1);
    this.control(this.firstEdge, i, regs.mode, regs.rwMode, regs.bcd);
    if (loadEdge > this.firstEdge) {
      this.writeRegister(loadEdge - 1, i, regs, regs.countsWritten);
      return;
    }
    let first: i64 = 2;
    while (!writable(first, regs.rwMode, regs.bcd)) first++;
    loadEdge = begin - ((first + 1) >> 1);
    this.write(loadEdge - 1, i, regs.rwMode, regs.bcd, first);
    this.writeRegister(loadEdge, i, regs, 1);
  }

  /**
   * Modes 0/4. Mode 0 with the first byte of a count held: counting is frozen at that byte's
   * write. A load due at the next edge: preset, then the write(s) in interval resumeEdge. Loaded
   * (NULL COUNT 0): terminal count ahead (mode 0: OUT low; mode 4: assumed while the count is
   * not above the register's) or behind; the register's load is replayed.
   */
  private planOneShot(c: ChannelTarget): void {
    const written = c.regs.countsWritten;
    const bcd = c.regs.bcd;
    const rw = c.regs.rwMode;
    const mode0 = effectiveMode(c.regs.mode) == 0;
    if (mode0 && c.regs.writeMsbNext) {
      if (written > 0 && !c.nullCount) {
        // Loaded, then frozen by the first byte of the next count as many edges later as the
        // count went down (modulo its wrap).
        if (c.gated) this.gate(this.firstEdge, true);
        this.control(this.firstEdge, c.index, c.regs.mode, rw, bcd);
        this.writeRegister(this.firstEdge, c.index, c.regs, written);
        const frozenAt = this.firstEdge + 1 + (c.period - c.value + c.full) % c.full;
        if (c.gated) this.gate(frozenAt, c.gate);
        this.timeline.add(this.at(frozenAt), counterPort(c.index), c.regs.heldLsb);
      } else {
        if (c.gated) this.gate(this.firstEdge, c.gate);
        const k = this.preset(c.index, c.regs, c.value, false);
        this.writeRegister(k, c.index, c.regs, written);
        this.timeline.add(this.at(k), counterPort(c.index), c.regs.heldLsb);
      }
      return;
    }
    if (written > 0 && c.nullCount && !mode0 && !c.out) {
      // Mode 4 strobing at resumeEdge with a new count due at the next edge: a 1-clock count first,
      // counted down with the gate up (a stopped channel 2 lost it after the strobe's edge).
      if (c.gated) this.gate(this.firstEdge, true);
      this.control(this.firstEdge, c.index, c.regs.mode, rw, bcd);
      let steps: i64 = 1;
      while (!writable(steps, rw, bcd)) steps++;
      this.write(this.resumeEdge - steps - 1, c.index, rw, bcd, steps);
      if (c.gated) this.gate(this.resumeEdge, c.gate);
      this.writeRegister(this.resumeEdge, c.index, c.regs, written);
      return;
    }
    if (c.gated) this.gate(this.firstEdge, c.gate);
    if (written == 0 || c.nullCount) {
      const k = this.preset(c.index, c.regs, c.value, c.gate);
      if (written > 0) this.writeRegister(this.resumeEdge, c.index, c.regs, written);
      return;
    }
    const armed = mode0 ? !c.out : c.out && c.whole <= c.period;
    this.control(this.firstEdge, c.index, c.regs.mode, rw, bcd);
    if (armed) {
      // Counted down from the register's value; paused channels were then stopped by gate 2.
      const loadEdge = this.resumeEdge - (c.period - c.whole);
      if (!c.gate) this.gate(this.firstEdge, true);
      this.writeRegister(loadEdge - 1, c.index, c.regs, written);
      if (!c.gate) this.gate(this.resumeEdge, false);
      return;
    }
    if (c.gated && !c.gate && c.value == 0 && !mode0 && c.out) {
      // Mode 4 stopped at 0 after its strobe: the gate fell in the strobe's clock, before the
      // edge that would have counted on (a full wrap back to 0 would leave the same state).
      this.gate(this.firstEdge, true);
      this.writeRegister(this.resumeEdge - c.period - 2, c.index, c.regs, written);
      this.gate(this.resumeEdge - 1, false);
      return;
    }
    // Terminal count (mode 4: the strobe) `since` edges ago; a paused channel stopped at resumeEdge.
    const since = c.value == 0 && !mode0 && c.out ? c.full : (c.full - c.value) % c.full;
    if (c.gated && !c.gate) this.gate(this.firstEdge, true);
    this.writeRegister(this.resumeEdge - since - c.period - 1, c.index, c.regs, written);
    if (c.gated) this.gate(this.resumeEdge, c.gate);
  }

  /**
   * Modes 1/5: loads only on a gate-2 rising edge; channels 0 and 1 never trigger. Not
   * triggered (or past the one-shot): the element counts on from the preset. Armed (mode 1:
   * OUT low; mode 5: assumed while the count is not above the register's and NULL COUNT is 0),
   * or mode 5 strobing now: the trigger is replayed.
   */
  private planTriggered(c: ChannelTarget): void {
    const written = c.regs.countsWritten;
    const bcd = c.regs.bcd;
    const rw = c.regs.rwMode;
    const mode1 = effectiveMode(c.regs.mode) == 1;
    const armed = mode1 ? !c.out : c.out ? !c.nullCount && c.whole <= c.period : true;
    if (c.gated && written > 0 && !armed && !c.nullCount) {
      // Triggered with the register's count, past its terminal count `since` edges ago (mode
      // 5: its strobe, which left the count at 0 a full cycle ago if it reads 0 again).
      const since = c.value == 0 && !mode1 ? c.full : (c.full - c.value) % c.full;
      this.control(this.firstEdge, c.index, c.regs.mode, rw, bcd);
      this.writeRegister(this.firstEdge, c.index, c.regs, written);
      this.gate(this.resumeEdge - since - c.period - 1, true);
      this.gate(this.resumeEdge, c.gate);
      return;
    }
    if (c.gated) this.gate(this.firstEdge, armed && written > 0 ? false : c.gate);
    if (!c.gated || written == 0 || !armed) {
      const k = this.preset(c.index, c.regs, c.value, true);
      this.writeRegister(k, c.index, c.regs, written);
      return;
    }
    // Steps from the trigger's load to the terminal count; mode 5 strobing now has 0 left.
    const left = !mode1 && !c.out ? 0 : c.whole;
    this.control(this.firstEdge, c.index, c.regs.mode, rw, bcd);
    if (!c.nullCount) {
      // The trigger took the register's value.
      const loadEdge = this.resumeEdge - (c.period - left);
      this.writeRegister(this.firstEdge, c.index, c.regs, written);
      this.gate(loadEdge - 1, true);
    } else {
      // A count written since the trigger: the trigger takes the remaining count (as late as
      // writable), the register's value follows for the next trigger.
      const loadEdge = this.latestLoad(left, 1, rw, bcd);
      this.write(this.firstEdge, c.index, rw, bcd, left + (this.resumeEdge - loadEdge));
      this.gate(loadEdge - 1, true);
      this.writeRegister(loadEdge, c.index, c.regs, 1);
    }
    this.gate(this.resumeEdge, c.gate);
  }
}
