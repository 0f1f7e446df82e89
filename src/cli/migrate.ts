// `blmv migrate listen` (a destination) and `blmv migrate send` (a source that boots a guest,
// lets it run and migrates it live).

import { readFileSync, writeFileSync } from "node:fs";
import { TOKEN_ENV, generateToken, loadToken } from "../migrate/transport/auth.js";
import type { DestinationEvent } from "../migrate/destination/destination.js";
import { DEFAULT_DESTINATION_TIMEOUT_MS } from "../migrate/destination/destination.js";
import { referenceDigest } from "../migrate/run/guest-run.js";
import { listen } from "../migrate/destination/listener.js";
import { DEFAULT_LIMITS } from "../migrate/destination/admission.js";
import { formatReport, roundChartSvg } from "../migrate/report/report.js";
import { bootAndMigrate, type LiveMigrationResult } from "../migrate/run/run.js";
import { formatBytes, parseSize } from "../migrate/report/units.js";
import { GUEST_OPTIONS, GUEST_OPTIONS_HELP, parseGuestAndLink } from "./migrate-options.js";
import { EXIT_FAILED, EXIT_OK, UsageError, checkWritable, fileProblem, integerOption, parseOptions } from "./usage.js";
import { CONTROL_HELP, CONTROL_USAGE, HTTP_OPTION_HELP, httpOption, runControlCommand, serveMonitor } from "./monitor.js";
import { ListenerMonitor } from "../monitor/listener-status.js";
import { SourceMonitor } from "../monitor/source-status.js";
import type { MonitorServer } from "../monitor/server.js";

export const MIGRATE_USAGE = `usage:
  blmv migrate listen --port P [--host 127.0.0.1] [--token-file F] [--cert F --key F] [--max-memory SIZE] [--once] [--json] [--http [HOST:]PORT]
  blmv migrate send --to ws://HOST:P|wss://HOST:P [--token-file F] [--ca F] [--verify] [--http [HOST:]PORT [--cert F --key F]] [guest and link options]
${CONTROL_USAGE}

The token authenticates both sides (challenge–response; it never crosses the wire). It comes
from --token-file F or else the ${TOKEN_ENV} environment variable; a listener given neither
generates one and prints it.

listen:
  --port P              TCP port (0: any free port, printed)
  --host ADDR           address to listen on (default 127.0.0.1: this host only)
  --cert F, --key F     PEM certificate chain and private key: accept wss:// (TLS) only
  --max-memory SIZE     largest guest memory accepted (default 4G)
  --memory-budget SIZE  guest memory all guests here may hold together (default 16G)
  --max-sessions N      guests received or running at once (default ${DEFAULT_LIMITS.maxSessions})
  --max-auth-failures N failed authentications from one address before it is locked out for
                        ${DEFAULT_LIMITS.authLockoutMs / 1000} s (default ${DEFAULT_LIMITS.maxAuthFailures})
  --timeout MS          longest wait for the source's next message (default ${DEFAULT_DESTINATION_TIMEOUT_MS})
  --once                exit after the first migrated guest has finished its run here
  --json                one JSON object per line for each event
${HTTP_OPTION_HELP}
                        (over HTTPS with --cert/--key)

send:
  --to URL              the destination, ws://HOST:PORT or wss://HOST:PORT (TLS)
  --ca F                for wss://: the PEM certificate the destination must present or chain
                        to (default: the system's certificate authorities)
  --verify              also run the guest without migrating it and compare the final digests
${HTTP_OPTION_HELP}
  --cert F, --key F     with --http: serve the monitor over HTTPS with this certificate and key
${GUEST_OPTIONS_HELP}

${CONTROL_HELP}`;

export async function runMigrateCommand(argv: string[]): Promise<number> {
  const [sub, ...rest] = argv;
  if (argv.includes("--help") || argv.includes("-h") || sub === "help") {
    console.log(MIGRATE_USAGE);
    return EXIT_OK;
  }
  if (sub === "listen") return runListen(rest);
  if (sub === "send") return runSend(rest);
  if (sub === "status" || sub === "set" || sub === "postcopy" || sub === "cancel") return runControlCommand(sub, rest);
  throw new UsageError(`migrate: expected listen, send, status, set, postcopy or cancel${sub ? `, got ${JSON.stringify(sub)}` : ""}\n\n${MIGRATE_USAGE}`);
}

function token(command: string, file: string | undefined): string | undefined {
  try {
    return loadToken(file);
  } catch (e) {
    throw new UsageError(`${command}: ${(e as NodeJS.ErrnoException).code ? `token file ${file}: ${fileProblem(e)}` : (e as Error).message}`);
  }
}

