// What the destination's page, `blmv migrate status` and /metrics show of a listener: its
// sessions from the events the listener reports — running, finished, failed with the reason.
// See docs/monitor.md.

import type { DestinationEvent } from "../migrate/destination/destination.js";

/** Sessions kept for the page once they have ended (the oldest ended ones go first). */
const MAX_ENDED_SESSIONS = 100;

export type SessionState = "connected" | "ready" | "running" | "finished" | "failed" | "lost" | "refused";

export interface SessionView {
  peer: string;
  state: SessionState;
  workload?: string;
  memoryBytes?: number;
  /** Post-copy: pages that followed the handoff. */
  missingPages?: number;
  virtualNs?: number;
  digest?: string;
  reason?: string;
  startedAt: string;
  updatedAt: string;
}

export interface ListenerStatus {
  role: "destination";
  url: string;
  sessions: SessionView[];
  /** Sessions that ended, by how. */
  outcomes: Record<"finished" | "failed" | "lost" | "refused", number>;
}

export class ListenerMonitor {
  readonly role = "destination";
  private readonly sessions: SessionView[] = [];
  private readonly outcomes = { finished: 0, failed: 0, lost: 0, refused: 0 };
  private readonly listeners = new Set<() => void>();

  constructor(readonly url: string) {}

  /** Takes one of the listener's events (pass it the listener's onEvent). */
  record(e: DestinationEvent): void {
    const at = new Date().toISOString();
    if (e.event === "outcome") {
      // A source asking what became of an earlier session: a query, not a guest.
      const query = this.latest(e.peer);
      if (query) this.sessions.splice(this.sessions.indexOf(query), 1);
      this.changed();
      return;
    }
    if (e.event === "session" || e.event === "refused") {
      this.sessions.push({ peer: e.peer, state: e.event === "session" ? "connected" : "refused", reason: e.event === "refused" ? e.reason : undefined, startedAt: at, updatedAt: at });
      if (e.event === "refused") this.outcomes.refused++;
      this.prune();
      this.changed();
      return;
    }
    const s = this.latest(e.peer);
    if (!s) return;
    s.updatedAt = at;
    switch (e.event) {
      case "ready":
        Object.assign(s, { state: "ready", workload: e.workload, memoryBytes: e.memoryBytes, missingPages: e.missingPages });
        break;
      case "resumed":
        Object.assign(s, { state: "running", workload: e.workload, virtualNs: e.virtualNs });
        break;
      case "finished":
        Object.assign(s, { state: "finished", virtualNs: e.virtualNs, digest: e.digest });
        this.outcomes.finished++;
        break;
      case "aborted":
        Object.assign(s, { state: "failed", reason: `${e.code}${e.byPeer ? " (reported by the source)" : ""} at ${e.step}: ${e.message}` });
        this.outcomes.failed++;
        break;
      case "lost":
        Object.assign(s, { state: "lost", virtualNs: e.virtualNs, reason: `${e.code}: ${e.message} (${e.missingPages} pages still on the source)` });
        this.outcomes.lost++;
        break;
    }
    this.changed();
  }

  status(): ListenerStatus {
    return { role: "destination", url: this.url, sessions: this.sessions.map((s) => ({ ...s })), outcomes: { ...this.outcomes } };
  }

  subscribe(listener: () => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  /** The newest session of this peer that has not ended. */
  private latest(peer: string): SessionView | undefined {
    for (let i = this.sessions.length - 1; i >= 0; i--) {
      const s = this.sessions[i];
      if (s.peer === peer && (s.state === "connected" || s.state === "ready" || s.state === "running")) return s;
    }
    return undefined;
  }

  private prune(): void {
    const ended = (s: SessionView): boolean => !(s.state === "connected" || s.state === "ready" || s.state === "running");
    while (this.sessions.filter(ended).length > MAX_ENDED_SESSIONS) this.sessions.splice(this.sessions.findIndex(ended), 1);
  }

  private changed(): void {
    for (const l of this.listeners) l();
  }
}
