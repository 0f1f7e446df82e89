// What the sessions of one destination share: how many may run at once, how much guest memory
// they may hold together, which peer addresses failed authentication too often, and what
// became of each session that got as far as `ready` — the answer a source needs when its link
// failed after it sent the commit.

import type { SessionFate } from "../wire/protocol.js";

export interface AdmissionLimits {
  /** Authenticated sessions at once (each receiving or running one guest). */
  maxSessions: number;
  /** Connections at once, authenticated or not. */
  maxConnections: number;
  /** Guest memory all sessions together may hold, reserved at `config`. */
  memoryBudgetBytes: number;
  /** Failed proofs from one address before that address is locked out. */
  maxAuthFailures: number;
  authLockoutMs: number;
}

export const DEFAULT_LIMITS: Readonly<AdmissionLimits> = {
  maxSessions: 8,
  maxConnections: 32,
  memoryBudgetBytes: 16 * 2 ** 30,
  maxAuthFailures: 5,
  authLockoutMs: 60_000,
};

/** Remembered addresses and session fates; the oldest are forgotten first. */
const MAX_REMEMBERED = 4096;

/** What one session holds and must give back when it ends. */
export interface Holding {
  connection: boolean;
  session: boolean;
  bytes: number;
}

export class Admission {
  connections = 0;
  sessions = 0;
  reservedBytes = 0;
  private readonly failures = new Map<string, { count: number; lockedUntil: number }>();
  /** A decided fate, or how to drop a session still waiting for its commit. */
  private readonly fates = new Map<string, SessionFate | (() => void)>();

  constructor(readonly limits: AdmissionLimits = DEFAULT_LIMITS) {}

  /** Why a new connection from `address` is refused, or undefined when it may proceed. */
  refuseConnection(address: string, now = Date.now()): { code: "auth" | "busy"; message: string } | undefined {
    const f = this.failures.get(address);
    if (f && f.lockedUntil > now) return { code: "auth", message: `too many failed authentications from ${address}: locked out for ${Math.ceil((f.lockedUntil - now) / 1000)} s` };
    if (this.connections >= this.limits.maxConnections) return { code: "busy", message: `this destination already has ${this.connections} connections` };
    return undefined;
  }

  authFailed(address: string, now = Date.now()): void {
    const f = this.failures.get(address) ?? { count: 0, lockedUntil: 0 };
    if (f.lockedUntil !== 0 && f.lockedUntil <= now) f.count = f.lockedUntil = 0;
    if (++f.count >= this.limits.maxAuthFailures) f.lockedUntil = now + this.limits.authLockoutMs;
    this.failures.delete(address);
    this.failures.set(address, f);
    forgetOldest(this.failures);
  }

  /** Counts a connection that was not refused. */
  enter(h: Holding): void {
    this.connections++;
    h.connection = true;
  }

  /** Admits an authenticated session, or says why not. */
  admit(h: Holding): string | undefined {
    if (this.sessions >= this.limits.maxSessions) return `this destination is already receiving or running ${this.sessions} guests (its limit)`;
    this.sessions++;
    h.session = true;
    return undefined;
  }

  /** Reserves a guest's memory, or says why it does not fit. */
  reserve(h: Holding, bytes: number): string | undefined {
    if (this.reservedBytes + bytes > this.limits.memoryBudgetBytes) {
      return `guest memory of ${bytes} bytes does not fit: ${this.reservedBytes} of ${this.limits.memoryBudgetBytes} bytes are held by other guests`;
    }
    this.reservedBytes += bytes;
    h.bytes += bytes;
    return undefined;
  }

  release(h: Holding): void {
    if (h.connection) this.connections--;
    if (h.session) this.sessions--;
    this.reservedBytes -= h.bytes;
    h.connection = h.session = false;
    h.bytes = 0;
  }

  /** The session `id` is ready and waits for its commit; `drop` discards it. */
  awaitCommit(id: string, drop: () => void): void {
    this.fates.set(id, drop);
  }

  /** Records a ready session's fate once: the commit arrived (taken) or never will (dropped). */
  decide(id: string, fate: "taken" | "dropped"): void {
    if (typeof this.fates.get(id) !== "function") return;
    this.fates.set(id, fate);
    forgetOldest(this.fates, (v) => typeof v !== "function");
  }

  /**
   * The fate of session `id`. One still waiting for its commit is dropped now: the source that
   * asks has given up on that connection, so a commit arriving on it later must not count.
   */
  query(id: string): SessionFate {
    const fate = this.fates.get(id);
    if (typeof fate === "function") fate();
    const decided = this.fates.get(id);
    return typeof decided === "string" ? decided : "unknown";
  }
}

function forgetOldest<V>(map: Map<string, V>, forgettable: (v: V) => boolean = () => true): void {
  for (const [key, value] of map) {
    if (map.size <= MAX_REMEMBERED) return;
    if (forgettable(value)) map.delete(key);
  }
}

/** The address part of "address:port" (IPv6 addresses contain colons too). */
export function addressOf(peer: string): string {
  const i = peer.lastIndexOf(":");
  return i < 0 ? peer : peer.slice(0, i);
}
