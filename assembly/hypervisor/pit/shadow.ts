// The hypervisor's mirror of the 8254's write-only and hidden register state, learned from the
// guest accesses it traps: per channel the control fields, the count register, the write
// flip-flop and held LSB, the read flip-flop, and which count/status latches are outstanding.
// It runs the same register state machine as the device (registers/pit.ts) on the trapped
// accesses. What a latch captured is produced by the chip and cannot be known before the guest
// reads it, so the shadow keeps the latch's presence and shape, not its value; capture reads
// the value through the bus (see pit/state.ts) and hands it back: from then on the hypervisor
// holds that latch and answers the guest's reads of it itself (`heldRead`), since those reads
// exit anyway, until the latch is consumed or released. The chip meanwhile holds no latch;
// latch commands for a held latch, which the chip would obey, are kept from it
// (`forwardedCommands`): a chip ignores them while its own latch is pending.
//
// Under the blmvisor policy it traps every write to 0x40–0x43 (each carries hidden state) and a
// data-port read only while that read changes hidden state: a latch is outstanding or the RW
// mode is LSB-then-MSB (the read flip-flop toggles). Port 0x61 reads back everything it holds,
// except when gate 2 last rose: a rising edge triggers a load at the next PIT clock in modes
// 1, 2, 3 and 5 (datasheet), which no register shows until that clock. While channel 2 is in
// such a mode with a count written, writes to 0x61 are trapped and the shadow notes the time
// of each rising edge (reading gate 2 back just before the write), so a capture within the
// same PIT clock rebuilds the trigger (pit/state.ts).

import { NEVER, pitEdgesAt } from "../../common/clock";
import { FieldIO } from "../../common/fields";
import { LATCH_MSB, LATCH_NONE, PIT_CHANNELS, PIT_CONTROL_PORT, PitChannelRegisters, RW_WORD, effectiveMode, pitCommand, pitCommandChannel } from "../../registers/pit";
import { HardwareBus } from "../bus";
import { DeviceShadow, IoTraps, TRAP_READ, TRAP_WRITE } from "../traps";

const FIRST_DATA_PORT: u32 = 0x40;

export class PitShadow extends DeviceShadow {
  channels: StaticArray<PitChannelRegisters> = [new PitChannelRegisters(), new PitChannelRegisters(), new PitChannelRegisters()];
  private compat: bool = false;
  /**
   * The time of the access being observed, as the exit handler timestamps it. A count write is
   * a trapped access, so the hypervisor knows the nanosecond each channel last restarted
   * counting on a count write — which QEMU's PIT counts from and no register shows.
   */
  now: i64 = 0;
  /** Per channel: whether a count write was seen since reset, and when the last one completed. */
  restartKnown: StaticArray<bool> = new StaticArray<bool>(PIT_CHANNELS);
  restartTime: StaticArray<i64> = new StaticArray<i64>(PIT_CHANNELS);
  /**
   * Per channel: whether the pending count and status latches are held here (their values in
   * the channel's latchedCount and latchedStatus) rather than in the chip.
   */
  heldCount: StaticArray<bool> = new StaticArray<bool>(PIT_CHANNELS);
  heldStatus: StaticArray<bool> = new StaticArray<bool>(PIT_CHANNELS);
  /** When gate 2 last rose while its writes were trapped (datasheet model); NEVER if not since. */
  gate2RoseAt: i64 = NEVER;

  /** Which register semantics the chip follows (QEMU 7.2's or the datasheet's); kept by reset(). */
  get compatQemu(): bool {
    return this.compat;
  }
  set compatQemu(on: bool) {
    this.compat = on;
    for (let i = 0; i < PIT_CHANNELS; i++) unchecked(this.channels[i]).compatQemu = on;
  }

  reset(): void {
    for (let i = 0; i < PIT_CHANNELS; i++) {
      unchecked(this.channels[i]).resetRegisters();
      unchecked((this.restartKnown[i] = false));
      unchecked((this.restartTime[i] = 0));
      unchecked((this.heldCount[i] = false));
      unchecked((this.heldStatus[i] = false));
    }
    this.gate2RoseAt = NEVER;
  }

  /** Before a trapped write of `value` to port 0x61: notes a rising edge of gate 2. */
  prepareGateWrite(bus: HardwareBus, value: u32): void {
    if (this.compat) return;
    const high = (value & GATE_2) != 0;
    if (!high) this.gate2RoseAt = NEVER;
    else if ((bus.inb(PORT_61) & GATE_2) == 0) this.gate2RoseAt = bus.now();
  }

  /** Whether gate 2 rose within the PIT clock that contains `t`: a trigger is due at its end. */
  gate2TriggerPending(t: i64): bool {
    return this.gate2RoseAt != NEVER && pitEdgesAt(this.gate2RoseAt) == pitEdgesAt(t);
  }

