// Rebuilding a QEMU-7.2-model channel (compatQemu). There a channel is fully described by its
// count N (the count register's value, known to the shadow) and the time of its last restart
// (a complete count write, or a gate-2 rising edge in modes 1/2/3/5): the count and OUT at T
// are functions of d, the whole PIT ticks since that restart. Capture reads the count (and OUT,
// in the status byte) at T, which gives d back; the plan restarts the channel d ticks before
// T. Which nanosecond inside that tick the source restarted at cannot be read, so the restart
// is placed at the nanosecond the hypervisor saw the count write (the write is trapped) when
// that lies in the window; otherwise in the middle of the tick (or at time 0 when the tick
// reaches back to it, where the power-on restart and early writes put a source): later counts
// and OUT changes may then move by less than one PIT clock (half of one, 419 ns, is the aim;
// up to 806 ns is measured after gate-2 restarts, so tests allow one clock). The window reaches back at
// least the 2^17 ticks d can need.

import { PIT_HZ, edgeTime, pitEdgesAt, ticksIn } from "../../common/clock";
import { PitChannelRegisters, PIT_CONTROL_PORT, RW_MSB, RW_NONE, RW_WORD, STATUS_OUT, countModulus, counterPort } from "../../registers/pit";
import { PitShadow } from "./shadow";
import { ChannelPlanner, Timeline } from "./timeline";

const PORT_61: u32 = 0x61;
const FULL: i64 = countModulus(false);

/** The middle of PIT tick `d` after a restart, in ns from the restart. */
function middleOfTick(d: i64): i64 {
  return (edgeTime(d, PIT_HZ) + edgeTime(d + 1, PIT_HZ) - 1) / 2;
}

/**
 * Ticks since the restart that give the counter `counter` (1 .. N; 0 read back means 2^16)
 * and the level `out` in QEMU's mode `mode` with count `n`: the smallest such d. Modes 4/5
 * with OUT low cannot tell before the strobe from after it: the smallest d is before.
 */
function qemuTicksSince(mode: u32, n: i64, counter: i64, out: bool): i64 {
  if (mode == 0 || mode == 1 || mode == 4 || mode == 5) {
    let d = (n - counter + FULL) % FULL;
    // Mode 0 (OUT high) and mode 1 (OUT low) are past the terminal count; 4/5 high means d == N.
    const past = mode == 0 ? out : mode == 1 ? !out : false;
    if ((mode == 4 || mode == 5) && out) return n;
    while (past && d < n) d += FULL;
    if ((mode == 4 || mode == 5) && d == n) d += FULL;
    return d;
  }
  const whole = counter == 0 ? FULL : counter;
  if (mode == 3) {
    const twice = (n - whole) % n;
    if ((n & 1) != 0) return (twice & 1) == 0 ? twice / 2 : (twice + n) / 2;
    return out ? twice / 2 : twice / 2 + n / 2;
  }
  const r = (n - whole) % n;
  // Mode 2 is high only at a nonzero multiple of N; modes 6/7 (OUT as mode 0) once d >= N.
  if (mode == 2) return r == 0 && out ? n : r;
  return out ? r + n : r;
}

/** Whether `e` ticks since a restart read back like `d` ticks (the smallest fitting d). */
function readsAlike(mode: u32, n: i64, d: i64, e: i64): bool {
  if (mode == 0 || mode == 1 || mode == 4 || mode == 5) {
    if (e % FULL != d % FULL) return false;
    if (mode == 0) return (e >= n) == (d >= n);
    if (mode == 1) return (e < n) == (d < n);
    return (e == n) == (d == n);
  }
  if (e % n != d % n) return false;
  if (mode == 3) return true;
  return mode == 2 ? (e == 0) == (d == 0) : (e >= n) == (d >= n);
}

export class QemuPlanner extends ChannelPlanner {
  constructor(
    private timeline: Timeline,
    private start: i64,
    private resume: i64,
    private port61: u32,
    private seen: PitShadow,
  ) {
    super();
  }

  /**
   * When to restart so that T falls `d` ticks after it: at time 0 when the window reaches back
   * to it and a restart there reads back alike (the power-on restart, or early writes, put a
   * source there; it also settles modes 4/5 past their strobe), else mid-tick.
   */
  private restartTime(i: i32, mode: u32, n: i64, d: i64): i64 {
    // The trapped count write's own timestamp, when it lies in the window and reads back alike
    // (a gate-2 rising edge, which is not trapped, may have restarted the channel since).
    if (unchecked(this.seen.restartKnown[i])) {
      const t = unchecked(this.seen.restartTime[i]);
      if (t >= this.start && t <= this.resume && readsAlike(mode, n, d, ticksIn(this.resume - t, PIT_HZ))) return t;
    }
    if (this.start == 0 && readsAlike(mode, n, d, pitEdgesAt(this.resume))) return 0;
    const t = this.resume - middleOfTick(d);
    return t < this.start ? this.start : t;
  }

  plan(i: i32, regs: PitChannelRegisters, status: u32, counter: u32, gate: bool): void {
    const out = (status & STATUS_OUT) != 0;
    const n: i64 = regs.countRegister == 0 ? FULL : <i64>regs.countRegister;
    const when = this.restartTime(i, regs.mode, n, qemuTicksSince(regs.mode, n, <i64>counter, out));
    const rw = regs.rwMode;
    const gatePort = (this.port61 & 0x02) | (gate ? 1 : 0);
    if (rw == RW_NONE && regs.countsWritten == 0) {
      // Never written: the power-on restart at time 0 holds on both sides, unless the gate
      // rose since (only visible, and replayed, while it is still high).
      if (i == 2 && gate) this.timeline.add(when, PORT_61, gatePort);
      return;
    }
    const mode = regs.mode;
    // The gate first: a rising edge restarts modes 1/2/3/5, and the write below restarts again.
    if (i == 2 && gate) this.timeline.add(this.start, PORT_61, gatePort);
    const port = counterPort(i);
    const raw = <u32>(n & 0xffff);
    const control = (<u32>i << 6) | (mode << 1) | (regs.bcd ? 1 : 0);
    if (regs.countsWritten == 0) {
      // The last control word came after the last count: load it under a word-format control
      // word (a QEMU control word does not touch counting), then write the real one.
      this.timeline.add(this.start, PIT_CONTROL_PORT, control | (RW_WORD << 4));
      this.writeFormatted(when, port, RW_WORD, raw);
      this.timeline.add(when, PIT_CONTROL_PORT, control | (rw << 4));
      return;
    }
    if (rw != RW_NONE) this.timeline.add(this.start, PIT_CONTROL_PORT, control | (rw << 4));
    // As many complete counts as the shadow saw since the control word; the last restarts.
    for (let j: u32 = 1; j < regs.countsWritten; j++) this.writeFormatted(this.start, port, rw, raw);
    this.writeFormatted(when, port, rw, raw);
  }

  private writeFormatted(t: i64, port: u32, rw: u32, raw: u32): void {
    if (rw == RW_WORD) {
      this.timeline.add(t, port, raw & 0xff);
      this.timeline.add(t, port, raw >>> 8);
    } else {
      this.timeline.add(t, port, rw == RW_MSB ? raw >>> 8 : raw & 0xff);
    }
  }
}
