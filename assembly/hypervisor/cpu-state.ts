// The CPU state a hypervisor holds for each CPU, as a VMCS does: the activity state with the
// start-up vector (running, waiting for a start-up IPI) and an NMI not yet taken. Read and
// written through the HardwareBus on each CPU in turn (docs/hypervisor.md, "Several CPUs").

import { FieldIO } from "../common/fields";
import { MAX_CPUS } from "../board/config";
import { SipiState } from "../abi/codes";
import { HardwareBus } from "./bus";

/** How a start-up state is held in a record field: a vector 0–255, or one of these. */
const RECORD_RESET: u32 = 0x100;
const RECORD_WAITING: u32 = 0x101;

export class CpuRecord {
  /** Number of CPUs described (the board's). */
  count: i32 = 1;
  /** The CPU the guest operations were running on at capture. */
  current: i32 = 0;
  /** Per CPU: RECORD_RESET, RECORD_WAITING or the start-up vector. */
  startUp: StaticArray<u32> = new StaticArray<u32>(MAX_CPUS);
  nmiPending: StaticArray<bool> = new StaticArray<bool>(MAX_CPUS);

  describe(io: FieldIO): void {
    this.current = <i32>io.field("current", <u32>this.current, <u32>this.count - 1);
    for (let k = 0; k < this.count; k++) {
      io.beginIndex(k);
      unchecked((this.startUp[k] = io.field("startUp", unchecked(this.startUp[k]), RECORD_WAITING)));
      unchecked((this.nmiPending[k] = io.flag("nmiPending", unchecked(this.nmiPending[k]))));
      io.end();
    }
  }
}

/** Reads every CPU's state; leaves the bus on the CPU it was on. */
export function captureCpus(bus: HardwareBus, out: CpuRecord): void {
  const current = bus.cpu();
  out.count = bus.config().cpus;
  out.current = current;
  for (let k = 0; k < out.count; k++) {
    bus.selectCpu(k);
    const s = bus.sipiState();
    unchecked((out.startUp[k] = s == SipiState.Reset ? RECORD_RESET : s == SipiState.Waiting ? RECORD_WAITING : <u32>s));
    unchecked((out.nmiPending[k] = bus.nmiPending()));
  }
  bus.selectCpu(current);
}

/** An acknowledge needs a running CPU: the current one runs until reconstructCpus. */
export function runDuringRebuild(bus: HardwareBus): void {
  bus.setSipiState(SipiState.Reset);
}

/** Writes every CPU's state and selects the CPU that was current at capture. */
export function reconstructCpus(bus: HardwareBus, rec: CpuRecord): void {
  for (let k = 0; k < rec.count; k++) {
    bus.selectCpu(k);
    const s = unchecked(rec.startUp[k]);
    bus.setSipiState(s == RECORD_RESET ? SipiState.Reset : s == RECORD_WAITING ? SipiState.Waiting : <i32>s);
    bus.setNmiPending(unchecked(rec.nmiPending[k]));
  }
  bus.selectCpu(rec.current);
}
