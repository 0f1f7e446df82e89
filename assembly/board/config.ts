// How the board is built: which devices it has, its clocks and one wire. Not device state.

export class BoardConfig {
  pic: bool = true;
  pit: bool = true;
  lapic: bool = true;
  ioapic: bool = true;
  /** PIT OUT0 drives ISA line 0. */
  pitIrq0: bool = true;
  /** Follow QEMU 7.2 where it departs from the datasheets. */
  compatQemu: bool = false;
  apicBusHz: i64 = 1_000_000_000;
  tscHz: i64 = 1_000_000_000;
}

