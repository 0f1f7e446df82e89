// The monitor from the command line: `--http [HOST:]PORT` for `migrate send`, `migrate listen`
// and `demo` (serve the live page), and `blmv migrate status|set|postcopy|cancel`, which ask
// a running one from another terminal. See docs/monitor.md.

import { readFileSync } from "node:fs";
import { TOKEN_ENV, loadToken } from "../migrate/transport/auth.js";
import { formatBytes, formatMs, formatRate, parseRate } from "../migrate/report/units.js";
import { callMonitor, parseEndpoint, type MonitorEndpoint } from "../monitor/client.js";
import { startMonitor, type MonitorServer, type MonitorSubject } from "../monitor/server.js";
import type { SourceStatus } from "../monitor/source-status.js";
import type { ListenerStatus } from "../monitor/listener-status.js";
import { EXIT_BAD_INPUT, EXIT_FAILED, EXIT_OK, UsageError, fileProblem, integerOption, parseOptions } from "./usage.js";

export const HTTP_OPTION_HELP = `  --http [HOST:]PORT    serve the live page, status, controls and /metrics there (HOST defaults to
                        127.0.0.1: this host only; PORT 0 picks a free one); the token guards it`;

export const CONTROL_USAGE = `  blmv migrate status --http [HOST:]PORT|URL [--token-file F] [--ca F] [--json]
  blmv migrate set --http [HOST:]PORT|URL [--downtime-limit MS] [--bandwidth RATE] [--token-file F] [--ca F]
  blmv migrate postcopy --http [HOST:]PORT|URL [--token-file F] [--ca F]
  blmv migrate cancel --http [HOST:]PORT|URL [--token-file F] [--ca F]`;

export const CONTROL_HELP = `status, set, postcopy, cancel (ask the --http endpoint of a running send, listen or demo):
  --http ENDPOINT       [HOST:]PORT (http; https with --ca) or http(s)://HOST:PORT
  --ca F                the PEM certificate an https monitor must present or chain to
  --downtime-limit MS   set: the new downtime limit, applied from the next round
  --bandwidth RATE      set: the new link limit, e.g. 100M (bytes/s) or 1Gbit (bits/s)
  --json                status: the figures as JSON
  postcopy switches a running pre-copy to post-copy after its current round; cancel stops
  a migration before its commit (the guest keeps running on the source).`;

/** The --http option's [HOST:]PORT, or a usage error. */
export function httpOption(command: string, text: string | undefined): { host: string; port: number } | undefined {
  if (text === undefined) return undefined;
  const endpoint = parseEndpoint(text);
  if (!endpoint || endpoint.scheme) throw new UsageError(`${command}: --http expects [HOST:]PORT, like 8080 or 127.0.0.1:8080, got ${JSON.stringify(text)}`);
  return endpoint;
}

/** Starts the monitor for `subject`; says where (on stderr, or as a JSON event with `json`). */
export async function serveMonitor(
  command: string,
  subject: MonitorSubject,
  where: { host: string; port: number },
  token: string,
  options: { tls?: { cert: Buffer | string; key: Buffer | string }; json?: boolean } = {},
): Promise<MonitorServer> {
  let server: MonitorServer;
  try {
    server = await startMonitor(subject, { ...where, token, tls: options.tls });
  } catch (e) {
    throw new UsageError(`${command}: cannot serve the monitor on ${where.host}:${where.port}: ${(e as Error).message}`);
  }
  const loopback = where.host === "127.0.0.1" || where.host === "::1" || where.host === "localhost";
  const reach = loopback ? "" : options.tls ? "; other hosts may connect" : "; other hosts may connect and it is not encrypted: the token crosses the network in clear (use --cert/--key)";
  if (options.json) console.log(JSON.stringify({ event: "monitor", url: server.url, port: server.port }));
  else console.error(`monitor: ${server.pageUrl}\n  (the token is in the address; \`blmv migrate status --http ${where.host}:${server.port}\` asks from another terminal${reach})`);
  return server;
}

