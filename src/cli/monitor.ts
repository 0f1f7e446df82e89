// The monitor from the command line: `--http [HOST:]PORT` for `migrate send`, `migrate listen`
// and `demo` (serve the live page), and `blmv migrate status|set|postcopy|cancel`, which ask
// a running one from another terminal. See docs/monitor.md.

import { TOKEN_ENV } from "../migrate/transport/auth.js";
import { formatBytes, formatMs, formatRate } from "../migrate/report/units.js";
import { callMonitor, parseEndpoint, type MonitorEndpoint } from "../monitor/client.js";
import { startMonitor, type MonitorServer, type MonitorSubject } from "../monitor/server.js";
import type { SourceStatus } from "../monitor/source-status.js";
import type { ListenerStatus } from "../monitor/listener-status.js";
import { defineCommand, type Command, type OptionTable, type Parsed } from "./command.js";
import { rateOption, tokenOption } from "./migrate-options.js";
import { EXIT_BAD_INPUT, EXIT_FAILED, EXIT_OK, UsageError, integerOption, readInput } from "./usage.js";

const MONITOR = "the monitor";

/** `--http` of `migrate send`, `migrate listen` and `demo`: where to serve the monitor. */
export const HTTP_OPTIONS = {
  http: {
    type: "string",
    value: "[HOST:]PORT",
    group: MONITOR,
    help: "serve the live page, status, controls and /metrics there (HOST defaults to 127.0.0.1: this host only; PORT 0 picks a free one); the token guards it",
  },
} as const satisfies OptionTable;

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

// ---- blmv migrate status|set|postcopy|cancel ---------------------------------------------------

/** How each control command reaches a running monitor. */
const ENDPOINT_OPTIONS = {
  http: { type: "string", value: "ENDPOINT", help: "the running monitor: [HOST:]PORT (http; https with --ca) or http(s)://HOST:PORT (required)" },
  "token-file": { type: "string", value: "F", help: `the migration's token (default: ${TOKEN_ENV})` },
  ca: { type: "string", value: "F", help: "the PEM certificate an https monitor must present or chain to" },
} as const satisfies OptionTable;

const STATUS_OPTIONS = {
  ...ENDPOINT_OPTIONS,
  json: { type: "boolean", help: "the figures as JSON" },
} as const satisfies OptionTable;

const SET_OPTIONS = {
  ...ENDPOINT_OPTIONS,
  "downtime-limit": { type: "string", value: "MS", group: "the new settings (one or both)", help: "the new downtime limit, applied from the next round" },
  bandwidth: { type: "string", value: "RATE", group: "the new settings (one or both)", help: "the new link limit, e.g. 100M (bytes/s) or 1Gbit (bits/s)" },
} as const satisfies OptionTable;

const ASKS = "Asks the --http monitor of a running `migrate send`, `migrate listen` or `demo`; the token is the migration's.";

export const statusCommand = defineCommand({
  name: "migrate status",
  synopsis: "--http [HOST:]PORT|URL [options]",
  summary: "the figures of a running migration (or listener), as QEMU's info migrate",
  about: ASKS,
  options: STATUS_OPTIONS,
  run: async ({ values }) => {
    const command = "migrate status";
    const reply = await ask(command, endpointOf(command, values), "GET", "/api/status");
    if (reply.exit !== EXIT_OK) return reply.exit;
    console.log(values.json ? JSON.stringify(reply.body, null, 2) : formatStatus(reply.body as SourceStatus | ListenerStatus));
    return EXIT_OK;
  },
});

export const setCommand = defineCommand({
  name: "migrate set",
  synopsis: "--http [HOST:]PORT|URL [--downtime-limit MS] [--bandwidth RATE] [options]",
  summary: "change a running migration's downtime limit or bandwidth",
  about: ASKS,
  options: SET_OPTIONS,
  run: async ({ values }) => {
    const command = "migrate set";
    const limit = integerOption(command, "downtime-limit", values["downtime-limit"], 1);
    const rate = rateOption(command, "bandwidth", values.bandwidth, 1);
    if (limit === undefined && rate === undefined) throw new UsageError(`${command}: give --downtime-limit MS, --bandwidth RATE or both`);
    return control(command, values, { ...(limit !== undefined ? { "downtime-limit": limit } : {}), ...(rate !== undefined ? { bandwidth: rate } : {}) });
  },
});

export const postcopyCommand = defineCommand({
  name: "migrate postcopy",
  synopsis: "--http [HOST:]PORT|URL [options]",
  summary: "switch a running pre-copy to post-copy after its current round",
  about: ASKS,
  options: ENDPOINT_OPTIONS,
  run: ({ values }) => control("migrate postcopy", values),
});

export const cancelCommand = defineCommand({
  name: "migrate cancel",
  synopsis: "--http [HOST:]PORT|URL [options]",
  summary: "cancel a running migration before its commit (the guest keeps running on the source)",
  about: ASKS,
  options: ENDPOINT_OPTIONS,
  run: ({ values }) => control("migrate cancel", values),
});

export const CONTROL_COMMANDS: readonly Command[] = [statusCommand, setCommand, postcopyCommand, cancelCommand];

/** Posts one control request and prints the monitor's answer. */
async function control(command: string, values: Parsed<typeof ENDPOINT_OPTIONS>["values"], body: Record<string, unknown> = {}): Promise<number> {
  const reply = await ask(command, endpointOf(command, values), "POST", `/api/control/${command.slice("migrate ".length)}`, body);
  if (reply.exit !== EXIT_OK) return reply.exit;
  console.log(`${command}: ${(reply.body as { message: string }).message}`);
  return EXIT_OK;
}

function endpointOf(command: string, v: Parsed<typeof ENDPOINT_OPTIONS>["values"]): MonitorEndpoint {
  if (v.http === undefined) throw new UsageError(`${command}: --http [HOST:]PORT of the running monitor is required`);
  const parsed = parseEndpoint(v.http);
  if (!parsed) throw new UsageError(`${command}: --http expects [HOST:]PORT or http(s)://HOST:PORT, got ${JSON.stringify(v.http)}`);
  const token = tokenOption(command, v["token-file"]);
  if (token === undefined) throw new UsageError(`${command}: no token: pass --token-file F or set ${TOKEN_ENV} (the migration's token)`);
  const ca = v.ca !== undefined ? readInput(command, "--ca", v.ca) : undefined;
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
