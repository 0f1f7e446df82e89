// Assertions for property loops: `expect(actual, label).toBe(expected)` and `.toEqual(expected)`,
// with vitest's matcher (and the label) called only when a plain comparison finds a difference.
// A property case compares hundreds of values and each expect() costs microseconds; the verdict
// and the failure message are still vitest's own. docs/performance.md (B6).

import { isDeepStrictEqual } from "node:util";
import { expect } from "vitest";

type Label = string | (() => string);

const text = (label?: Label): string | undefined => (typeof label === "function" ? label() : label);

/** `expect(actual, label).toBe(expected)`. */
export function expectIs(actual: unknown, expected: unknown, label?: Label): void {
  if (!Object.is(actual, expected)) expect(actual, text(label)).toBe(expected);
}

/**
 * `expect(actual, label).toEqual(expected)`. Node's deep strict equality is stricter than
 * toEqual (prototypes, undefined properties, -0), so what it accepts toEqual accepts as well.
 */
export function expectEqual(actual: unknown, expected: unknown, label?: Label): void {
  if (!isDeepStrictEqual(actual, expected)) expect(actual, text(label)).toEqual(expected);
}
