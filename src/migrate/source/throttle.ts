// Auto-converge (as QEMU's): when a pre-copy round leaves the guest having dirtied more than half
// of what the round carried, the source slows the guest a step further. docs/migration.md.

/** The first throttle, each further step, the ceiling (fractions of wall time the guest does not run). */
export const THROTTLE_INITIAL = 0.2;
export const THROTTLE_STEP = 0.1;
export const THROTTLE_MAX = 0.99;

/** Whether a round that carried `sentPages` pages with data and left `dirtiedPages` dirty calls for a throttle step. */
export function needsThrottle(dirtiedPages: number, sentPages: number): boolean {
  return dirtiedPages > sentPages / 2;
}

/** The throttle after one more step from `throttle`. */
export function raisedThrottle(throttle: number): number {
  return throttle === 0 ? THROTTLE_INITIAL : Math.min(THROTTLE_MAX, Math.round((throttle + THROTTLE_STEP) * 100) / 100);
}
