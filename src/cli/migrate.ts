// `blmv migrate listen` (a destination) and `blmv migrate send` (a source that boots a guest,
// lets it run and migrates it live): their option tables, help and runs. docs/usage.md.

import { writeFileSync } from "node:fs";
import { X509Certificate } from "node:crypto";
import { TOKEN_ENV, generateToken } from "../migrate/transport/auth.js";
import { parsePin } from "../migrate/transport/connect.js";
import { printable } from "../common/printable.js";
import type { DestinationEvent } from "../migrate/destination/destination.js";
import { DEFAULT_DESTINATION_TIMEOUT_MS } from "../migrate/destination/destination.js";
import { referenceDigestOf, workloadConfig } from "../migrate/run/guest-run.js";
import { SnapshotError, loadSnapshot } from "../migrate/run/snapshot.js";
import { listen } from "../migrate/destination/listener.js";
import { DEFAULT_LIMITS } from "../migrate/destination/admission.js";
import { formatReport, roundChartSvg } from "../migrate/report/report.js";
import { progressReporter } from "../migrate/report/progress.js";
import { cancelOnInterrupt } from "./interrupt.js";
import { bootAndMigrate, migrateLive, type LiveMigrationResult } from "../migrate/run/run.js";
import { formatBytes, parseSize } from "../migrate/report/units.js";
import { PAGE_SIZE } from "../guest/page.js";
import { defineCommand, type OptionTable, type Parsed } from "./command.js";
import { GUEST_OPTIONS, MIGRATION_OPTIONS, REPORT_OPTIONS, parseGuestAndLink, progressMode, tokenOption } from "./migrate-options.js";
import { EXIT_BAD_INPUT, EXIT_FAILED, EXIT_INTERRUPTED, EXIT_OK, UsageError, checkWritable, fileProblem, integerOption, readInput } from "./usage.js";
import { HTTP_OPTIONS, httpOption, serveMonitor } from "./monitor.js";
import { ListenerMonitor } from "../monitor/listener-status.js";
import { SourceMonitor } from "../monitor/source-status.js";
import type { MonitorServer } from "../monitor/server.js";

const TOKEN_TEXT =
  "\n\nThe token authenticates both sides (challenge–response; it never crosses the wire). It comes\n" +
  `from --token-file F or else the ${TOKEN_ENV} environment variable; a listener given neither\n` +
  "generates one and prints it.";

const LISTEN_OPTIONS = {
  port: { type: "string", value: "P", help: "TCP port (0: any free port, printed) (required)" },
  host: { type: "string", value: "ADDR", default: "127.0.0.1", help: "address to listen on (127.0.0.1: this host only)" },
  "token-file": { type: "string", value: "F", help: `the shared token (default: ${TOKEN_ENV}, else a new one, printed)` },
  cert: { type: "string", value: "F", help: "PEM certificate chain: accept wss:// (TLS) only, and serve --http over HTTPS; goes with --key" },
  key: { type: "string", value: "F", help: "PEM private key of --cert" },
  "max-memory": { type: "string", value: "SIZE", default: "4G", help: "largest guest memory accepted" },
  "memory-budget": { type: "string", value: "SIZE", default: "16G", help: "guest memory all guests here may hold together" },
  prealloc: {
    type: "string",
    value: "SIZE",
    help: "allocate and fault in this much guest memory at start-up and keep it between guests: pages that arrive into it cost no page faults",
  },
  "max-sessions": { type: "string", value: "N", default: String(DEFAULT_LIMITS.maxSessions), help: "guests received or running at once" },
  "max-auth-failures": {
    type: "string",
    value: "N",
    default: String(DEFAULT_LIMITS.maxAuthFailures),
    help: `failed authentications checked per ${DEFAULT_LIMITS.authWindowMs / 1000} s from all addresses together; beyond it a proof waits or is refused unchecked`,
  },
  "allow-origin": { type: "string", value: "LIST", help: "browser origins that may connect, comma-separated (default: none)" },
  "allow-host": { type: "string", value: "LIST", help: "host names sources may address this listener by, comma-separated (IP addresses, localhost and --host always)" },
  timeout: { type: "string", value: "MS", default: String(DEFAULT_DESTINATION_TIMEOUT_MS), help: "longest wait for the source's next message" },
  once: { type: "boolean", help: "exit after the first migrated guest has finished its run here" },
  json: { type: "boolean", help: "one JSON object per line for each event" },
  ...HTTP_OPTIONS,
} as const satisfies OptionTable;

