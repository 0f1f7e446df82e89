// The analytic pre-copy model of the live-migration literature, to set beside a measurement: the
// report applies it post hoc, to the M, B and d the run measured (forecast.ts predicts before the run).
// Memory M goes first (V₀ = M); while round i carries Vᵢ at bandwidth B the guest dirties
// d·Vᵢ/B, which the next round carries: Vᵢ = M·(d/B)ⁱ. The source stops when the next round
// would fit the downtime limit (or at the round cap) and sends that round with the guest
// paused. Summing the geometric series without a cap gives total ≈ M / (B − d). No round can
// carry more than the whole memory, so when d ≥ B every round is capped at M.
//
// The other techniques in the same terms (the CPU and device records are small and left out):
// stop-and-copy sends M with the guest paused (downtime = total = M/B); post-copy sends M once
// after the guest has resumed elsewhere (downtime ≈ 0, total M/B); hybrid runs k pre-copy rounds
// and hands what the last one left, V_k, to post-copy (downtime ≈ 0, total (V₀+…+V_k)/B).

export interface ModelInput {
  /** Bytes the first round carries, M. */
  memoryBytes: number;
  /** Link bandwidth B, bytes per second. */
  bandwidth: number;
  /** Rate d at which the guest dirties distinct memory, bytes per second. */
  dirtyRate: number;
  downtimeLimitMs: number;
  /** Pre-copy rounds after which the source stops whatever the estimate. */
  maxRounds: number;
}

export interface ModelPrediction {
  /** d / B: below 1 the rounds shrink. */
  ratio: number;
  /** Pre-copy rounds (round 0 included) before stop-and-copy. */
  rounds: number;
  /** V₀ … V(rounds−1), bytes, then the stop-and-copy volume last. */
  roundBytes: number[];
  stopCopyBytes: number;
  downtimeMs: number;
  totalMs: number;
  /** M / (B − d); Infinity when d ≥ B (pre-copy alone never converges). */
  closedFormTotalMs: number;
  /** Whether the downtime limit is met before the round cap. */
  meetsLimit: boolean;
  /** Memory bytes sent in all. */
  dataBytes: number;
}

export function predict(input: ModelInput): ModelPrediction {
  const { memoryBytes: M, bandwidth: B, dirtyRate: d, downtimeLimitMs, maxRounds } = input;
  if (!(B > 0)) throw new RangeError(`bandwidth must be positive, got ${B}`);
  if (!(M >= 0) || !(d >= 0)) throw new RangeError("memory and dirty rate must be non-negative");
  if (!Number.isInteger(maxRounds) || maxRounds < 1) throw new RangeError(`round cap must be a positive integer, got ${maxRounds}`);
  const ratio = d / B;
  const limitBytes = (downtimeLimitMs / 1000) * B;
  const roundBytes: number[] = [M];
  let next = Math.min(M, M * ratio);
  while (next > limitBytes && roundBytes.length < maxRounds) {
    roundBytes.push(next);
    next = Math.min(M, next * ratio);
  }
  const rounds = roundBytes.length;
  roundBytes.push(next);
  const sum = roundBytes.reduce((a, v) => a + v, 0);
  return {
    ratio,
    rounds,
    roundBytes,
    stopCopyBytes: next,
    downtimeMs: (next / B) * 1000,
    totalMs: (sum / B) * 1000,
    closedFormTotalMs: d < B ? (M / (B - d)) * 1000 : Infinity,
    meetsLimit: next <= limitBytes,
    dataBytes: sum,
  };
}

/** The prediction for a technique; for hybrid, `maxRounds` is the number of pre-copy rounds. */
export function predictTechnique(technique: "precopy" | "postcopy" | "hybrid" | "stop-and-copy", input: ModelInput): ModelPrediction {
  const p = predict(input);
  const { memoryBytes: M, bandwidth: B } = input;
  const ms = (bytes: number): number => (bytes / B) * 1000;
  switch (technique) {
    case "precopy":
      return p;
    case "stop-and-copy":
      return { ...p, rounds: 0, roundBytes: [M], stopCopyBytes: M, downtimeMs: ms(M), totalMs: ms(M), meetsLimit: ms(M) <= input.downtimeLimitMs, dataBytes: M };
    case "postcopy":
      return { ...p, rounds: 0, roundBytes: [M], stopCopyBytes: M, downtimeMs: 0, totalMs: ms(M), meetsLimit: true, dataBytes: M };
    case "hybrid": {
      // Exactly maxRounds pre-copy rounds, whatever they leave.
      const roundBytes: number[] = [M];
      while (roundBytes.length <= input.maxRounds) roundBytes.push(Math.min(M, roundBytes[roundBytes.length - 1] * p.ratio));
      const sum = roundBytes.reduce((a, v) => a + v, 0);
      const last = roundBytes[roundBytes.length - 1];
      return { ...p, rounds: input.maxRounds, roundBytes, stopCopyBytes: last, downtimeMs: 0, totalMs: ms(sum), meetsLimit: true, dataBytes: sum };
    }
  }
}
