// Port writes scheduled at virtual times, run in time order (ties in the order added) so that
// the plans for several PIT channels can interleave inside one reconstruction window. Every
// write is also shown to a shadow, which thereby tracks the registers the writes leave behind.

import { PitChannelRegisters } from "../../registers/pit";
import { HardwareBus } from "../bus";
import { PitShadow } from "./shadow";

/** Schedules, on a timeline, the writes that rebuild one captured channel. */
export abstract class ChannelPlanner {
  /** Channel `i` with shadow registers `regs`, read back at T as `status` and `count`. */
  abstract plan(i: i32, regs: PitChannelRegisters, status: u32, count: u32, gate: bool): void;
}

class TimedWrite {
  constructor(
    public time: i64,
    public seq: i32,
    public port: u32,
    public value: u32,
  ) {}
}

function earlier(a: TimedWrite, b: TimedWrite): i32 {
  if (a.time != b.time) return a.time < b.time ? -1 : 1;
  return a.seq - b.seq;
}

export class Timeline {
  private writes: Array<TimedWrite> = new Array<TimedWrite>();

  /** A write at `time` (or as soon after as the clock allows). */
  add(time: i64, port: u32, value: u32): void {
    this.writes.push(new TimedWrite(time, this.writes.length, port, value & 0xff));
  }

  /** Performs the writes in time order; none later than `limit` (those run at `limit`). */
  run(bus: HardwareBus, mirror: PitShadow, limit: i64): void {
    const writes = this.writes.sort(earlier);
    for (let i = 0; i < writes.length; i++) {
      const w = unchecked(writes[i]);
      const t = w.time < limit ? w.time : limit;
      if (t > bus.now()) bus.advanceTo(t);
      bus.outb(w.port, w.value);
      mirror.now = bus.now();
      mirror.observeWrite(w.port, w.value);
    }
    this.writes.length = 0;
  }
}