const SEND_OPTIONS = {
  to: { type: "string", value: "URL", help: "the destination, ws://HOST:PORT or wss://HOST:PORT (TLS) (required)" },
  "token-file": { type: "string", value: "F", help: `the shared token (default: ${TOKEN_ENV})` },
  ca: { type: "string", value: "F", defaultText: "the system's certificate authorities", help: "for wss://: the PEM certificate the destination must present or chain to" },
  pin: { type: "string", value: "sha256:HEX", help: "for wss://: the fingerprint of the destination's certificate (the listener prints it), checked before the source sends anything" },
  verify: { type: "boolean", help: "also run the guest without migrating it and compare the final digests; a verification that cannot be made fails the run (exit 1)" },
  from: { type: "string", value: "SNAPSHOT", help: "send the paused guest saved in SNAPSHOT (see blmv resume) instead of booting one; the guest options do not apply" },
  snapshot: { type: "string", value: "F", defaultText: "a new blmv-WORKLOAD-TIME.snapshot here", help: "where to save the paused guest if the outcome stays unknown (the commit unconfirmed)" },
  ...GUEST_OPTIONS,
  ...MIGRATION_OPTIONS,
  ...REPORT_OPTIONS,
  ...HTTP_OPTIONS,
  cert: { type: "string", value: "F", group: HTTP_OPTIONS.http.group, help: "with --http: serve the monitor over HTTPS with this PEM certificate chain; goes with --key" },
  key: { type: "string", value: "F", group: HTTP_OPTIONS.http.group, help: "PEM private key of --cert" },
} as const satisfies OptionTable;

export const listenCommand = defineCommand({
  name: "migrate listen",
  synopsis: "--port P [options]",
  summary: "receive migrated guests and run them here",
  about:
    "A destination: authenticates each source, checks and stages the guest's memory and devices, and\n" +
    "runs the guest from the commit on." +
    TOKEN_TEXT,
  options: LISTEN_OPTIONS,
  run: runListen,
});

