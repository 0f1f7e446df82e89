// The hypervisor's mirror of the 8254's write-only and hidden register state, learned from the
// guest accesses it traps: per channel the control fields, the count register, the write
// flip-flop and held LSB, the read flip-flop, and which count/status latches are outstanding.
// It runs the same register state machine as the device (registers/pit.ts) on the trapped
// accesses. What a latch captured is produced by the chip and cannot be known before the guest
// reads it, so the shadow keeps the latch's presence and shape, not its value; capture reads
// the value through the bus (see pit/state.ts).
//
// Under the blmvisor policy it traps every write to 0x40–0x43 (each carries hidden state) and a
// data-port read only while that read changes hidden state: a latch is outstanding or the RW
// mode is LSB-then-MSB (the read flip-flop toggles). Port 0x61 reads back everything it holds.

import { FieldIO } from "../../common/fields";
import { PIT_CHANNELS, PIT_CONTROL_PORT, PitChannelRegisters, RW_WORD, pitCommand } from "../../registers/pit";
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
    }
  }

  observeWrite(port: u32, value: u32): void {
    if (port == PIT_CONTROL_PORT) pitCommand(this.channels, value);
    else if (isDataPort(port)) {
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

  observeRead(port: u32, value: u32): void {
    if (isDataPort(port)) unchecked(this.channels[<i32>(port - FIRST_DATA_PORT)]).readData();
  }

  armTraps(traps: IoTraps): void {
    for (let i = 0; i < PIT_CHANNELS; i++) this.armChannelTraps(i, traps);
    traps.put(PIT_CONTROL_PORT, TRAP_WRITE);
  }

  /** After a trapped access to `port`: a data port changes only its own channel's needs. */
  armPortTraps(port: u32, traps: IoTraps): void {
    if (isDataPort(port)) this.armChannelTraps(<i32>(port - FIRST_DATA_PORT), traps);
    else this.armTraps(traps);
  }

  @inline
  private armChannelTraps(i: i32, traps: IoTraps): void {
    const reads: u8 = unchecked(this.channels[i]).readChangesState() ? TRAP_READ : 0;
    traps.put(FIRST_DATA_PORT + <u32>i, TRAP_WRITE | reads);
  }

  describe(io: FieldIO): void {
    io.begin("channels");
    for (let i = 0; i < PIT_CHANNELS; i++) {
      io.beginIndex(i);
      unchecked(this.channels[i]).describeRegisters(io);
      unchecked((this.restartKnown[i] = io.flag("restartKnown", unchecked(this.restartKnown[i]))));
      unchecked((this.restartTime[i] = io.time("restartTime", unchecked(this.restartTime[i]))));
      io.end();
    }
    io.end();
  }

  copyFrom(from: PitShadow): void {
    this.compatQemu = from.compatQemu;
    for (let i = 0; i < PIT_CHANNELS; i++) unchecked(this.channels[i]).copyRegisters(unchecked(from.channels[i]));
    this.copyRestarts(from);
  }

  /** Takes over when the guest's count writes happened (a rebuild's own writes do not count). */
  copyRestarts(from: PitShadow): void {
    for (let i = 0; i < PIT_CHANNELS; i++) {
      unchecked((this.restartKnown[i] = unchecked(from.restartKnown[i])));
      unchecked((this.restartTime[i] = unchecked(from.restartTime[i])));
    }
  }
}

@inline
function isDataPort(port: u32): bool {
  return port >= FIRST_DATA_PORT && port < FIRST_DATA_PORT + <u32>PIT_CHANNELS;
}
