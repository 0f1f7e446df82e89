// The monitor's HTTP(S) server: the page (web/monitor/, the built units module and uPlot from
// node_modules, all served here, nothing from elsewhere), its live feed (server-sent events), the status, the machine
// view, the controls and /metrics. Every request must name this server (Host); everything but
// the page's static files needs the token; controls must not come from another page (Origin).
// See docs/monitor.md.

import { existsSync, readFileSync } from "node:fs";
import { createServer as createHttpServer, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import { createServer as createHttpsServer } from "node:https";
import type { AddressInfo } from "node:net";
import { createRequire } from "node:module";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { ControlError } from "../migrate/source/control.js";
import { parseRate } from "../migrate/report/units.js";
import { Access } from "./access.js";
import type { ListenerMonitor } from "./listener-status.js";
import { listenerMetrics, sourceMetrics } from "./metrics.js";
import type { SourceMonitor } from "./source-status.js";

/** How often at most the live feed sends the figures, and how often at least (the clock moves on). */
const FEED_MIN_INTERVAL_MS = 200;
const FEED_MAX_INTERVAL_MS = 1000;
const MAX_BODY_BYTES = 4096;

export type MonitorSubject = SourceMonitor | ListenerMonitor;

export interface MonitorServerOptions {
  host: string;
  /** 0 lets the system choose. */
  port: number;
  /** The migration's token: it guards every figure and every control. */
  token: string;
  /** Certificate chain and key (PEM): the monitor speaks HTTPS only. */
  tls?: { cert: Buffer | string; key: Buffer | string };
}

export interface MonitorServer {
  readonly port: number;
  /** The page's address without the token. */
  readonly url: string;
  /** The page's address with the token in the fragment (never sent to the server by a browser). */
  readonly pageUrl: string;
  close(): Promise<void>;
}

interface Asset {
  type: string;
  body: Buffer;
}

export async function startMonitor(subject: MonitorSubject, options: MonitorServerOptions): Promise<MonitorServer> {
  const assets = loadAssets();
  const feeds = new Set<ServerResponse>();
  let access!: Access;
  const handler = (req: IncomingMessage, res: ServerResponse): void => {
    void handle(req, res).catch((e: unknown) => {
      if (!res.headersSent) reply(res, 500, { error: `internal error: ${(e as Error).message}` });
      else res.end();
    });
  };
  const handle = async (req: IncomingMessage, res: ServerResponse): Promise<void> => {
    securityHeaders(res);
    const hostProblem = access.hostProblem(req);
    if (hostProblem) return reply(res, 403, { error: hostProblem });
    const path = new URL(req.url ?? "/", "http://x").pathname;
    const asset = req.method === "GET" ? assets.get(path) : undefined;
    if (asset) {
      res.writeHead(200, { "content-type": asset.type });
      res.end(asset.body);
      return;
    }
    const post = req.method === "POST";
    if (post) {
      const originProblem = access.originProblem(req);
      if (originProblem) return reply(res, 403, { error: `refused: ${originProblem}` });
    }
    if (post && path === "/api/login") {
      if (!access.authenticated(req)) return reply(res, 401, { error: "the token is wrong or missing" });
      res.setHeader("set-cookie", access.cookie());
      return reply(res, 200, { ok: true });
    }
    if (!access.authenticated(req)) {
      res.setHeader("www-authenticate", 'Bearer realm="blmv monitor"');
      return reply(res, 401, { error: "the migration's token is needed: open the address the command printed (with #token=…), or send Authorization: Bearer TOKEN" });
    }
    if (req.method === "GET") {
      switch (path) {
        case "/api/status":
          return reply(res, 200, subject.status());
        case "/api/machine": {
          const view = subject.role === "source" ? subject.machine() : undefined;
          return view ? reply(res, 200, view) : reply(res, 404, { error: subject.role === "source" ? "the guest has not booted yet" : "a destination shows its sessions only" });
        }
        case "/api/events":
          return openFeed(res);
        case "/metrics":
          res.writeHead(200, { "content-type": "text/plain; version=0.0.4; charset=utf-8" });
          res.end(subject.role === "source" ? sourceMetrics(subject.status(), subject.outcomes) : listenerMetrics(subject.status()));
          return;
      }
    }
    if (post && path.startsWith("/api/control/")) return control(req, res, path.slice("/api/control/".length));
    reply(res, 404, { error: `no ${req.method} ${path} here` });
  };

  const control = async (req: IncomingMessage, res: ServerResponse, action: string): Promise<void> => {
    if (subject.role !== "source") return reply(res, 404, { error: "this is a destination: a migration is steered from its source" });
    if (!(req.headers["content-type"] ?? "").startsWith("application/json")) return reply(res, 415, { error: "controls take a JSON body (Content-Type: application/json)" });
    const body = await readJson(req);
    if (typeof body === "string") return reply(res, 400, { error: body });
    try {
      switch (action) {
        case "set": {
          const settings = parseSettings(body);
          if (typeof settings === "string") return reply(res, 400, { error: settings });
          subject.control.set(settings);
          return reply(res, 200, { ok: true, message: "applied to the running migration" });
        }
        case "postcopy":
          subject.control.startPostcopy();
          return reply(res, 200, { ok: true, message: "post-copy starts after the current round" });
        case "cancel":
          subject.control.cancel();
          return reply(res, 200, { ok: true, message: "cancelling: the guest keeps running on the source" });
        default:
          return reply(res, 404, { error: `no control ${JSON.stringify(action)} (set, postcopy, cancel)` });
      }
    } catch (e) {
      if (e instanceof ControlError) return reply(res, e.refusal === "bad-value" ? 400 : 409, { error: e.message, refusal: e.refusal });
      throw e;
    }
  };

  const openFeed = (res: ServerResponse): void => {
    res.writeHead(200, { "content-type": "text/event-stream", "cache-control": "no-store" });
    feeds.add(res);
    res.on("close", () => feeds.delete(res));
    res.write(`data: ${JSON.stringify(subject.status())}\n\n`);
  };

  // The feed: the figures at most every FEED_MIN_INTERVAL_MS after a change, at least every FEED_MAX_INTERVAL_MS.
  let lastSent = 0;
  let pending: NodeJS.Timeout | undefined;
  const broadcast = (): void => {
    pending = undefined;
    lastSent = Date.now();
    if (feeds.size === 0) return;
    const frame = `data: ${JSON.stringify(subject.status())}\n\n`;
    for (const f of feeds) f.write(frame);
  };
  const schedule = (): void => {
    if (pending === undefined) pending = setTimeout(broadcast, Math.max(0, FEED_MIN_INTERVAL_MS - (Date.now() - lastSent)));
  };
  const unsubscribe = subject.subscribe(schedule);
  const heartbeat = setInterval(schedule, FEED_MAX_INTERVAL_MS);
  heartbeat.unref();

  const server: Server = options.tls ? createHttpsServer({ cert: options.tls.cert, key: options.tls.key }, handler) : createHttpServer(handler);
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(options.port, options.host, () => resolve());
  });
  const port = (server.address() as AddressInfo).port;
  access = new Access(options.token, options.host, port, options.tls !== undefined);
  const shownHost = options.host === "0.0.0.0" || options.host === "::" ? "127.0.0.1" : options.host.includes(":") ? `[${options.host}]` : options.host;
  const url = `${options.tls ? "https" : "http"}://${shownHost}:${port}/`;
  return {
    port,
    url,
    pageUrl: `${url}#token=${encodeURIComponent(options.token)}`,
    close: () =>
      new Promise<void>((resolve) => {
        unsubscribe();
        clearInterval(heartbeat);
        if (pending) clearTimeout(pending);
        // The last figures (the outcome) reach every open page before the feed ends.
        broadcast();
        for (const f of feeds) f.end();
        server.close(() => resolve());
        server.closeAllConnections();
      }),
  };
}