async function runListen({ values }: Parsed<typeof LISTEN_OPTIONS>): Promise<number> {
  const command = "migrate listen";
  if (values.port === undefined) throw new UsageError(`${command}: --port is required (0 picks a free port)`);
  const port = integerOption(command, "port", values.port)!;
  if (port > 65535) throw new UsageError(`${command}: --port must be at most 65535, got ${port}`);
  const maxMemoryBytes = sizeOption(command, "max-memory", values["max-memory"]);
  const memoryBudgetBytes = sizeOption(command, "memory-budget", values["memory-budget"]);
  const preallocBytes = values.prealloc === undefined ? undefined : sizeOption(command, "prealloc", values.prealloc);
  if (preallocBytes !== undefined && preallocBytes % PAGE_SIZE !== 0) throw new UsageError(`${command}: --prealloc expects a size in whole 4 KiB pages, like 1G, got ${JSON.stringify(values.prealloc)}`);
  if (preallocBytes !== undefined && preallocBytes > memoryBudgetBytes) {
    throw new UsageError(`${command}: --prealloc ${values.prealloc} is more than --memory-budget ${values["memory-budget"]} lets guests hold`);
  }
  const maxSessions = integerOption(command, "max-sessions", values["max-sessions"], 1)!;
  const maxAuthFailures = integerOption(command, "max-auth-failures", values["max-auth-failures"], 1)!;
  if ((values.cert === undefined) !== (values.key === undefined)) throw new UsageError(`${command}: --cert and --key go together`);
  const tls = values.cert !== undefined ? { cert: readInput(command, "--cert", values.cert), key: readInput(command, "--key", values.key!) } : undefined;
  const timeoutMs = integerOption(command, "timeout", values.timeout, 1)!;
  const given = tokenOption(command, values["token-file"]);
  const secret = given ?? generateToken();
  const json = values.json;
  const say = (e: Record<string, unknown>, text: string): void => console.log(json ? JSON.stringify(e) : text);
  const http = httpOption(command, values.http);
  let monitor: ListenerMonitor | undefined;

  let listener;
  try {
    const limits = { maxSessions, memoryBudgetBytes, maxAuthFailures };
    const [allowOrigins, allowHosts] = [values["allow-origin"], values["allow-host"]].map((list) => (list ?? "").split(",").filter((x) => x !== ""));
    const onEvent = (e: DestinationEvent): void => {
      say(e, describeEvent(e));
      monitor?.record(e);
    };
    listener = await listen({ host: values.host, port, token: secret, maxMemoryBytes, timeoutMs, once: values.once, tls, limits, allowOrigins, allowHosts, preallocBytes, onEvent });
  } catch (e) {
    throw new UsageError(`${command}: cannot listen on ${values.host}:${port}: ${(e as Error).message}`);
  }
  const loopback = values.host === "127.0.0.1" || values.host === "::1" || values.host === "localhost";
  const fingerprint = tls ? `sha256:${new X509Certificate(tls.cert).fingerprint256.replaceAll(":", "").toLowerCase()}` : undefined;
  say(
    {
      event: "listening", url: listener.url, host: listener.host, port: listener.port, ...(fingerprint ? { fingerprint } : {}), ...(given ? {} : { token: secret }),
      ...(listener.preallocatedBytes ? { preallocatedBytes: listener.preallocatedBytes } : {}),
    },
    `listening on ${listener.url} ${loopback ? "(this host only; --host 0.0.0.0 accepts other hosts)" : "(other hosts may connect)"}, ${tls ? "TLS" : "not encrypted: use --cert/--key across a network"}; ` +
      `up to ${maxSessions} guests at once, each up to ${formatBytes(maxMemoryBytes)}, ${formatBytes(memoryBudgetBytes)} in all` +
      (listener.preallocatedBytes ? `; ${formatBytes(listener.preallocatedBytes)} of guest memory preallocated` : ""),
  );
  if (fingerprint && !json) console.log(`certificate: ${fingerprint}\n  (a source can pin it: migrate send --pin ${fingerprint})`);
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

/** A log line for event `e`; what the peer chose (names, messages) is escaped and cut. */
function describeEvent(event: DestinationEvent): string {
  const at = new Date().toISOString().slice(11, 23);
  const e = Object.fromEntries(Object.entries(event).map(([k, v]) => [k, typeof v === "string" ? printable(v) : v])) as DestinationEvent;
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

export const sendCommand = defineCommand({
  name: "migrate send",
  synopsis: "--to ws://HOST:P|wss://HOST:P [options]",
  summary: "boot a guest here and migrate it live to a listening destination",
  about:
    "A source: boots the guest, lets it run in real time and migrates it while it runs. Until the\n" +
    "commit, any failure — Ctrl-C included — leaves the guest running on the source, unchanged." +
    TOKEN_TEXT,
  options: SEND_OPTIONS,
  run: runSend,
});

async function runSend({ values }: Parsed<typeof SEND_OPTIONS>): Promise<number> {
  const command = "migrate send";
  const url = values.to;
  if (url === undefined) throw new UsageError(`${command}: --to ws://HOST:PORT is required`);
  if (!/^wss?:\/\/[^/\s]+(\/\S*)?$/.test(url)) throw new UsageError(`${command}: --to expects ws://HOST:PORT or wss://HOST:PORT, got ${JSON.stringify(url)}`);
  if (values.ca !== undefined && !url.startsWith("wss:")) throw new UsageError(`${command}: --ca applies to wss:// destinations only`);
  const { spec, link } = parseGuestAndLink(command, values);
  const progress = progressReporter(progressMode(command, values.progress));
  const svg = values.svg;
  if (svg) await checkWritable(command, svg);
  const ca = values.ca !== undefined ? readInput(command, "--ca", values.ca) : undefined;
  const pin = values.pin;
  if (pin !== undefined && !url.startsWith("wss:")) throw new UsageError(`${command}: --pin applies to wss:// destinations only`);
  if (pin !== undefined && parsePin(pin) === undefined) throw new UsageError(`${command}: --pin expects sha256: and the 64 hex digits of the certificate's fingerprint, got ${JSON.stringify(printable(pin))}`);
  const secret = tokenOption(command, values["token-file"]);
  if (secret === undefined) throw new UsageError(`${command}: no token: pass --token-file F or set ${TOKEN_ENV} (the listener prints the one it generated)`);
  const http = httpOption(command, values.http);
  if ((values.cert !== undefined || values.key !== undefined) && !http) throw new UsageError(`${command}: --cert and --key serve the monitor over HTTPS: they need --http`);
  if ((values.cert === undefined) !== (values.key === undefined)) throw new UsageError(`${command}: --cert and --key go together`);
  const tls = values.cert !== undefined ? { cert: readInput(command, "--cert", values.cert), key: readInput(command, "--key", values.key!) } : undefined;
  const saved = values.from !== undefined ? openSnapshot(command, values.from) : undefined;
  const guestConfig = saved ? saved.guest.config : workloadConfig(spec);
  const [memoryBytes, endNs] = saved ? [saved.config.memoryBytes, saved.config.endNs] : [spec.memoryBytes, spec.endNs];
  const monitor = http ? new SourceMonitor({ ...link, workload: saved ? saved.config.workload : spec.workload, memoryBytes }) : undefined;
  const server = monitor && http ? await serveMonitor(command, monitor, http, secret, { tls }) : undefined;

  const interrupt = cancelOnInterrupt(progress);
  let result: LiveMigrationResult;
  try {
    const options = { ...link, url, ca, pin, token: secret, signal: interrupt.signal, stopGuest: interrupt.signal, progress, snapshotPath: values.snapshot, control: monitor?.control };
    result = saved ? await migrateLive(saved.guest, endNs, saved.config.workload, options) : await bootAndMigrate(spec, options);
  } catch (e) {
    await server?.close();
    throw e;
  } finally {
    interrupt.dispose();
  }
  const interrupted = interrupt.signal.aborted;
  const final = result.report.destination?.digest ?? (result.source?.finished ? result.source.digest : undefined);
  const reference = values.verify && !interrupted ? referenceDigestOf(guestConfig, memoryBytes, endNs) : undefined;
  monitor?.finish(result.report, { final, reference });
  await server?.close();
  const verification =
    reference === undefined ? undefined
    : final !== undefined ? { made: true, referenceDigest: reference, finalDigest: final, identical: reference === final }
    : { made: false, referenceDigest: reference, reason: `no final digest to compare: ${result.report.status === "completed" ? "the destination's report of the guest's end never came" : `the migration ended ${result.report.status}`}` };
  if (svg) writeFileSync(svg, roundChartSvg(result.report));
  if (values.json) {
    console.log(JSON.stringify({ ...result.report, guest: saved ? { snapshot: values.from, ...saved.config } : spec, source: result.source, verification, interrupted }, null, 2));
  } else {
    console.log(formatReport(result.report));
    const s = result.source;
    if (s?.finished) console.log(`  the guest ran on to ${(s.virtualNs / 1e9).toFixed(3)} s virtual on the source; digest ${s.digest}`);
    else if (s) console.log(`  on the source      the guest was running, untouched, at ${(s.virtualNs / 1e9).toFixed(3)} s virtual of ${(spec.endNs / 1e9).toFixed(3)} s when blmv stopped`);
    if (interrupted && result.report.status === "completed" && !result.report.destination) console.log("  interrupted       stopped waiting for the destination's end-of-run report; the guest runs on there");
    if (verification?.made) console.log(`  verification      ${verification.identical ? "identical to" : "DIFFERS from"} the run that was never migrated (${verification.referenceDigest})`);
    if (verification && !verification.made) console.log(`  verification      NOT MADE, asked for with --verify: ${verification.reason}`);
    if (svg) console.log(`  chart             ${svg}`);
  }
  if (interrupted) return EXIT_INTERRUPTED;
  // The destination refused the guest's configuration (too large for its --max-memory, say): bad input.
  if (result.report.status === "failed" && result.report.error?.code === "config") return EXIT_BAD_INPUT;
  const ok = result.report.status === "completed" && (verification === undefined || (verification.made && verification.identical));
  return ok ? EXIT_OK : EXIT_FAILED;
}

/** The guest saved in a snapshot, or a bad-input error naming the file and what is wrong. */
export function openSnapshot(command: string, file: string): ReturnType<typeof loadSnapshot> {
  try {
    return loadSnapshot(file);
  } catch (e) {
    if (e instanceof SnapshotError) throw new UsageError(`${command}: ${e.message}`);
    throw new UsageError(`${command}: ${file}: ${fileProblem(e)}`);
  }
}

function sizeOption(command: string, name: string, text: string): number {
  const bytes = parseSize(text);
  if (!bytes) throw new UsageError(`${command}: --${name} expects a size like 4G, got ${JSON.stringify(text)}`);
  return bytes;
}