export async function runControlCommand(sub: "status" | "set" | "postcopy" | "cancel", argv: string[]): Promise<number> {
  const command = `migrate ${sub}`;
  const { values } = parseOptions(command, argv, {
    http: { type: "string" },
    "token-file": { type: "string" },
    ca: { type: "string" },
    json: { type: "boolean", default: false },
    "downtime-limit": { type: "string" },
    bandwidth: { type: "string" },
  });
  if (sub !== "set" && (values["downtime-limit"] !== undefined || values.bandwidth !== undefined)) throw new UsageError(`${command}: --downtime-limit and --bandwidth go with \`migrate set\``);
  if (sub !== "status" && values.json) throw new UsageError(`${command}: --json goes with \`migrate status\``);
  const endpoint = endpointOf(command, values);
  if (sub === "status") {
    const reply = await ask(command, endpoint, "GET", "/api/status");
    if (reply.exit !== EXIT_OK) return reply.exit;
    console.log(values.json ? JSON.stringify(reply.body, null, 2) : formatStatus(reply.body as SourceStatus | ListenerStatus));
    return EXIT_OK;
  }
  let body: Record<string, unknown> = {};
  if (sub === "set") {
    const v = values;
    const limit = integerOption(command, "downtime-limit", v["downtime-limit"], 1);
    const rate = v.bandwidth === undefined ? undefined : parseRate(v.bandwidth);
    if (v.bandwidth !== undefined && !(rate !== undefined && rate >= 1)) throw new UsageError(`${command}: --bandwidth expects a rate like 100M (bytes/s) or 1Gbit (bits/s), got ${JSON.stringify(v.bandwidth)}`);
    if (limit === undefined && rate === undefined) throw new UsageError(`${command}: give --downtime-limit MS, --bandwidth RATE or both`);
    body = { ...(limit !== undefined ? { "downtime-limit": limit } : {}), ...(rate !== undefined ? { bandwidth: rate } : {}) };
  }
  const reply = await ask(command, endpoint, "POST", `/api/control/${sub}`, body);
  if (reply.exit !== EXIT_OK) return reply.exit;
  console.log(`${command}: ${(reply.body as { message: string }).message}`);
  return EXIT_OK;
}

function endpointOf(command: string, v: { http?: string; "token-file"?: string; ca?: string }): MonitorEndpoint {
  if (v.http === undefined) throw new UsageError(`${command}: --http [HOST:]PORT of the running monitor is required`);
  const parsed = parseEndpoint(v.http);
  if (!parsed) throw new UsageError(`${command}: --http expects [HOST:]PORT or http(s)://HOST:PORT, got ${JSON.stringify(v.http)}`);
  let token: string | undefined;
  try {
    token = loadToken(v["token-file"]);
  } catch (e) {
    throw new UsageError(`${command}: ${(e as NodeJS.ErrnoException).code ? `token file ${v["token-file"]}: ${fileProblem(e)}` : (e as Error).message}`);
  }
  if (token === undefined) throw new UsageError(`${command}: no token: pass --token-file F or set ${TOKEN_ENV} (the migration's token)`);
  let ca: Buffer | undefined;
  if (v.ca !== undefined) {
    try {
      ca = readFileSync(v.ca);
    } catch (e) {
      throw new UsageError(`${command}: --ca ${v.ca}: ${fileProblem(e)}`);
    }
  }
  const scheme = parsed.scheme ?? (ca ? "https" : "http");
  const host = parsed.host.includes(":") ? `[${parsed.host}]` : parsed.host;
  return { url: `${scheme}://${host}:${parsed.port}/`, token, ca };
}