async function runListen(argv: string[]): Promise<number> {
  const command = "migrate listen";
  const { values } = parseOptions(command, argv, {
    port: { type: "string" },
    host: { type: "string", default: "127.0.0.1" },
    "token-file": { type: "string" },
    "max-memory": { type: "string", default: "4G" },
    "memory-budget": { type: "string", default: "16G" },
    "max-sessions": { type: "string", default: String(DEFAULT_LIMITS.maxSessions) },
    "max-auth-failures": { type: "string", default: String(DEFAULT_LIMITS.maxAuthFailures) },
    cert: { type: "string" },
    key: { type: "string" },
    timeout: { type: "string", default: String(DEFAULT_DESTINATION_TIMEOUT_MS) },
    once: { type: "boolean", default: false },
    json: { type: "boolean", default: false },
    http: { type: "string" },
  });
  if (values.port === undefined) throw new UsageError(`${command}: --port is required (0 picks a free port)`);
  const port = integerOption(command, "port", values.port)!;
  if (port > 65535) throw new UsageError(`${command}: --port must be at most 65535, got ${port}`);
  const maxMemoryBytes = sizeOption(command, "max-memory", values["max-memory"]);
  const memoryBudgetBytes = sizeOption(command, "memory-budget", values["memory-budget"]);
  const maxSessions = integerOption(command, "max-sessions", values["max-sessions"], 1)!;
  const maxAuthFailures = integerOption(command, "max-auth-failures", values["max-auth-failures"], 1)!;
  if ((values.cert === undefined) !== (values.key === undefined)) throw new UsageError(`${command}: --cert and --key go together`);
  const tls = values.cert !== undefined ? { cert: readInput(command, "--cert", values.cert), key: readInput(command, "--key", values.key!) } : undefined;
  const timeoutMs = integerOption(command, "timeout", values.timeout, 1)!;
  const given = token(command, values["token-file"]);
  const secret = given ?? generateToken();
  const json = values.json;
  const say = (e: Record<string, unknown>, text: string): void => console.log(json ? JSON.stringify(e) : text);
  const http = httpOption(command, values.http);
  let monitor: ListenerMonitor | undefined;

  let listener;
  try {
    const limits = { maxSessions, maxConnections: 4 * maxSessions, memoryBudgetBytes, maxAuthFailures };
    listener = await listen({ host: values.host, port, token: secret, maxMemoryBytes, timeoutMs, once: values.once, tls, limits, onEvent: (e) => {
      say(e, describeEvent(e));
      monitor?.record(e);
    } });
  } catch (e) {
    throw new UsageError(`${command}: cannot listen on ${values.host}:${port}: ${(e as Error).message}`);
  }
  const loopback = values.host === "127.0.0.1" || values.host === "::1" || values.host === "localhost";
  say(
    { event: "listening", url: listener.url, host: listener.host, port: listener.port, ...(given ? {} : { token: secret }) },
    `listening on ${listener.url} ${loopback ? "(this host only; --host 0.0.0.0 accepts other hosts)" : "(other hosts may connect)"}, ${tls ? "TLS" : "not encrypted: use --cert/--key across a network"}; ` +
      `up to ${maxSessions} guests at once, each up to ${formatBytes(maxMemoryBytes)}, ${formatBytes(memoryBudgetBytes)} in all`,
  );
  if (!given && !json) console.log(`token: ${secret}\n  (none was given: pass this one to the source with --token-file or ${TOKEN_ENV})`);
  let server: MonitorServer | undefined;
  if (http) {
    monitor = new ListenerMonitor(listener.url);
    try {
      server = await serveMonitor(command, monitor, http, secret, { tls, json });
    } catch (e) {
      await listener.close();
      throw e;
    }
  }
  const stop = (): void => void listener.close();
  process.once("SIGINT", stop).once("SIGTERM", stop);
  await listener.closed;
  process.off("SIGINT", stop).off("SIGTERM", stop);
  await server?.close();
  return EXIT_OK;
}

function describeEvent(e: DestinationEvent): string {
  const at = new Date().toISOString().slice(11, 23);
  switch (e.event) {
    case "session":
      return `${at} connection from ${e.peer}`;
    case "refused":
      return `${at} refused ${e.peer}: ${e.reason}`;
    case "aborted":
      return `${at} session aborted at ${e.step}: ${e.code}: ${e.message}${e.step === "running" ? "" : " — staging memory and state dropped, nothing kept"}`;
    case "ready":
      if (e.missingPages > 0) return `${at} ${e.workload}: devices rebuilt, digest verified, ${e.missingPages} of ${e.pages} pages to follow (post-copy); waiting for the commit`;
      return `${at} ${e.workload}: ${formatBytes(e.memoryBytes)} received and devices rebuilt, digest verified; waiting for the commit`;
    case "resumed":
      return `${at} ${e.workload}: committed; the guest runs here from ${(e.virtualNs / 1e9).toFixed(3)} s virtual`;
    case "lost":
      return `${at} ${e.workload}: LOST during post-copy at ${(e.virtualNs / 1e9).toFixed(3)} s virtual with ${e.missingPages} pages still on the source (${e.code}: ${e.message}); the guest is stopped for good`;
    case "finished":
      return `${at} ${e.workload}: finished at ${(e.virtualNs / 1e9).toFixed(3)} s virtual, ${e.ticks} timer ticks, ${e.exits} VM exits; digest ${e.digest}`;
    case "outcome":
      return `${at} ${e.peer} asked what became of session ${e.session.slice(0, 16)}…: ${e.outcome}`;
  }
}