/** `{ "downtime-limit": "50", "bandwidth": "100M" }` (numbers also taken) → settings, or what is wrong. */
export function parseSettings(body: Record<string, unknown>): { downtimeLimitMs?: number; bandwidth?: number } | string {
  const unknown = Object.keys(body).filter((k) => k !== "downtime-limit" && k !== "bandwidth");
  if (unknown.length) return `unknown setting ${JSON.stringify(unknown[0])} (downtime-limit, bandwidth)`;
  const settings: { downtimeLimitMs?: number; bandwidth?: number } = {};
  const limit = body["downtime-limit"];
  if (limit !== undefined) {
    const text = String(limit).trim();
    if (!/^\d+$/.test(text)) return `downtime-limit expects a whole number of milliseconds, like 50, got ${JSON.stringify(limit)}`;
    settings.downtimeLimitMs = Number(text);
  }
  const rate = body.bandwidth;
  if (rate !== undefined) {
    const bytes = typeof rate === "number" ? rate : typeof rate === "string" ? parseRate(rate) : undefined;
    if (bytes === undefined || !(bytes >= 1)) return `bandwidth expects a rate like 100M (bytes/s) or 1Gbit (bits/s), got ${JSON.stringify(rate)}`;
    settings.bandwidth = bytes;
  }
  return settings;
}