/** One request; a refusal is printed here and turned into an exit code (2 bad value or token, 1 otherwise). */
async function ask(command: string, endpoint: MonitorEndpoint, method: "GET" | "POST", path: string, body?: unknown): Promise<{ exit: number; body?: unknown }> {
  let reply;
  try {
    reply = await callMonitor(endpoint, method, path, body);
  } catch (e) {
    console.error(`blmv: ${command}: no monitor answered at ${endpoint.url}: ${(e as Error).message}`);
    return { exit: EXIT_FAILED };
  }
  if (reply.status === 200) return { exit: EXIT_OK, body: reply.body };
  const error = (reply.body as { error?: string } | undefined)?.error ?? `HTTP ${reply.status}`;
  console.error(`blmv: ${command}: ${reply.status === 401 ? "refused: the token is wrong" : error}`);
  return { exit: reply.status === 400 || reply.status === 401 ? EXIT_BAD_INPUT : EXIT_FAILED };
}

/** The figures of QEMU's `info migrate`, or the listener's sessions. */
export function formatStatus(s: SourceStatus | ListenerStatus): string {
  if (s.role === "destination") {
    const lines = [`destination ${s.url}: ${s.sessions.length} session(s); ended: ${Object.entries(s.outcomes).map(([k, n]) => `${n} ${k}`).join(", ")}`];
    for (const x of s.sessions) {
      const detail = [x.workload, x.memoryBytes !== undefined ? formatBytes(x.memoryBytes) : undefined, x.digest ? `digest ${x.digest}` : undefined, x.reason].filter(Boolean).join(", ");
      lines.push(`  ${x.startedAt.slice(11, 19)}  ${x.peer.padEnd(22)} ${x.state.padEnd(10)} ${detail}`);
    }
    return lines.join("\n");
  }
  const ms = (v: number | undefined): string => (v === undefined ? "–" : formatMs(v));
  const row = (label: string, value: string): string => `${label.padEnd(24)}${value}`;
  const o = s.outcome;
  const lines = [
    row("Migration status:", `${s.status}${s.phase && !o ? ` (${s.phase}${s.phase === "pre-copy" ? `, round ${s.rounds}` : ""})` : ""}`),
    row("technique:", s.technique),
    row("progress:", `${s.progressPercent.toFixed(1)} %`),
    row("total time:", ms(s.elapsedMs)),
    row("setup:", ms(s.setupMs)),
    row("expected downtime:", `${ms(s.expectedDowntimeMs)} (limit ${formatMs(s.downtimeLimitMs)})`),
    row("downtime:", ms(s.downtimeMs)),
    row("transferred ram:", formatBytes(s.transferredBytes)),
    row("remaining ram:", formatBytes(s.remainingBytes)),
    row("total ram:", formatBytes(s.memoryBytes)),
    row("throughput:", `${formatRate(s.bytesPerSec)}${s.bandwidthLimitBytesPerSec ? ` (limit ${formatRate(s.bandwidthLimitBytesPerSec)})` : ""}`),
    row("pages-per-second:", s.pagesPerSec.toFixed(0)),
    row("dirty pages rate:", `${s.dirtyPagesPerSec.toFixed(0)} pages/s (${formatRate(s.dirtyBytesPerSec)})`),
    row("dirty sync count:", String(s.rounds)),
    row("cpu throttle:", `${s.throttlePercent} %`),
    row("postcopy faults:", String(s.postcopyFaults)),
  ];
  if (o) {
    if (o.error) lines.push(row("error:", o.error));
    lines.push(row("guest runs on:", o.guestOn));
    if (o.model) lines.push(row("model:", `predicted ${o.model.predicted.rounds} rounds, downtime ${formatMs(o.model.predicted.downtimeMs)}, total ${formatMs(o.model.predicted.totalMs)}; measured ${o.model.measured.rounds}, ${formatMs(o.model.measured.downtimeMs)}, ${formatMs(o.model.measured.totalMs)}`));
    if (o.digest) lines.push(row("digest:", `${o.digest.verdict}${o.digest.final ? ` (${o.digest.final})` : ""}`));
  }
  return lines.join("\n");
}
