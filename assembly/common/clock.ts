// Virtual time. Every time in the core is an i64 count of nanoseconds since machine reset;
// nothing here reads a host clock. Conversions split their operands so that no product
// overflows 64 bits for any time the host API can express (up to 2^53 ns).

import { PIT_HZ as PIT_INPUT_HZ } from "./hardware";

export const NS_PER_S: i64 = 1_000_000_000;
/** The PIT input clock as the core computes with it. */
export const PIT_HZ: i64 = PIT_INPUT_HZ;
/** A time later than any event: "never". */
export const NEVER: i64 = i64.MAX_VALUE;

/** Number of clock edges of a `hz` clock at or before time `t`: floor(t * hz / 1e9). */
export function edgesAt(t: i64, hz: i64): i64 {
  const q = t / NS_PER_S;
  const r = t % NS_PER_S;
  return q * hz + (r * hz) / NS_PER_S;
}

/** Time of edge number `n` of a `hz` clock: the smallest t with edgesAt(t, hz) >= n. */
export function edgeTime(n: i64, hz: i64): i64 {
  if (n <= 0) return 0;
  const q = n / hz;
  const r = n % hz;
  return q * NS_PER_S + (r * NS_PER_S + hz - 1) / hz;
}

/** PIT clock edges at or before `t` (the spec's E(t)). */
export function pitEdgesAt(t: i64): i64 {
  return edgesAt(t, PIT_HZ);
}

/** Time of PIT clock edge `n`. */
export function pitEdgeTime(n: i64): i64 {
  return edgeTime(n, PIT_HZ);
}

/** floor(d * hz / 1e9) for a duration d: QEMU's muldiv64(d, hz, 1e9), used by compat mode. */
export function ticksIn(d: i64, hz: i64): i64 {
  return edgesAt(d, hz);
}
