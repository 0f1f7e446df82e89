// One channel of the 8254 as the device sees it: the shared register interface plus a counting
// element. The datasheet and QEMU counting elements differ enough to be separate subclasses.

import { FieldIO } from "../common/fields";
import { PitChannelRegisters } from "../registers/pit";

export abstract class PitCounter extends PitChannelRegisters {
  /** GATE input. Channels 0 and 1 have theirs tied high. */
  gate: bool = true;

  /** Power-on state of channel `index`. */
  abstract resetCounter(index: i32): void;
  /** Brings the counting element to time `now` (PIT clock edge `edge`): O(1). */
  abstract syncTo(now: i64, edge: i64): void;
  /** GATE changes level at the last synced time. */
  abstract setGate(level: bool): void;
  /** OUT as of the last synced time. */
  abstract out(): bool;
  /** Time (ns) after the last synced time at which OUT may next change; clock.NEVER if never. */
  abstract nextOutChange(): i64;
  /** Counting-element fields for inspect(). */
  abstract describeCounter(io: FieldIO): void;

  describe(io: FieldIO): void {
    this.describeRegisters(io);
    this.describeLatchedValues(io);
    io.flag("gate", this.gate);
    this.describeCounter(io);
  }
}