  observeWrite(port: u32, value: u32): void {
    if (port == PIT_CONTROL_PORT) {
      // A control word for channel 2 cancels a trigger its gate left pending.
      if (value >>> 6 == 2 && (value & 0x30) != 0) this.gate2RoseAt = NEVER;
      pitCommand(this.channels, value);
      // A control word or latch changes its own channel only; a read-back any of them.
      const channel = pitCommandChannel(value);
      if (channel >= 0) this.releaseConsumed(channel);
      else for (let i = 0; i < PIT_CHANNELS; i++) this.releaseConsumed(i);
    } else if (isDataPort(port)) {
      const i = <i32>(port - FIRST_DATA_PORT);
      const ch = unchecked(this.channels[i]);
      const completesCount = ch.rwMode != RW_WORD || ch.writeMsbNext;
      ch.writeData(value);
      if (completesCount) {
        unchecked((this.restartKnown[i] = true));
        unchecked((this.restartTime[i] = this.now));
      }
    }
  }

  @inline
  observeRead(port: u32, value: u32): void {
    if (!isDataPort(port)) return;
    const i = <i32>(port - FIRST_DATA_PORT);
    unchecked(this.channels[i]).readData();
    this.releaseConsumed(i);
  }

  /**
   * The byte the guest reads next at `port` if this hypervisor holds it (a latch it took over
   * at a capture), else −1: the chip answers. Changes nothing; observeRead consumes it.
   */
  heldRead(port: u32): i32 {
    if (!isDataPort(port)) return -1;
    const i = <i32>(port - FIRST_DATA_PORT);
    const ch = unchecked(this.channels[i]);
    if (ch.statusLatched) return unchecked(this.heldStatus[i]) ? <i32>ch.latchedStatus : -1;
    if (ch.countLatched == LATCH_NONE || !unchecked(this.heldCount[i])) return -1;
    return <i32>(ch.countLatched == LATCH_MSB ? (ch.latchedCount >>> 8) & 0xff : ch.latchedCount & 0xff);
  }

  /**
   * What of a guest's control-port write goes to the chip: all of it, except latches of what
   * this hypervisor holds (the chip, whose latch that is, would ignore them). Up to two
   * commands, each a byte with COMMAND set, the second 16 bits up; 0: nothing to write.
   */
  forwardedCommands(value: u32): u32 {
    const select = value >>> 6;
    if (select != 3) {
      const latch = (value & 0x30) == 0;
      return latch && unchecked(this.heldCount[<i32>select]) ? 0 : value | COMMAND;
    }
    const picked = value & 0x0e;
    let heldCounts: u32 = 0;
    let heldStatuses: u32 = 0;
    for (let i = 0; i < PIT_CHANNELS; i++) {
      if (unchecked(this.heldCount[i])) heldCounts |= 2 << <u32>i;
      if (unchecked(this.heldStatus[i])) heldStatuses |= 2 << <u32>i;
    }
    const counts = (value & 0x20) == 0 ? picked & ~heldCounts : 0;
    const statuses = (value & 0x10) == 0 ? picked & ~heldStatuses : 0;
    if (counts == statuses) return counts == 0 ? 0 : READ_BACK | counts | COMMAND;
    const countCommand = counts != 0 ? READ_BACK | READ_BACK_NO_STATUS | counts | COMMAND : 0;
    const statusCommand = statuses != 0 ? READ_BACK | READ_BACK_NO_COUNT | statuses | COMMAND : 0;
    return countCommand == 0 ? statusCommand : countCommand | (statusCommand << 16);
  }

  /** Takes over channel `i`'s pending latches with the values a capture read out of the chip. */
  holdLatches(i: i32, count: u32, status: u32): void {
    const ch = unchecked(this.channels[i]);
    if (ch.countLatched != LATCH_NONE && !unchecked(this.heldCount[i])) {
      ch.latchedCount = count;
      unchecked((this.heldCount[i] = true));
    }
    if (ch.statusLatched && !unchecked(this.heldStatus[i])) {
      ch.latchedStatus = status;
      unchecked((this.heldStatus[i] = true));
    }
  }

  /** A held latch read out or released (a datasheet control word) is the chip's business again. */
  @inline
  private releaseConsumed(i: i32): void {
    const ch = unchecked(this.channels[i]);
    if (ch.countLatched == LATCH_NONE) unchecked((this.heldCount[i] = false));
    if (!ch.statusLatched) unchecked((this.heldStatus[i] = false));
  }

  armTraps(traps: IoTraps): void {
    for (let i = 0; i < PIT_CHANNELS; i++) this.armChannelTraps(i, traps);
    traps.put(PIT_CONTROL_PORT, TRAP_WRITE);
  }

  /**
   * After a trapped access of `value` at `port`: a data port access, and a control word or
   * latch for one channel, change only that channel's needs (the control port's own trap never
   * changes); anything else may change any.
   */
  @inline
  armPortTraps(port: u32, value: u32, traps: IoTraps): void {
    const channel = isDataPort(port) ? <i32>(port - FIRST_DATA_PORT) : port == PIT_CONTROL_PORT ? pitCommandChannel(value) : -1;
    if (channel >= 0) this.armChannelTraps(channel, traps);
    else this.armTraps(traps);
  }

