// What the sessions of one destination share: how many may run at once and how many may still
// be authenticating (per address too), how much guest memory they may hold together, the
// budget of failed proofs all peers together may make, and what became of each session that
// got as far as `ready` — the answer a source needs when its link failed after it sent the
// commit. docs/security.md.

import type { SessionFate } from "../wire/protocol.js";

export interface AdmissionLimits {
  /** Authenticated sessions at once (each receiving or running one guest). */
  maxSessions: number;
  /** Connections still authenticating, at once (see Admission.makeRoom). */
  maxPending: number;
  /** Connections still authenticating from one address. */
  maxPendingPerAddress: number;
  /** How long a connection that has just sent a handshake message may not be closed for a newer one. */
  handshakeGraceMs: number;
  /** Guest memory all sessions together may hold, reserved at `config`. */
  memoryBudgetBytes: number;
  /** Failed proofs the destination checks per `authWindowMs`, from all addresses together. */
  maxAuthFailures: number;
  authWindowMs: number;
  /** Longest a proof waits for the guessing budget before it is refused unchecked. */
  authWaitMs: number;
}

export const DEFAULT_LIMITS: Readonly<AdmissionLimits> = {
  maxSessions: 8,
  maxPending: 64,
  maxPendingPerAddress: 8,
  handshakeGraceMs: 2_000,
  memoryBudgetBytes: 16 * 2 ** 30,
  maxAuthFailures: 10,
  authWindowMs: 60_000,
  authWaitMs: 8_000,
};

/** Remembered session fates; the oldest are forgotten first. */
const MAX_REMEMBERED = 4096;

/** What one session holds and must give back when it ends. */
export interface Holding {
  connection: boolean;
  session: boolean;
  bytes: number;
}

interface Pending {
  address: string;
  /** Closes the connection to make room for a newer one. */
  evict: () => void;
  /** Until when it may not be closed for a newer one (ms, Date.now() time). */
  keepUntil: number;
}

export class Admission {
  sessions = 0;
  reservedBytes = 0;
  /** Connections not yet authenticated, oldest first. */
  private readonly pending = new Map<Holding, Pending>();
  /**
   * The guessing budget, as a virtual schedule: failed proofs may be checked at one per
   * authWindowMs / maxAuthFailures on average, up to maxAuthFailures at once. `nextCheckAt` is
   * when the budget would be back to full were nothing more spent (ms, Date.now() time).
   */
  private nextCheckAt = 0;
  /** A decided fate, or how to drop a session still waiting for its commit. */
  private readonly fates = new Map<string, SessionFate | (() => void)>();

  constructor(readonly limits: AdmissionLimits = DEFAULT_LIMITS) {}

  /** Connections at once, authenticated or not. */
  get connections(): number {
    return this.pending.size + this.sessions;
  }

  /**
   * Makes room for a new connection from `address`, or says why there is none (it is refused
   * before the upgrade). Room is kept for a source that can prove the token: a connection still
   * authenticating is closed for the newcomer (the oldest first, of this address when it has
   * too many) unless it has just sent a handshake message or its proof is being checked — a
   * source that has the token goes through its handshake without pause, one that idles does not.
   */
  makeRoom(address: string, now = Date.now()): string | undefined {
    const mine = [...this.pending].filter(([, p]) => p.address === address);
    const full = mine.length >= this.limits.maxPendingPerAddress ? mine : this.pending.size >= this.limits.maxPending ? [...this.pending] : undefined;
    if (full === undefined) return undefined;
    const idle = full.find(([, p]) => p.keepUntil <= now);
    if (idle === undefined) return `this destination already has ${full.length} connections authenticating${full === mine ? ` from ${address}` : ""}`;
    this.pending.delete(idle[0]);
    idle[1].evict();
    return undefined;
  }

  /** Counts a new connection from `address`, still to authenticate; `evict` closes it. */
  enter(h: Holding, address: string, evict: () => void, now = Date.now()): void {
    this.pending.set(h, { address, evict, keepUntil: now });
    h.connection = true;
  }

  /** The connection sent a handshake message (or waits for its proof's check: `forever`). */
  progressed(h: Holding, forever = false, now = Date.now()): void {
    const p = this.pending.get(h);
    if (p) p.keepUntil = forever ? Infinity : now + this.limits.handshakeGraceMs;
  }

  /**
   * When the proof of a connection may be checked: in `0` ms while the guessing budget has room,
   * later when it must wait for it (the wait is reserved: call `proofChecked` once checked), or
   * undefined when that would be more than authWaitMs away (refuse it unchecked).
   */
  reserveCheck(now = Date.now()): number | undefined {
    const { maxAuthFailures, authWindowMs, authWaitMs } = this.limits;
    const interval = authWindowMs / maxAuthFailures;
    const due = Math.max(this.nextCheckAt, now);
    const at = Math.max(now, due - authWindowMs + interval);
    if (at - now > authWaitMs) return undefined;
    this.nextCheckAt = due + interval;
    return at - now;
  }

  /** A reserved check was made (or given up): a correct proof, or none made, costs no budget. */
  proofChecked(failed: boolean, now = Date.now()): void {
    if (!failed) this.nextCheckAt = Math.max(now, this.nextCheckAt - this.limits.authWindowMs / this.limits.maxAuthFailures);
  }

  /** When the budget has room for one more failed proof, in ms from `now`. */
  budgetRefillsIn(now = Date.now()): number {
    const interval = this.limits.authWindowMs / this.limits.maxAuthFailures;
    return Math.max(0, this.nextCheckAt - this.limits.authWindowMs + interval - now);
  }

  /** Admits an authenticated session (no longer pending), or says why not. */
  admit(h: Holding): string | undefined {
    if (this.sessions >= this.limits.maxSessions) return `this destination is already receiving or running ${this.sessions} guests (its limit)`;
    this.pending.delete(h);
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
    this.pending.delete(h);
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