async function runSend(argv: string[]): Promise<number> {
  const command = "migrate send";
  const { values } = parseOptions(command, argv, {
    ...GUEST_OPTIONS,
    to: { type: "string" },
    "token-file": { type: "string" },
    ca: { type: "string" },
    verify: { type: "boolean", default: false },
    http: { type: "string" },
    cert: { type: "string" },
    key: { type: "string" },
  });
  const url = values.to;
  if (url === undefined) throw new UsageError(`${command}: --to ws://HOST:PORT is required`);
  if (!/^wss?:\/\/[^/\s]+(\/\S*)?$/.test(url)) throw new UsageError(`${command}: --to expects ws://HOST:PORT or wss://HOST:PORT, got ${JSON.stringify(url)}`);
  if (values.ca !== undefined && !url.startsWith("wss:")) throw new UsageError(`${command}: --ca applies to wss:// destinations only`);
  const ca = values.ca !== undefined ? readInput(command, "--ca", values.ca) : undefined;
  const secret = token(command, values["token-file"]);
  if (secret === undefined) throw new UsageError(`${command}: no token: pass --token-file F or set ${TOKEN_ENV} (the listener prints the one it generated)`);
  const { spec, link, svg, json } = parseGuestAndLink(command, values);
  if (svg) await checkWritable(command, svg);
  const http = httpOption(command, values.http);
  if ((values.cert !== undefined || values.key !== undefined) && !http) throw new UsageError(`${command}: --cert and --key serve the monitor over HTTPS: they need --http`);
  if ((values.cert === undefined) !== (values.key === undefined)) throw new UsageError(`${command}: --cert and --key go together`);
  const tls = values.cert !== undefined ? { cert: readInput(command, "--cert", values.cert), key: readInput(command, "--key", values.key!) } : undefined;
  const monitor = http ? new SourceMonitor({ ...spec, ...link }) : undefined;
  const server = monitor && http ? await serveMonitor(command, monitor, http, secret, { tls }) : undefined;

  const controller = new AbortController();
  const onSignal = (): void => {
    if (controller.signal.aborted) process.exit(130);
    controller.abort();
  };
  process.on("SIGINT", onSignal);
  let result: LiveMigrationResult;
  try {
    result = await bootAndMigrate(spec, { ...link, url, ca, token: secret, signal: controller.signal, control: monitor?.control });
  } catch (e) {
    await server?.close();
    throw e;
  } finally {
    process.off("SIGINT", onSignal);
  }
  const final = result.report.destination?.digest ?? result.source?.digest;
  const reference = values.verify ? referenceDigest(spec) : undefined;
  monitor?.finish(result.report, { final, reference });
  await server?.close();
  const verification = reference !== undefined && final !== undefined ? { referenceDigest: reference, finalDigest: final, identical: reference === final } : undefined;
  if (svg) writeFileSync(svg, roundChartSvg(result.report));
  if (json) {
    console.log(JSON.stringify({ ...result.report, guest: spec, source: result.source, verification }, null, 2));
  } else {
    console.log(formatReport(result.report));
    if (result.source) console.log(`  the guest ran on to ${(result.source.virtualNs / 1e9).toFixed(3)} s virtual on the source; digest ${result.source.digest}`);
    if (verification) console.log(`  verification      ${verification.identical ? "identical to" : "DIFFERS from"} the run that was never migrated (${verification.referenceDigest})`);
    if (svg) console.log(`  chart             ${svg}`);
  }
  const ok = result.report.status === "completed" && (verification?.identical ?? true);
  return ok ? EXIT_OK : EXIT_FAILED;
}

function sizeOption(command: string, name: string, text: string): number {
  const bytes = parseSize(text);
  if (!bytes) throw new UsageError(`${command}: --${name} expects a size like 4G, got ${JSON.stringify(text)}`);
  return bytes;
}

/** A file the command needs, or a usage error naming the option and the file. */
function readInput(command: string, option: string, file: string): Buffer {
  try {
    return readFileSync(file);
  } catch (e) {
    throw new UsageError(`${command}: ${option} ${file}: ${fileProblem(e)}`);
  }
}