function reply(res: ServerResponse, status: number, body: unknown): void {
  res.writeHead(status, { "content-type": "application/json; charset=utf-8" });
  res.end(JSON.stringify(body));
}

function securityHeaders(res: ServerResponse): void {
  res.setHeader("cache-control", "no-store");
  res.setHeader("x-content-type-options", "nosniff");
  res.setHeader("x-frame-options", "DENY");
  res.setHeader("referrer-policy", "no-referrer");
  res.setHeader("content-security-policy", "default-src 'self'; style-src 'self' 'unsafe-inline'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'");
}

/** The JSON object in the request body, or what is wrong with it. */
async function readJson(req: IncomingMessage): Promise<Record<string, unknown> | string> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of req) {
    size += (chunk as Buffer).length;
    if (size > MAX_BODY_BYTES) return `the body is larger than ${MAX_BODY_BYTES} bytes`;
    chunks.push(chunk as Buffer);
  }
  const text = Buffer.concat(chunks).toString("utf8");
  if (text.trim() === "") return {};
  try {
    const value: unknown = JSON.parse(text);
    if (value === null || typeof value !== "object" || Array.isArray(value)) return "the body must be a JSON object";
    return value as Record<string, unknown>;
  } catch {
    return "the body is not valid JSON";
  }
}

/** The page's files (web/monitor/ in the package) and the charting library, read once. */
function loadAssets(): Map<string, Asset> {
  const root = packageRoot();
  const page = join(root, "web", "monitor");
  const require = createRequire(import.meta.url);
  const uplot = dirname(require.resolve("uplot/dist/uPlot.iife.min.js"));
  const file = (path: string, type: string): Asset => ({ type, body: readFileSync(path) });
  return new Map([
    ["/", file(join(page, "index.html"), "text/html; charset=utf-8")],
    ["/app.js", file(join(page, "app.js"), "text/javascript; charset=utf-8")],
    ["/style.css", file(join(page, "style.css"), "text/css; charset=utf-8")],
    // The command line's own formatting of sizes, rates and times (a module without imports).
    ["/units.js", file(join(root, "dist", "src", "migrate", "report", "units.js"), "text/javascript; charset=utf-8")],
    ["/vendor/uPlot.iife.min.js", file(join(uplot, "uPlot.iife.min.js"), "text/javascript; charset=utf-8")],
    ["/vendor/uPlot.min.css", file(join(uplot, "uPlot.min.css"), "text/css; charset=utf-8")],
  ]);
}

function packageRoot(): string {
  for (let dir = dirname(fileURLToPath(import.meta.url)); ; dir = dirname(dir)) {
    if (existsSync(join(dir, "package.json")) && existsSync(join(dir, "web", "monitor"))) return dir;
    if (dirname(dir) === dir) throw new Error("the monitor's page (web/monitor/) is missing from the package");
  }
}
