// The local APIC timer's phase: where inside a divided-clock period the count stands. No
// register holds it, so a timer rebuilt from its current count alone starts a fresh period
// at the resume and lags by up to one period. Software learns the phase the only way it can:
// by watching the current count change while time passes. Once the source will never run the
// guest again (a migration's commit) the hypervisor polls the count once per nanosecond for at
// most one divided period; the source's clock runs on meanwhile, which only the guest, paused
// for good, could have noticed. The destination, told the phase before it resumes the guest,
// restarts the count at the moment it changed (see ApicTimerFixup). A count that cannot change
// (0, or a periodic count of 1 on the datasheet model, which reloads 1) shows no phase, and
// none is needed but for that periodic 1.

import { edgeTime } from "../../common/clock";
import { REG_CURRENT_COUNT, TimerMode, divisorOf, timerModeOf } from "../../registers/lapic";
import { LapicPort, lapicPage } from "./access";
import { LocalApicRecord } from "./record";
import { HardwareBus } from "../bus";
import { PendingFixup } from "../fixup";

/** Longest divided period the probe waits out (128 × a 2 MHz bus clock). */
export const MAX_TIMER_PHASE_NS: u32 = 65_536;

export class TimerPhaseProbe {
  /** How many nanoseconds to watch: one divided period, or 0 when there is nothing to learn. */
  window: i64 = 0;
  private lapic: LapicPort;

  constructor(private bus: HardwareBus, private rec: LocalApicRecord) {
    this.lapic = new LapicPort(bus, lapicPage(bus));
    this.window = probeWindow(bus, rec);
  }

  /** True once the count, as the guest would read it (through `fixup`, during a countdown), has changed. */
  changed(fixup: PendingFixup | null): bool {
    return this.lapic.readAsGuest(REG_CURRENT_COUNT, fixup) != this.rec.currentCount;
  }
}

function probeWindow(bus: HardwareBus, rec: LocalApicRecord): i64 {
  if (!rec.pageCaptured) return 0;
  const c = bus.config();
  const mode = timerModeOf(unchecked(rec.lvt[0]), c.compatQemu);
  if (mode == TimerMode.TscDeadline) return 0;
  // A count at 0 stays there, but for QEMU's periodic one, which reloads at its expiry.
  const reloads = c.compatQemu && mode == TimerMode.Periodic && rec.initialCount != 0;
  if (rec.currentCount == 0 && !reloads) return 0;
  const period = edgeTime(divisorOf(rec.divideConfig), c.apicBusHz);
  return period <= <i64>MAX_TIMER_PHASE_NS ? period : 0;
}
