// QEMU 7.2's HPET as far as the importer needs it (docs/traces.md): the legacy replacement
// route. Setting LEG_RT_CNF disconnects the PIT from GSI 0 and lowers GSI 0 and 8 in the same
// access; while it is set, GSI 0 and 8 are the HPET's timers 0 and 1; clearing it lowers GSI 0,
// reconnects the PIT (which signals its OUT0 level at once) and restores the RTC's level on GSI 8.
// Other register writes may lower a timer's line too; all of these happen during the write.

/** QEMU's HPET: fixed base, 1 KiB of registers (region `hpet`). */
export const HPET_BASE = 0xfed0_0000;
export const HPET_WINDOW = 0x400;
const GENERAL_CONFIG = 0x10;
/** LEG_RT_CNF: the legacy replacement route. */
const LEGACY_ROUTE = 1 << 1;
/** The GSI the RTC drives, and the HPET's timer 1 in legacy mode. */
const RTC_GSI = 8;

/** A GSI change QEMU makes as part of a route switch; level null: whatever level it has. */
interface RouteLine {
  gsi: number;
  level: 0 | 1 | null;
}

export type RouteSwitch = "on" | "off" | null;

export class QemuHpetRoute {
  /** LEG_RT_CNF as last written. */
  legacy = false;
  /** The last guest access was a write to the HPET: the lines logged now are its consequences. */
  writing = false;
  /** The GSI changes the last route switch makes next, in QEMU's order. */
  private pending: RouteLine[] = [];

  /** A guest write to the HPET at `offset`: whether it switched the legacy route on or off. */
  write(offset: number, value: number): RouteSwitch {
    this.writing = true;
    if (offset !== GENERAL_CONFIG) return null;
    const legacy = (value & LEGACY_ROUTE) !== 0;
    if (legacy === this.legacy) return null;
    this.legacy = legacy;
    // On: GSI 0 and 8 lowered. Off: GSI 0 lowered, then the PIT's own signal (the PIT mirror
    // expects it), then GSI 8 at the RTC's level.
    this.pending = legacy ? [{ gsi: 0, level: 0 }, { gsi: RTC_GSI, level: 0 }] : [{ gsi: 0, level: 0 }, { gsi: RTC_GSI, level: null }];
    return legacy ? "on" : "off";
  }

  /** The next guest access begins: a route switch's own lines, if any, are behind. */
  accessEnds(): void {
    this.writing = false;
    this.pending.length = 0;
  }

  /** Whether this GSI change is the next one the last route switch makes (consumed if so). */
  takeSwitchLine(gsi: number, level: 0 | 1): boolean {
    const next = this.pending[0];
    if (next === undefined || next.gsi !== gsi || (next.level !== null && next.level !== level)) return false;
    this.pending.shift();
    return true;
  }

  /** Whether the HPET's own timers drive `gsi` (legacy route: timer 0 on GSI 0, timer 1 on GSI 8). */
  drives(gsi: number): boolean {
    return this.legacy && (gsi === 0 || gsi === RTC_GSI);
  }
}
