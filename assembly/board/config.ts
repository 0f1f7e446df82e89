// How the board is built: which devices it has, how many CPUs, its clocks and one wire. Not
// device state.

export { MAX_CPUS } from "../abi/codes";

export class BoardConfig {
  pic: bool = true;
  pit: bool = true;
  lapic: bool = true;
  ioapic: bool = true;
  /** CPUs on the board, 1 .. MAX_CPUS; more than one needs the local APICs. */
  cpus: i32 = 1;
  /** PIT OUT0 drives ISA line 0. */
  pitIrq0: bool = true;
  /** Follow QEMU 7.2 where it departs from the datasheets. */
  compatQemu: bool = false;
  apicBusHz: i64 = 1_000_000_000;
  tscHz: i64 = 1_000_000_000;
}