  @inline
  private armChannelTraps(i: i32, traps: IoTraps): void {
    const ch = unchecked(this.channels[i]);
    const reads: u8 = ch.readChangesState() ? TRAP_READ : 0;
    traps.put(FIRST_DATA_PORT + <u32>i, TRAP_WRITE | reads);
    if (i == 2) traps.put(PORT_61, !this.compat && gateTriggers(ch) ? TRAP_WRITE : 0);
  }

  describe(io: FieldIO): void {
    io.begin("channels");
    for (let i = 0; i < PIT_CHANNELS; i++) {
      io.beginIndex(i);
      unchecked(this.channels[i]).describeRegisters(io);
      unchecked((this.restartKnown[i] = io.flag("restartKnown", unchecked(this.restartKnown[i]))));
      unchecked((this.restartTime[i] = io.time("restartTime", unchecked(this.restartTime[i]))));
      this.describeHeld(io, i);
      io.end();
    }
    io.end();
    const rose = io.flag("gate2Rose", this.gate2RoseAt != NEVER);
    const at = io.time("gate2RoseAt", rose ? this.gate2RoseAt : 0);
    this.gate2RoseAt = rose ? at : NEVER;
  }

  /** The latches held here and their values (0 where none is held, so records compare equal). */
  private describeHeld(io: FieldIO, i: i32): void {
    const ch = unchecked(this.channels[i]);
    const count = io.flag("heldCount", unchecked(this.heldCount[i]) && ch.countLatched != LATCH_NONE);
    const status = io.flag("heldStatus", unchecked(this.heldStatus[i]) && ch.statusLatched);
    unchecked((this.heldCount[i] = count));
    unchecked((this.heldStatus[i] = status));
    ch.latchedCount = io.field("heldCountValue", count ? ch.latchedCount : 0, 0xffff);
    ch.latchedStatus = io.field("heldStatusValue", status ? ch.latchedStatus : 0, 0xff);
  }

  copyFrom(from: PitShadow): void {
    this.compatQemu = from.compatQemu;
    for (let i = 0; i < PIT_CHANNELS; i++) unchecked(this.channels[i]).copyRegisters(unchecked(from.channels[i]));
    this.copyRestarts(from);
    this.copyHeld(from);
    this.gate2RoseAt = from.gate2RoseAt;
  }

  /** Takes over the latches `from` holds, with the read flip-flop the guest sees meanwhile. */
  copyHeld(from: PitShadow): void {
    for (let i = 0; i < PIT_CHANNELS; i++) {
      const ch = unchecked(this.channels[i]);
      const src = unchecked(from.channels[i]);
      const count = unchecked(from.heldCount[i]);
      const status = unchecked(from.heldStatus[i]);
      unchecked((this.heldCount[i] = count));
      unchecked((this.heldStatus[i] = status));
      if (count) {
        ch.countLatched = src.countLatched;
        ch.latchedCount = src.latchedCount;
      }
      if (status) {
        ch.statusLatched = true;
        ch.latchedStatus = src.latchedStatus;
      }
      if (count || status) ch.readMsbNext = src.readMsbNext;
    }
  }

  /** Takes over when the guest's count writes happened (a rebuild's own writes do not count). */
  copyRestarts(from: PitShadow): void {
    for (let i = 0; i < PIT_CHANNELS; i++) {
      unchecked((this.restartKnown[i] = unchecked(from.restartKnown[i])));
      unchecked((this.restartTime[i] = unchecked(from.restartTime[i])));
    }
  }
}

const PORT_61: u32 = 0x61;
const GATE_2: u32 = 0x01;

/** Whether a rising gate starts a load in the channel's mode (1, 2, 3, 5), once it has a count. */
@inline
function gateTriggers(ch: PitChannelRegisters): bool {
  const mode = effectiveMode(ch.mode);
  return ch.countsWritten > 0 && mode != 0 && mode != 4;
}

/** Marks a command in forwardedCommands' answer; the read-back command's fixed bits. */
export const COMMAND: u32 = 0x100;
const READ_BACK: u32 = 0xc0;
const READ_BACK_NO_COUNT: u32 = 0x20;
const READ_BACK_NO_STATUS: u32 = 0x10;

/**
 * The read flip-flop the chip must stand at while the shadow's latches are held, so that the
 * guest finds it right once they are consumed: the datasheet chip reads a latch through the
 * same flip-flop and a two-byte latch always ends at the LSB; QEMU's latched reads leave it.
 */
export function chipReadMsbNext(ch: PitChannelRegisters): bool {
  if (!ch.compatQemu && ch.rwMode == RW_WORD && ch.countLatched != LATCH_NONE) return false;
  return ch.readMsbNext;
}

@inline
function isDataPort(port: u32): bool {
  return port >= FIRST_DATA_PORT && port < FIRST_DATA_PORT + <u32>PIT_CHANNELS;
}
