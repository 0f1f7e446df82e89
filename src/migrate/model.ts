// The analytic pre-copy model of the live-migration literature, to set beside a measurement.
// Memory M goes first (V₀ = M); while round i carries Vᵢ at bandwidth B the guest dirties
// d·Vᵢ/B, which the next round carries: Vᵢ = M·(d/B)ⁱ. The source stops when the next round
// would fit the downtime limit (or at the round cap) and sends that round with the guest
// paused. Summing the geometric series without a cap gives total ≈ M / (B − d). No round can
// carry more than the whole memory, so when d ≥ B every round is capped at M.

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
  };
}
