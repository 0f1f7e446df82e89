// The analytic pre-copy model, the token-bucket link, size and rate parsing, the shared-token
// authentication, and the report's charts: the pieces of a migration that need no network.

import { chmodSync, mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { generateToken, loadToken, newNonce, proof, verifyProof, weakTokenProblem } from "../src/migrate/transport/auth.js";
import { TokenBucket } from "../src/migrate/transport/link.js";
import { predict } from "../src/migrate/report/model.js";
import { roundChartSvg, sparkline } from "../src/migrate/report/report.js";
import type { MigrationReport } from "../src/migrate/report/metrics.js";
import { parseRate, parseSize } from "../src/migrate/report/units.js";

const MiB = 2 ** 20;

describe("pre-copy model", () => {
  it("follows Vᵢ = M·(d/B)ⁱ and stops when the next round fits the downtime limit", () => {
    // M = 1024 MiB, B = 100 MiB/s, d = 50 MiB/s, limit 300 ms = 30 MiB.
    const p = predict({ memoryBytes: 1024 * MiB, bandwidth: 100 * MiB, dirtyRate: 50 * MiB, downtimeLimitMs: 300, maxRounds: 30 });
    expect(p.ratio).toBe(0.5);
    // 1024, 512, 256, 128, 64, then 32 > 30 goes on once more: 16 MiB is stop-and-copy.
    expect(p.roundBytes.map((b) => b / MiB)).toEqual([1024, 512, 256, 128, 64, 32, 16]);
    expect(p.rounds).toBe(6);
    expect(p.stopCopyBytes).toBe(16 * MiB);
    expect(p.downtimeMs).toBeCloseTo(160);
    expect(p.totalMs).toBeCloseTo(((2048 - 16) / 100) * 1000);
    expect(p.closedFormTotalMs).toBeCloseTo(20_480);
    expect(p.meetsLimit).toBe(true);
  });

  it("needs one round when the guest dirties nothing", () => {
    const p = predict({ memoryBytes: 64 * MiB, bandwidth: 100 * MiB, dirtyRate: 0, downtimeLimitMs: 300, maxRounds: 30 });
    expect(p.rounds).toBe(1);
    expect(p.downtimeMs).toBe(0);
    expect(p.totalMs).toBeCloseTo(640);
  });

  it("does not converge when d ≥ B: every round carries all memory up to the cap", () => {
    const p = predict({ memoryBytes: 32 * MiB, bandwidth: 10 * MiB, dirtyRate: 20 * MiB, downtimeLimitMs: 300, maxRounds: 5 });
    expect(p.closedFormTotalMs).toBe(Infinity);
    expect(p.rounds).toBe(5);
    expect(p.roundBytes.every((b) => b === 32 * MiB)).toBe(true);
    expect(p.meetsLimit).toBe(false);
    expect(p.downtimeMs).toBeCloseTo(3200);
  });

  it("never predicts more than M/(B−d) in total, and fits the limit whenever it stops before the cap", () => {
    fc.assert(
      fc.property(
        fc.integer({ min: 1, max: 2 ** 34 }),
        fc.integer({ min: 1, max: 2 ** 30 }),
        fc.double({ min: 0, max: 0.99, noNaN: true }),
        fc.integer({ min: 1, max: 2000 }),
        fc.integer({ min: 1, max: 50 }),
        (M, B, ratio, limit, cap) => {
          const p = predict({ memoryBytes: M, bandwidth: B, dirtyRate: ratio * B, downtimeLimitMs: limit, maxRounds: cap });
          expect(p.totalMs).toBeLessThanOrEqual(p.closedFormTotalMs * (1 + 1e-9));
          expect(p.rounds).toBeLessThanOrEqual(cap);
          if (p.rounds < cap) expect(p.downtimeMs).toBeLessThanOrEqual(limit * (1 + 1e-9));
        },
      ),
    );
  });

  it("refuses a meaningless input", () => {
    expect(() => predict({ memoryBytes: 1, bandwidth: 0, dirtyRate: 0, downtimeLimitMs: 300, maxRounds: 3 })).toThrow(/bandwidth/);
    expect(() => predict({ memoryBytes: 1, bandwidth: 1, dirtyRate: 0, downtimeLimitMs: 300, maxRounds: 0 })).toThrow(/round cap/);
  });
});

describe("token bucket", () => {
  it("lets a burst through, then paces to the rate", () => {
    const rate = 1_000_000; // bytes per second
    const bucket = new TokenBucket(rate, 100_000, 0);
    let now = 0;
    let sent = 0;
    // Send 10 frames of 50 000 bytes as fast as the bucket allows.
    for (let i = 0; i < 10; i++) {
      for (let wait = bucket.take(50_000, now); wait > 0; wait = bucket.take(50_000, now)) now += wait;
      sent += 50_000;
    }
    // The first 100 000 bytes are the burst; the other 400 000 take 0.4 s.
    expect(sent).toBe(500_000);
    expect(now).toBeCloseTo(400, 0);
  });

  it("holds a frame larger than the burst for the time the link needs to carry it", () => {
    const bucket = new TokenBucket(1000, 100, 0);
    // 100 bytes in the bucket; 400 more take 0.4 s.
    expect(bucket.take(500, 0)).toBeCloseTo(400);
    expect(bucket.take(500, 400)).toBe(0);
    // Nothing is left: the next 100 bytes wait 0.1 s.
    expect(bucket.take(100, 400)).toBeCloseTo(100);
    // An idle link fills the bucket up to the burst only.
    expect(bucket.take(200, 10_000)).toBeCloseTo(100);
  });

  it("keeps up to a burst of the time a sender came back late for a large frame", () => {
    const bucket = new TokenBucket(1000, 100, 0);
    expect(bucket.take(500, 0)).toBeCloseTo(400);
    // Back 50 ms late: the link carried 50 bytes more meanwhile, and the next 50 go at once.
    expect(bucket.take(500, 450)).toBe(0);
    expect(bucket.take(50, 450)).toBe(0);
    expect(bucket.take(500, 450)).toBeCloseTo(500);
    // Back very late: no more than the burst is kept.
    expect(bucket.take(500, 10_000)).toBe(0);
    expect(bucket.take(100, 10_000)).toBe(0);
    expect(bucket.take(1, 10_000)).toBeCloseTo(1);
  });
});

describe("sizes and rates", () => {
  it("reads sizes in binary units", () => {
    expect(parseSize("256M")).toBe(256 * MiB);
    expect(parseSize("1G")).toBe(2 ** 30);
    expect(parseSize("64KiB")).toBe(65536);
    expect(parseSize("4096")).toBe(4096);
    expect(parseSize("1.5G")).toBe(1.5 * 2 ** 30);
    for (const bad of ["", "M", "-1M", "12X", "1e9", "0x100"]) expect(parseSize(bad)).toBeUndefined();
  });

  it("reads byte rates in binary units and bit rates in decimal ones", () => {
    expect(parseRate("100M")).toBe(100 * MiB);
    expect(parseRate("100MB/s")).toBe(100 * MiB);
    expect(parseRate("1Gbit")).toBe(125_000_000);
    expect(parseRate("100Mbps")).toBe(12_500_000);
    expect(parseRate("10Mb")).toBe(1_250_000);
    expect(parseRate("8MBps")).toBe(8 * MiB);
    for (const bad of ["fast", "1Gbitz", "-5M"]) expect(parseRate(bad)).toBeUndefined();
  });
});

describe("authentication", () => {
  const [s, d] = [newNonce(), newNonce()];

  it("accepts the proof of a side that holds the token", () => {
    expect(verifyProof(proof("tok", "source", 1, s, d), "tok", "source", 1, s, d)).toBe(true);
  });

  it("refuses another token, a reflected proof, other nonces, another version, a short proof", () => {
    const good = proof("tok", "source", 1, s, d);
    expect(verifyProof(proof("tik", "source", 1, s, d), "tok", "source", 1, s, d)).toBe(false);
    expect(verifyProof(proof("tok", "destination", 1, s, d), "tok", "source", 1, s, d)).toBe(false);
    expect(verifyProof(good, "tok", "source", 1, newNonce(), d)).toBe(false);
    expect(verifyProof(good, "tok", "source", 2, s, d)).toBe(false);
    expect(verifyProof(good.subarray(0, 16), "tok", "source", 1, s, d)).toBe(false);
  });

  it("reads the token from a file (trimmed) before the environment, and refuses an empty one", () => {
    const dir = mkdtempSync(join(tmpdir(), "blmv-token-"));
    const file = join(dir, "token");
    const [fromFile, fromEnv] = [generateToken(), generateToken()];
    writeFileSync(file, `  ${fromFile}\n`, { mode: 0o600 });
    expect(loadToken(file, { BLMV_TOKEN: fromEnv })).toBe(fromFile);
    expect(loadToken(undefined, { BLMV_TOKEN: fromEnv })).toBe(fromEnv);
    expect(loadToken(undefined, {})).toBeUndefined();
    writeFileSync(file, "\n");
    expect(() => loadToken(file, {})).toThrow(/empty/);
    expect(() => loadToken(undefined, { BLMV_TOKEN: " \t" })).toThrow(/^BLMV_TOKEN is empty$/);
  });

  it("refuses tokens too weak to withstand guessing, and token files others may read or write", () => {
    const dir = mkdtempSync(join(tmpdir(), "blmv-token-"));
    const file = join(dir, "token");
    for (const weak of ["x", "hunter2", "0123456789abcdef0123456789abcde", "a".repeat(64), "abab".repeat(10)]) {
      writeFileSync(file, weak, { mode: 0o600 });
      expect(() => loadToken(file, {})).toThrow(/^token file .*: the token is too weak: .*at least 128 bits of randomness are needed/);
      expect(() => loadToken(undefined, { BLMV_TOKEN: weak })).toThrow(/^BLMV_TOKEN: the token is too weak/);
    }
    for (const strong of [generateToken(), "0123456789abcdef0123456789abcdef".split("").reverse().join(""), "k3Jq9_xZ-4mPa7LwR2tY8v"]) {
      expect(weakTokenProblem(strong)).toBeUndefined();
    }
    writeFileSync(file, generateToken(), { mode: 0o600 });
    for (const mode of [0o644, 0o620, 0o604, 0o640]) {
      chmodSync(file, mode);
      expect(() => loadToken(file, {})).toThrow(`token file ${file} is open to others (mode ${mode.toString(8)}): make it private with chmod 600`);
    }
    chmodSync(file, 0o400);
    expect(loadToken(file, {})).toMatch(/^[A-Za-z0-9_-]{32}$/);
  });
});

describe("report charts", () => {
  it("draw a sparkline scaled to the largest value", () => {
    expect(sparkline([0, 1, 2, 4, 8])).toBe("▁▂▃▅█");
    expect(sparkline([0, 0])).toBe("▁▁");
  });

  it("draw one bar per round sent and one per round dirtied in the SVG", () => {
    const stat = (round: number, pages: number, dirtiedPages: number, stopAndCopy = false) => ({ round, stopAndCopy, pages, zeroPages: 0, bytes: 0, durationMs: 1, dirtiedPages, expectedDowntimeMs: 0, throttlePercent: 0 });
    const svg = roundChartSvg({ status: "completed", workload: "a<b", memoryBytes: 1 << 24, downtimeMs: 5, totalMs: 50, roundStats: [stat(0, 900, 300), stat(1, 300, 40), stat(2, 40, 0, true)] } as MigrationReport);
    expect(svg.startsWith("<svg")).toBe(true);
    expect(svg).toContain("a&#60;b");
    expect(svg.match(/pages sent<\/title>/g)).toHaveLength(3);
    expect(svg.match(/pages dirtied<\/title>/g)).toHaveLength(2);
  });
});
