// `expect(actual, label).toBe / .toEqual / .toMatch` and their `.not` for property loops:
// vitest's matcher (and the label) runs only on a difference, so verdicts and messages stay
// vitest's without the cost of an expect() per value a case checks (hundreds per case).
// docs/performance.md (B6).

import { isDeepStrictEqual } from "node:util";
import { expect } from "vitest";

type Label = string | (() => string);

const text = (label?: Label): string | undefined => (typeof label === "function" ? label() : label);

/** `expect(actual, label).toBe(expected)`. */
export function expectIs(actual: unknown, expected: unknown, label?: Label): void {
  if (!Object.is(actual, expected)) expect(actual, text(label)).toBe(expected);
}

/** `expect(actual, label).not.toBe(unexpected)`. */
export function expectIsNot(actual: unknown, unexpected: unknown, label?: Label): void {
  if (Object.is(actual, unexpected)) expect(actual, text(label)).not.toBe(unexpected);
}

/**
 * `expect(actual, label).toEqual(expected)`. Node's deep strict equality is stricter than
 * toEqual (prototypes, undefined properties, -0), so what it accepts toEqual accepts as well.
 */
export function expectEqual(actual: unknown, expected: unknown, label?: Label): void {
  if (!isDeepStrictEqual(actual, expected)) expect(actual, text(label)).toEqual(expected);
}

/** `expect(actual, label).toMatch(pattern)`. */
export function expectMatch(actual: string, pattern: RegExp, label?: Label): void {
  if (actual.search(pattern) < 0) expect(actual, text(label)).toMatch(pattern);
}

/** `expect(actual, label).not.toMatch(pattern)`. */
export function expectNoMatch(actual: string, pattern: RegExp, label?: Label): void {
  if (actual.search(pattern) >= 0) expect(actual, text(label)).not.toMatch(pattern);
}
