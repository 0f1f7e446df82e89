// The Prometheus text exposition (format 0.0.4) of a source's migration or a listener's
// sessions, served at /metrics. Names and meanings are listed in docs/monitor.md.

import type { MigrationStatus } from "../migrate/report/metrics.js";
import type { ListenerStatus } from "./listener-status.js";
import type { SourceStatus } from "./source-status.js";

const STATUSES: readonly MigrationStatus[] = ["completed", "failed", "cancelled", "unconfirmed", "lost"];

type Labels = Record<string, string>;

class Exposition {
  private readonly lines: string[] = [];

  metric(name: string, type: "gauge" | "counter", help: string, samples: [Labels, number][] | number): this {
    this.lines.push(`# HELP ${name} ${help}`, `# TYPE ${name} ${type}`);
    for (const [labels, value] of typeof samples === "number" ? [[{}, samples] as [Labels, number]] : samples) this.lines.push(`${name}${labelText(labels)} ${numberText(value)}`);
    return this;
  }

  text(): string {
    return this.lines.join("\n") + "\n";
  }
}

export function sourceMetrics(s: SourceStatus, outcomes: ReadonlyMap<MigrationStatus, number>): string {
  const ms = (v: number | undefined): number => (v === undefined ? NaN : v / 1000);
  return new Exposition()
    .metric("blmv_migration_info", "gauge", "The migration under way or last run (labels), always 1.", [[{ role: "source", status: s.status, technique: s.technique, workload: s.workload }, 1]])
    .metric("blmv_migration_progress_ratio", "gauge", "Monotone progress, 0 to 1 (docs/monitor.md).", s.progressPercent / 100)
    .metric("blmv_migration_memory_bytes", "gauge", "Guest memory size in bytes.", s.memoryBytes)
    .metric("blmv_migration_transferred_bytes_total", "counter", "Bytes put on the wire (memory and state).", s.transferredBytes)
    .metric("blmv_migration_remaining_bytes", "gauge", "Bytes still to send: the rest of the round and the pages dirtied for the next.", s.remainingBytes)
    .metric("blmv_migration_pages_sent_total", "counter", "Pages sent, zero pages included.", s.pagesSent)
    .metric("blmv_migration_pages_per_second", "gauge", "Pages sent per second over the last second.", s.pagesPerSec)
    .metric("blmv_migration_throughput_bytes_per_second", "gauge", "Measured memory transfer rate.", s.bytesPerSec)
    .metric("blmv_migration_bandwidth_limit_bytes_per_second", "gauge", "The link's bandwidth limit (NaN: none).", s.bandwidthLimitBytesPerSec ?? NaN)
    .metric("blmv_migration_rounds_total", "counter", "Pre-copy rounds done.", s.rounds)
    .metric("blmv_migration_dirty_rate_bytes_per_second", "gauge", "Distinct bytes the guest dirtied per second of pre-copy.", s.dirtyBytesPerSec)
    .metric("blmv_migration_expected_downtime_seconds", "gauge", "Expected downtime if the guest paused now (NaN: not known yet).", ms(s.expectedDowntimeMs))
    .metric("blmv_migration_downtime_limit_seconds", "gauge", "The downtime limit.", ms(s.downtimeLimitMs))
    .metric("blmv_migration_last_downtime_seconds", "gauge", "Measured downtime of the last completed migration (NaN: none yet).", ms(s.downtimeMs))
    .metric("blmv_migration_throttle_ratio", "gauge", "Share of time the guest is held back by auto-converge.", s.throttlePercent / 100)
    .metric("blmv_migration_postcopy_faults_total", "counter", "Post-copy page faults served.", s.postcopyFaults)
    .metric("blmv_migrations_total", "counter", "Migrations that ended, by outcome.", STATUSES.map((o) => [{ outcome: o }, outcomes.get(o) ?? 0]))
    .text();
}

export function listenerMetrics(s: ListenerStatus): string {
  const states = ["connected", "ready", "running"] as const;
  return new Exposition()
    .metric("blmv_destination_sessions", "gauge", "Sessions under way, by state.", states.map((st) => [{ state: st }, s.sessions.filter((x) => x.state === st).length]))
    .metric("blmv_destination_sessions_total", "counter", "Sessions that ended, by outcome.", Object.entries(s.outcomes).map(([o, n]) => [{ outcome: o }, n]))
    .text();
}

function labelText(labels: Labels): string {
  const parts = Object.entries(labels).map(([k, v]) => `${k}="${v.replace(/\\/g, "\\\\").replace(/"/g, '\\"').replace(/\n/g, "\\n")}"`);
  return parts.length ? `{${parts.join(",")}}` : "";
}

function numberText(v: number): string {
  if (Number.isNaN(v)) return "NaN";
  if (!Number.isFinite(v)) return v > 0 ? "+Inf" : "-Inf";
  return String(v);
}
