// Rebuilding a datasheet-model 8254 channel on a freshly reset chip. The counting element, OUT
// and NULL COUNT cannot be written, only driven: each channel gets a short history of control
// words, count writes and gate changes, timed on PIT clock edges inside the window before the
// resume time T, whose end state at T equals what capture read back. Writes land in "interval
// k", the time between edge k and edge k+1, so a count written there loads at edge k+1.
//
// Only the register view and the captured values are used; the hidden phase of the counting
// element is inferred from them (see the notes at each case; pit/state.ts lists what cannot be
// told apart). The window reaches back at least 2^17 clocks (RECONSTRUCT_WINDOW_NS), enough to
// replay the last load, reload or trigger of any channel with the guest's own count.

import { pitEdgeTime, pitEdgesAt } from "../../common/clock";
import {
  PitChannelRegisters, PIT_CONTROL_PORT, RW_NONE, RW_MSB, RW_WORD, STATUS_NULL_COUNT, STATUS_OUT,
  countModulus, countSteps, countValue, effectiveMode, toBcd,
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

export class DatasheetPlanner extends ChannelPlanner {
  private e0: i64;
  private eT: i64;
  private gate2: bool = false;

  /** `start`: the destination's clock now; `resume`: T; `port61`: its other bits to keep. */
  constructor(
    private timeline: Timeline,
    private start: i64,
    resume: i64,
    private port61: u32,
  ) {
    super();
    this.e0 = pitEdgesAt(start);
    this.eT = pitEdgesAt(resume);
  }

  // ---- primitives ------------------------------------------------------------------------

  private at(k: i64): i64 {
    const t = pitEdgeTime(k < this.e0 ? this.e0 : k);
    return t < this.start ? this.start : t;
  }

  private control(k: i64, i: i32, mode: u32, rw: u32, bcd: bool): void {
    // No control word keeps RW mode 0: such a channel is still in its power-on mode.
    if (rw == RW_NONE) return;
    this.timeline.add(this.at(k), PIT_CONTROL_PORT, (<u32>i << 6) | (rw << 4) | (mode << 1) | (bcd ? 1 : 0));
  }

  private writeRaw(k: i64, i: i32, rw: u32, raw: u32): void {
    const port = 0x40 + <u32>i;
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
    let k = this.e0;
    // Without a control word the element keeps its power-on 0 (RW mode 0 cannot be restored).
    if (regs.rwMode == RW_NONE) return k;
    if (this.eT > k) {
      this.control(k, i, 4, RW_WORD, bcd);
      k++;
      this.write(k - 1, i, RW_WORD, bcd, counting ? (value + (this.eT - k)) % countModulus(bcd) : value);
    }
    this.control(k, i, 1, RW_WORD, bcd);
    this.writeRaw(k, i, RW_WORD, regs.countRegister);
    this.control(k, i, regs.mode, regs.rwMode, bcd);
    return k;
  }

  /**
   * The latest load edge L (interval L-1 holds the write) at which a count of
   * `base + perEdge * (eT - L)` is writable; eT if none is (the count is then written anyway).
   * Mode 3 (2 per edge) needs at least 2: a count of 1 has no low half-cycle, so the next
   * boundary would start a high one.
   */
  private latestLoad(base: i64, perEdge: i64, rw: u32, bcd: bool): i64 {
    const full = countModulus(bcd);
    for (let L = this.eT; L > this.e0; L--) {
      const steps = base + perEdge * (this.eT - L);
      if (steps > full) break;
      if (steps >= perEdge && writable(steps, rw, bcd)) return L;
    }
    return this.eT;
  }

  // ---- per channel -------------------------------------------------------------------------

  /** Plans channel `i` to reach, at T, the captured `status` and `count` with gate `gate`. */
  plan(i: i32, regs: PitChannelRegisters, status: u32, count: u32, gate: bool): void {
    const out = (status & STATUS_OUT) != 0;
    if (regs.rwMode == RW_NONE) {
      // Never given a control word: still in its power-on mode 3 with OUT low until a gate-2
      // fall drives it high (a rise does nothing before a count is written).
      if (i == 2 && out) {
        this.gate(this.e0, true);
        this.gate(this.e0, false);
      }
      if (regs.countsWritten == 0) {
        if (i == 2) this.gate(this.e0, gate);
        return;
      }
    }
    const full = countModulus(regs.bcd);
    const value = countValue(count, regs.bcd);
    const nullCount = (status & STATUS_NULL_COUNT) != 0;
    const mode = effectiveMode(regs.mode);
    if (mode == 2 || mode == 3) this.planPeriodic(i, regs, value, full, out, nullCount, gate);
    else if (mode == 0 || mode == 4) this.planOneShot(i, regs, value, full, out, nullCount, gate);
    else this.planTriggered(i, regs, value, full, out, nullCount, gate);
  }

  /**
   * Modes 2/3. Stopped by gate 2 after a load: replayed. Frozen otherwise (gate low, or no
   * count since the control word) or a first load due at the next edge: preset the element,
   * then the count writes (the last one in interval eT when the load is due). Running with
   * NULL COUNT 0: the current period (half-cycle) began with the count register's value, and
   * is replayed. Running with a new count pending: the remaining count is loaded, the pending
   * count written after it to be taken at the next period, as on the source.
   */
  private planPeriodic(i: i32, regs: PitChannelRegisters, value: i64, full: i64, out: bool, nullCount: bool, gate: bool): void {
    const written = regs.countsWritten;
    const bcd = regs.bcd;
    const rw = regs.rwMode;
    if (i == 2 && !gate && written > 0 && !nullCount) {
      this.replayGateStop(regs, value, full);
      return;
    }
    if (i == 2) this.gate(this.e0, gate);
    const loadDue = gate && written == 1 && nullCount;
    if (!gate || written == 0 || loadDue) {
      const k = this.preset(i, regs, value, false);
      this.writeRegister(loadDue ? this.eT : k, i, regs, written);
      return;
    }
    const mode3 = effectiveMode(regs.mode) == 3;
    const whole = value == 0 ? full : value;
    const period = countSteps(regs.countRegister, bcd);
    // Mode 3, output high: a half-cycle loaded from an odd count shows 0 for one extra clock.
    // Its parity is the register's when NULL COUNT is 0; otherwise it is assumed to be (a 0
    // then reads as that extra clock rather than a full even count).
    const odd = mode3 && out && ((period & 1) != 0 || (nullCount && value == 0));
    // Edges left in this half-cycle (mode 2: until the reload), and where it began.
    const left = !mode3 ? whole : out && odd ? value / 2 + 1 : whole / 2;
    const span = !mode3 ? period : out ? (period + 1) >> 1 : period >> 1;
    const begin = this.eT - (span - left);
    const startsHigh = !mode3 || out;
    if (!nullCount) {
      this.replay(i, regs, begin, startsHigh, period);
      return;
    }
    this.control(this.e0, i, regs.mode, rw, bcd);
    if (startsHigh) {
      // A fresh load starts a high half-cycle: load the remaining count, as late as writable.
      const base = !mode3 ? whole : odd ? value + 1 : whole;
      const L = this.latestLoad(base, mode3 ? 2 : 1, rw, bcd);
      this.write(L - 1, i, rw, bcd, base + (mode3 ? 2 : 1) * (this.eT - L));
    } else {
      // A low half-cycle: a short count's high half ends at eT, where the remaining count
      // (written meanwhile) takes over.
      let first: i64 = 2;
      while (first < full && !writable(first, rw, bcd)) first += 2;
      const L = this.eT - ((first + 1) >> 1);
      this.write(L - 1, i, rw, bcd, first);
      this.write(L, i, rw, bcd, whole);
    }
    this.writeRegister(this.eT, i, regs, 1);
  }

  /**
   * Channel 2 in mode 2/3 stopped by its gate after the register's count was loaded: load it,
   * let it run down to the frozen value, and lower the gate in interval eT.
   */
  private replayGateStop(regs: PitChannelRegisters, value: i64, full: i64): void {
    const mode3 = effectiveMode(regs.mode) == 3;
    const period = countSteps(regs.countRegister, regs.bcd);
    // Mode 3 counts by 2 from the even part of the count (taking the high half-cycle).
    const top = mode3 ? period & ~1 : period;
    const frozen = value == 0 && top == full ? full : value;
    const L = this.eT - (top - frozen) / (mode3 ? 2 : 1);
    this.gate(this.e0, true);
    this.control(this.e0, 2, regs.mode, regs.rwMode, regs.bcd);
    this.writeRegister(L - 1, 2, regs, regs.countsWritten);
    this.gate(this.eT, false);
  }

  /**
   * Replays a running mode 2/3 channel whose current period (half-cycle) began at edge `begin`
   * with the count register's value: a fresh load there (or half a period before, for a low
   * half) gives the same element, NULL COUNT 0, and the same register. A low half that began
   * too soon after power-on for that took the value from an earlier count's high half: so does
   * the replay, with the shortest such count.
   */
  private replay(i: i32, regs: PitChannelRegisters, begin: i64, startsHigh: bool, period: i64): void {
    let L = startsHigh ? begin : begin - ((period + 1) >> 1);
    this.control(this.e0, i, regs.mode, regs.rwMode, regs.bcd);
    if (L > this.e0) {
      this.writeRegister(L - 1, i, regs, regs.countsWritten);
      return;
    }
    let first: i64 = 2;
    while (!writable(first, regs.rwMode, regs.bcd)) first++;
    L = begin - ((first + 1) >> 1);
    this.write(L - 1, i, regs.rwMode, regs.bcd, first);
    this.writeRegister(L, i, regs, 1);
  }

  /**
   * Modes 0/4. Mode 0 with the first byte of a count held: counting is frozen at that byte's
   * write. A load due at the next edge: preset, then the write(s) in interval eT. Loaded
   * (NULL COUNT 0): terminal count ahead (mode 0: OUT low; mode 4: assumed while the count is
   * not above the register's) or behind; the register's load is replayed.
   */
  private planOneShot(i: i32, regs: PitChannelRegisters, value: i64, full: i64, out: bool, nullCount: bool, gate: bool): void {
    const written = regs.countsWritten;
    const bcd = regs.bcd;
    const rw = regs.rwMode;
    const mode0 = effectiveMode(regs.mode) == 0;
    const whole = value == 0 ? full : value;
    const period = countSteps(regs.countRegister, bcd);
    if (mode0 && regs.writeMsbNext) {
      if (written > 0 && !nullCount) {
        // Loaded, then frozen by the first byte of the next count as many edges later as the
        // count went down (modulo its wrap).
        if (i == 2) this.gate(this.e0, true);
        this.control(this.e0, i, regs.mode, rw, bcd);
        this.writeRegister(this.e0, i, regs, written);
        const frozenAt = this.e0 + 1 + (period - value + full) % full;
        if (i == 2) this.gate(frozenAt, gate);
        this.timeline.add(this.at(frozenAt), 0x40 + <u32>i, regs.heldLsb);
      } else {
        if (i == 2) this.gate(this.e0, gate);
        const k = this.preset(i, regs, value, false);
        this.writeRegister(k, i, regs, written);
        this.timeline.add(this.at(k), 0x40 + <u32>i, regs.heldLsb);
      }
      return;
    }
    if (written > 0 && nullCount && !mode0 && !out) {
      // Mode 4 strobing at eT with a new count due at the next edge: a 1-clock count first,
      // counted down with the gate up (a stopped channel 2 lost it after the strobe's edge).
      if (i == 2) this.gate(this.e0, true);
      this.control(this.e0, i, regs.mode, rw, bcd);
      let steps: i64 = 1;
      while (!writable(steps, rw, bcd)) steps++;
      this.write(this.eT - steps - 1, i, rw, bcd, steps);
      if (i == 2) this.gate(this.eT, gate);
      this.writeRegister(this.eT, i, regs, written);
      return;
    }
    if (i == 2) this.gate(this.e0, gate);
    if (written == 0 || nullCount) {
      const k = this.preset(i, regs, value, gate);
      if (written > 0) this.writeRegister(this.eT, i, regs, written);
      return;
    }
    const armed = mode0 ? !out : out && whole <= period;
    this.control(this.e0, i, regs.mode, rw, bcd);
    if (armed) {
      // Counted down from the register's value; paused channels were then stopped by gate 2.
      const L = this.eT - (period - whole);
      if (!gate) this.gate(this.e0, true);
      this.writeRegister(L - 1, i, regs, written);
      if (!gate) this.gate(this.eT, false);
      return;
    }
    if (i == 2 && !gate && value == 0 && !mode0 && out) {
      // Mode 4 stopped at 0 after its strobe: the gate fell in the strobe's clock, before the
      // edge that would have counted on (a full wrap back to 0 would leave the same state).
      this.gate(this.e0, true);
      this.writeRegister(this.eT - period - 2, i, regs, written);
      this.gate(this.eT - 1, false);
      return;
    }
    // Terminal count (mode 4: the strobe) `since` edges ago; a paused channel stopped at eT.
    const since = value == 0 && !mode0 && out ? full : (full - value) % full;
    if (i == 2 && !gate) this.gate(this.e0, true);
    this.writeRegister(this.eT - since - period - 1, i, regs, written);
    if (i == 2) this.gate(this.eT, gate);
  }

  /**
   * Modes 1/5: loads only on a gate-2 rising edge; channels 0 and 1 never trigger. Not
   * triggered (or past the one-shot): the element counts on from the preset. Armed (mode 1:
   * OUT low; mode 5: assumed while the count is not above the register's and NULL COUNT is 0),
   * or mode 5 strobing now: the trigger is replayed.
   */
  private planTriggered(i: i32, regs: PitChannelRegisters, value: i64, full: i64, out: bool, nullCount: bool, gate: bool): void {
    const written = regs.countsWritten;
    const bcd = regs.bcd;
    const rw = regs.rwMode;
    const mode1 = effectiveMode(regs.mode) == 1;
    const whole = value == 0 ? full : value;
    const period = countSteps(regs.countRegister, bcd);
    const armed = mode1 ? !out : out ? !nullCount && whole <= period : true;
    if (i == 2 && written > 0 && !armed && !nullCount) {
      // Triggered with the register's count, past its terminal count `since` edges ago (mode
      // 5: its strobe, which left the count at 0 a full cycle ago if it reads 0 again).
      const since = value == 0 && !mode1 ? full : (full - value) % full;
      this.control(this.e0, i, regs.mode, rw, bcd);
      this.writeRegister(this.e0, i, regs, written);
      this.gate(this.eT - since - period - 1, true);
      this.gate(this.eT, gate);
      return;
    }
    if (i == 2) this.gate(this.e0, armed && written > 0 ? false : gate);
    if (i != 2 || written == 0 || !armed) {
      const k = this.preset(i, regs, value, true);
      this.writeRegister(k, i, regs, written);
      return;
    }
    // Steps from the trigger's load to the terminal count; mode 5 strobing now has 0 left.
    const left = !mode1 && !out ? 0 : whole;
    this.control(this.e0, i, regs.mode, rw, bcd);
    if (!nullCount) {
      // The trigger took the register's value.
      const L = this.eT - (period - left);
      this.writeRegister(this.e0, i, regs, written);
      this.gate(L - 1, true);
    } else {
      // A count written since the trigger: the trigger takes the remaining count (as late as
      // writable), the register's value follows for the next trigger.
      const L = this.latestLoad(left, 1, rw, bcd);
      this.write(this.e0, i, rw, bcd, left + (this.eT - L));
      this.gate(L - 1, true);
      this.writeRegister(L, i, regs, 1);
    }
    this.gate(this.eT, gate);
  }
}
