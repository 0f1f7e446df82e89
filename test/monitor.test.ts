// The monitor without a browser: its HTTP API, the token, Host and Origin checks, /metrics,
// the controls applied to a real running migration (set, postcopy, cancel) and refused when the
// values are bad or the migration has ended, the listener's sessions, and the CLI commands that
// ask a running monitor from another process.

import { request } from "node:http";
import { generate } from "selfsigned";
import WebSocket from "ws";
import { afterEach, describe, expect, it } from "vitest";
import { referenceDigest, type GuestRunSpec } from "../src/migrate/run/guest-run.js";
import { bootAndMigrate, type LiveMigrationResult } from "../src/migrate/run/run.js";
import { ControlError, MigrationControl } from "../src/migrate/source/control.js";
import { ListenerMonitor } from "../src/monitor/listener-status.js";
import { SourceMonitor, type SourceStatus } from "../src/monitor/source-status.js";
import { parseSettings, startMonitor, type MonitorServer } from "../src/monitor/server.js";
import { callMonitor, parseEndpoint } from "../src/monitor/client.js";
import { redirection } from "../src/monitor/machine-view.js";
import { Destination, killChildren, runCli, testToken } from "./migrate-harness.js";

const MiB = 2 ** 20;
const MS = 1_000_000;
// A token strong enough for the listener, as the harness makes it from a name.
const TOKEN_NAME = "monitor-test-token";
const TOKEN = testToken(TOKEN_NAME);

const servers: MonitorServer[] = [];
afterEach(async () => {
  for (const s of servers.splice(0)) await s.close();
  killChildren();
});

interface Answer {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  text: string;
}

/** One raw HTTP request, with full control over the headers (fetch would set Host and Origin itself). */
function http(port: number, method: string, path: string, headers: Record<string, string> = {}, body?: string): Promise<Answer> {
  return new Promise((resolve, reject) => {
    const req = request({ host: "127.0.0.1", port, method, path, headers: { host: `127.0.0.1:${port}`, ...headers } }, (res) => {
      let text = "";
      res.on("data", (d) => (text += d));
      res.on("end", () => resolve({ status: res.statusCode ?? 0, headers: res.headers, text }));
      // An event stream never ends by itself: its first frame is enough.
      if ((res.headers["content-type"] ?? "").startsWith("text/event-stream")) res.once("data", () => (res.destroy(), resolve({ status: res.statusCode ?? 0, headers: res.headers, text })));
    });
    req.on("error", reject);
    req.end(body);
  });
}

const bearer = { authorization: `Bearer ${TOKEN}` };
const json = { ...bearer, "content-type": "application/json" };

function spec(more: Partial<GuestRunSpec> = {}): GuestRunSpec {
  return { workload: "uniform", interrupts: "apic", memoryBytes: 8 * MiB, seed: 3, endNs: 6000 * MS, ...more };
}

/** A real migration to a destination process, watched by a monitor on a free port. */
async function watchedMigration(s: GuestRunSpec, link: { bandwidth?: number; downtimeLimitMs?: number; maxRounds?: number; technique?: "precopy" } = {}) {
  const dest = await Destination.start(TOKEN_NAME);
  const monitor = new SourceMonitor({ ...s, ...link });
  const control = monitor.control;
  const server = await startMonitor(monitor, { host: "127.0.0.1", port: 0, token: TOKEN });
  servers.push(server);
  const done: Promise<LiveMigrationResult> = bootAndMigrate(s, { url: dest.url, token: TOKEN, migrateAtNs: 100 * MS, control, ...link });
  return { dest, control, monitor, server, done };
}

async function until(condition: () => boolean, what: string, timeoutMs = 30_000): Promise<void> {
  const end = Date.now() + timeoutMs;
  while (!condition()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

const inPrecopy = (control: MigrationControl) => () => control.running && control.progress?.phase === "pre-copy";

describe("the monitor's access rules", () => {
  async function idleMonitor(): Promise<{ port: number; control: MigrationControl }> {
    const monitor = new SourceMonitor({ workload: "uniform", memoryBytes: 8 * MiB });
    const control = monitor.control;
    const server = await startMonitor(monitor, { host: "127.0.0.1", port: 0, token: TOKEN });
    servers.push(server);
    return { port: server.port, control };
  }

  it("answers 401 and no figures without the token, on every page that shows guest state and every control", async () => {
    const { port } = await idleMonitor();
    for (const [method, path] of [["GET", "/api/status"], ["GET", "/api/events"], ["GET", "/api/machine"], ["GET", "/metrics"], ["POST", "/api/control/cancel"], ["POST", "/api/control/set"], ["POST", "/api/control/postcopy"]]) {
      for (const headers of [{}, { authorization: "Bearer wrong-token" }, { cookie: `blmv-monitor-${port}=forged` }] as Record<string, string>[]) {
        const a = await http(port, method, path, { "content-type": "application/json", ...headers }, method === "POST" ? "{}" : undefined);
        expect(a.status, `${method} ${path}`).toBe(401);
        expect(a.text).not.toMatch(/uniform|memoryBytes|blmv_migration/);
      }
    }
  });

  it("serves the page itself without the token, with nothing from elsewhere", async () => {
    const { port } = await idleMonitor();
    const page = await http(port, "GET", "/");
    expect(page.status).toBe(200);
    expect(page.text).not.toMatch(/https?:\/\//);
    expect(page.headers["content-security-policy"]).toContain("default-src 'self'");
    for (const asset of ["/app.js", "/style.css", "/units.js", "/vendor/uPlot.iife.min.js", "/vendor/uPlot.min.css"]) expect((await http(port, "GET", asset)).status, asset).toBe(200);
  });

  it("lets the page in with a cookie derived from the token, which is never the token itself", async () => {
    const { port } = await idleMonitor();
    const login = await http(port, "POST", "/api/login", { ...bearer, origin: `http://127.0.0.1:${port}` });
    expect(login.status).toBe(200);
    const cookie = String(login.headers["set-cookie"]).split(";")[0];
    expect(String(login.headers["set-cookie"])).toMatch(/HttpOnly; SameSite=Strict/);
    expect(cookie).not.toContain(TOKEN);
    const status = await http(port, "GET", "/api/status", { cookie });
    expect(status.status).toBe(200);
    expect(JSON.parse(status.text)).toMatchObject({ role: "source", status: "waiting", workload: "uniform" });
    expect((await http(port, "POST", "/api/login", { authorization: "Bearer nope" })).status).toBe(401);
  });

  it("refuses a Host that is not this server's (DNS rebinding) and a control from another page's Origin", async () => {
    const { port } = await idleMonitor();
    const rebound = await http(port, "GET", "/api/status", { ...bearer, host: `attacker.example:${port}` });
    expect(rebound.status).toBe(403);
    expect(rebound.text).toMatch(/not a name of this server/);
    expect((await http(port, "GET", "/", { host: `127.0.0.1:${port + 1}` })).status).toBe(403);
    for (const origin of ["http://attacker.example", `http://localhost:${port + 1}`, "null"]) {
      const a = await http(port, "POST", "/api/control/set", { ...json, origin }, JSON.stringify({ "downtime-limit": "5" }));
      expect(a.status, origin).toBe(403);
      expect(a.text).toMatch(/refused/);
    }
    const crossSite = await http(port, "POST", "/api/login", { ...bearer, "sec-fetch-site": "cross-site" });
    expect(crossSite.status).toBe(403);
    // A control must be JSON: a plain form post from another page cannot be one without a preflight.
    expect((await http(port, "POST", "/api/control/cancel", { ...bearer, "content-type": "application/x-www-form-urlencoded" }, "a=1")).status).toBe(415);
  });

  it("speaks HTTPS with the migration's certificate, and only to a client that trusts it", async () => {
    const pems = await generate([{ name: "commonName", value: "blmv monitor test" }], { notAfterDate: new Date(Date.now() + 24 * 3600_000), keySize: 2048, extensions: [{ name: "subjectAltName", altNames: [{ type: 7, ip: "127.0.0.1" }] }] });
    const monitor = new ListenerMonitor("wss://127.0.0.1:1");
    const server = await startMonitor(monitor, { host: "127.0.0.1", port: 0, token: TOKEN, tls: { cert: pems.cert, key: pems.private } });
    servers.push(server);
    expect(server.pageUrl).toMatch(/^https:\/\/127\.0\.0\.1:\d+\/#token=/);
    const ok = await callMonitor({ url: server.url, token: TOKEN, ca: pems.cert }, "GET", "/api/status");
    expect(ok).toMatchObject({ status: 200, body: { role: "destination" } });
    await expect(callMonitor({ url: server.url, token: TOKEN }, "GET", "/api/status")).rejects.toThrow(/self-signed|certificate/);
  });

  it("keeps web pages off the migration port: a connection with an Origin header is refused", async () => {
    const dest = await Destination.start(TOKEN_NAME);
    const refused = await new Promise<string>((resolve) => {
      const ws = new WebSocket(dest.url, { origin: "http://attacker.example" });
      ws.on("open", () => resolve("open"));
      ws.on("unexpected-response", (_req, res) => resolve(String(res.statusCode)));
      ws.on("error", (e) => resolve(e.message));
    });
    expect(refused).toMatch(/401|403/);
  });

  it("says so when a control comes before any migration runs", async () => {
    const { port } = await idleMonitor();
    const a = await http(port, "POST", "/api/control/cancel", json, "{}");
    expect(a.status).toBe(409);
    expect(JSON.parse(a.text).error).toMatch(/no migration is running yet; nothing was changed/);
  });
});

describe("settings and endpoints as typed", () => {
  it("parses settings, refusing what is not a value of the setting", () => {
    expect(parseSettings({ "downtime-limit": "50", bandwidth: "100M" })).toEqual({ downtimeLimitMs: 50, bandwidth: 100 * MiB });
    expect(parseSettings({ bandwidth: "1Gbit" })).toEqual({ bandwidth: 125_000_000 });
    expect(parseSettings({ "downtime-limit": "fast" })).toMatch(/downtime-limit expects a whole number/);
    expect(parseSettings({ "downtime-limit": "-5" })).toMatch(/downtime-limit/);
    expect(parseSettings({ bandwidth: "0" })).toMatch(/bandwidth expects a rate/);
    expect(parseSettings({ bandwidth: "lots" })).toMatch(/bandwidth expects a rate/);
    expect(parseSettings({ speed: "1" })).toMatch(/unknown setting "speed"/);
  });

  it("checks the ranges in the control itself", () => {
    const control = new MigrationControl();
    expect(() => control.set({ downtimeLimitMs: 0 })).toThrow(/from 1 to 3600000/);
    expect(() => control.set({ downtimeLimitMs: 1.5 })).toThrow(ControlError);
    expect(() => control.set({ bandwidth: Number.NaN })).toThrow(/at least 1 byte\/s/);
    expect(() => control.set({})).toThrow(/nothing to set/);
  });

  it("reads [HOST:]PORT and URLs", () => {
    expect(parseEndpoint("8080")).toEqual({ host: "127.0.0.1", port: 8080, scheme: undefined });
    expect(parseEndpoint("0.0.0.0:9")).toEqual({ host: "0.0.0.0", port: 9, scheme: undefined });
    expect(parseEndpoint("[::1]:9")).toEqual({ host: "::1", port: 9, scheme: undefined });
    expect(parseEndpoint("https://host.example:443/")).toEqual({ host: "host.example", port: 443, scheme: "https" });
    for (const bad of ["", "port", "70000", "host:", "ftp://x:1"]) expect(parseEndpoint(bad), bad).toBeUndefined();
  });

  it("decodes an I/O APIC redirection entry field by field", () => {
    // Vector 0x31, lowest priority, logical, low active, level, masked, destination 0x0f.
    expect(redirection({ low: 0x31 | (1 << 8) | (1 << 11) | (1 << 13) | (1 << 15) | (1 << 16), high: 0x0f << 24 }, 2)).toEqual({
      pin: 2, vector: 0x31, deliveryMode: 1, destinationMode: "logical", pending: false, polarity: "low", remoteIrr: false, trigger: "level", masked: true, destination: 0x0f,
    });
  });
});

describe("steering a running migration", () => {
  it("applies a new downtime limit and bandwidth to the running pre-copy, shows it in status and /metrics, refuses bad values without change", async () => {
    // At 256 KiB/s the first round alone takes half a minute: the controls find it running.
    const { control, server, done } = await watchedMigration(spec({ endNs: 1500 * MS }), { bandwidth: 256 * 1024, downtimeLimitMs: 1 });
    await until(inPrecopy(control), "pre-copy");
    const bad = await http(server.port, "POST", "/api/control/set", json, JSON.stringify({ "downtime-limit": "5000", bandwidth: "fast" }));
    expect(bad.status).toBe(400);
    expect(JSON.parse(bad.text).error).toMatch(/bandwidth expects a rate like 100M/);
    const before = JSON.parse((await http(server.port, "GET", "/api/status", bearer)).text) as SourceStatus;
    expect(before.downtimeLimitMs).toBe(1);
    expect(before.bandwidthLimitBytesPerSec).toBe(256 * 1024);

    const ok = await http(server.port, "POST", "/api/control/set", json, JSON.stringify({ "downtime-limit": "60000", bandwidth: "64M" }));
    expect(ok.status, ok.text).toBe(200);
    const after = JSON.parse((await http(server.port, "GET", "/api/status", bearer)).text) as SourceStatus;
    expect(after).toMatchObject({ downtimeLimitMs: 60000, bandwidthLimitBytesPerSec: 64 * MiB });
    const metrics = (await http(server.port, "GET", "/metrics", bearer)).text;
    expect(metrics).toMatch(/^blmv_migration_downtime_limit_seconds 60$/m);
    expect(metrics).toMatch(/^blmv_migration_bandwidth_limit_bytes_per_second 67108864$/m);

    const { report } = await done;
    expect(report.status).toBe("completed");
    // The round ended at the new bandwidth, and the new limit ended pre-copy at once.
    expect(report.stopReason).toBe("downtime");
    expect(report.rounds).toBe(1);
    expect(report.downtimeLimitMs).toBe(60000);
    expect(report.bandwidthLimitBytesPerSec).toBe(64 * MiB);
    const late = await http(server.port, "POST", "/api/control/set", json, JSON.stringify({ "downtime-limit": "100" }));
    expect(late.status).toBe(409);
    expect(JSON.parse(late.text).error).toMatch(/the migration has ended \(completed\); nothing was changed/);
  });

  it("switches a running pre-copy to post-copy, which completes with the digest of a run never migrated", async () => {
    const s = spec({ endNs: 2500 * MS });
    const { control, monitor, server, done } = await watchedMigration(s, { bandwidth: 8 * MiB, downtimeLimitMs: 1 });
    await until(inPrecopy(control), "pre-copy");
    const a = await http(server.port, "POST", "/api/control/postcopy", json, "{}");
    expect(a.status, a.text).toBe(200);
    const { report } = await done;
    expect(report.status).toBe("completed");
    expect(report.stopReason).toBe("postcopy-requested");
    expect(report.technique).toBe("hybrid");
    expect(report.roundStats.at(-1)?.postcopy).toBe(true);
    expect(report.destination?.digest).toBe(referenceDigest(s));
    monitor.finish(report, { final: report.destination?.digest, reference: referenceDigest(s) });
    const status = monitor.status();
    expect(status.progressPercent).toBe(100);
    expect(status.outcome).toMatchObject({ status: "completed", guestOn: "destination", digest: { verdict: "identical" } });
    expect((await http(server.port, "POST", "/api/control/postcopy", json, "{}")).status).toBe(409);
  });

  it("shows the machine while the guest runs; cancels before the commit: the guest runs on on the source; the progress never went backwards", async () => {
    const s = spec({ endNs: 3000 * MS });
    const { control, monitor, server, done } = await watchedMigration(s, { bandwidth: 2 * MiB });
    const seen: number[] = [];
    const sampler = setInterval(() => seen.push(monitor.status().progressPercent), 20);
    await until(() => inPrecopy(control)() && monitor.status().progressPercent > 5, "some progress");
    // The machine as the hypervisor sees it, taken between two slices of the running guest.
    const view = JSON.parse((await http(server.port, "GET", "/api/machine", bearer)).text);
    expect(view.running).toBe(true);
    expect(view.lapics).toHaveLength(1);
    // The guest's driver set the local APIC timer going and unmasked its I/O APIC pin.
    expect(view.lapics[0].initialCount).toBeGreaterThan(0);
    expect(view.ioapic.entries.some((e: { masked: boolean }) => !e.masked)).toBe(true);
    expect(view.pic.master).toMatchObject({ icw2: 0x20 });
    expect(view.pit.channels).toHaveLength(3);
    expect(view.exits.total).toBeGreaterThan(0);
    const a = await http(server.port, "POST", "/api/control/cancel", json, "{}");
    expect(a.status, a.text).toBe(200);
    const result = await done;
    clearInterval(sampler);
    expect(result.report.status).toBe("cancelled");
    expect(result.source?.virtualNs).toBe(s.endNs);
    expect(result.source?.digest).toBe(referenceDigest(s));
    for (let i = 1; i < seen.length; i++) expect(seen[i]).toBeGreaterThanOrEqual(seen[i - 1]);
    expect(Math.max(...seen)).toBeGreaterThan(5);
    expect(Math.max(...seen)).toBeLessThan(100);
    const metrics = (await http(server.port, "GET", "/metrics", bearer)).text;
    expect(metrics).toMatch(/^blmv_migration_info\{role="source",status="cancelled",/m);
  });

});

describe("the listener's sessions", () => {
  it("lists running, finished and failed sessions with the reason, and counts them in /metrics", async () => {
    const m = new ListenerMonitor("ws://127.0.0.1:1");
    m.record({ event: "session", peer: "a:1" });
    m.record({ event: "ready", peer: "a:1", workload: "uniform", memoryBytes: 8 * MiB, pages: 2048, missingPages: 0 });
    m.record({ event: "resumed", peer: "a:1", workload: "uniform", virtualNs: 5 });
    m.record({ event: "session", peer: "b:2" });
    m.record({ event: "aborted", peer: "b:2", step: "auth", code: "auth", message: "bad proof", byPeer: false });
    m.record({ event: "session", peer: "c:3" });
    m.record({ event: "outcome", peer: "c:3", session: "00", outcome: "taken" });
    expect(m.status().sessions.map((s) => [s.peer, s.state, s.reason])).toEqual([
      ["a:1", "running", undefined],
      ["b:2", "failed", "auth at auth: bad proof"],
    ]);
    m.record({ event: "finished", peer: "a:1", workload: "uniform", virtualNs: 9, digest: "ab", ticks: 1, exits: 2 });
    expect(m.status().sessions[0]).toMatchObject({ state: "finished", digest: "ab" });
    const server = await startMonitor(m, { host: "127.0.0.1", port: 0, token: TOKEN });
    servers.push(server);
    const metrics = (await http(server.port, "GET", "/metrics", bearer)).text;
    expect(metrics).toMatch(/^blmv_destination_sessions_total\{outcome="finished"\} 1$/m);
    expect(metrics).toMatch(/^blmv_destination_sessions_total\{outcome="failed"\} 1$/m);
    const control = await http(server.port, "POST", "/api/control/cancel", json, "{}");
    expect(control.status).toBe(404);
    expect(control.text).toMatch(/steered from its source/);
  });
});

describe("blmv migrate status|set|postcopy|cancel", () => {
  it("asks a running monitor from another process, and refuses bad values and a wrong token", async () => {
    // At 256 KiB/s the first round alone takes half a minute: the commands find it running.
    const { control, server, done } = await watchedMigration(spec({ endNs: 1500 * MS }), { bandwidth: 256 * 1024, downtimeLimitMs: 1 });
    await until(inPrecopy(control), "pre-copy");
    const env = { BLMV_TOKEN: TOKEN };
    const at = `127.0.0.1:${server.port}`;
    const status = await runCli(["migrate", "status", "--http", at], env);
    expect(status.code, status.stderr).toBe(0);
    expect(status.stdout).toMatch(/^Migration status: +active \(pre-copy/m);
    for (const figure of ["expected downtime:", "transferred ram:", "remaining ram:", "pages-per-second:", "dirty pages rate:", "dirty sync count:", "cpu throttle:", "setup:"]) expect(status.stdout).toContain(figure);
    const asJson = await runCli(["migrate", "status", "--http", at, "--json"], env);
    expect(JSON.parse(asJson.stdout)).toMatchObject({ role: "source", downtimeLimitMs: 1 });

    const bad = await runCli(["migrate", "set", "--http", at, "--bandwidth", "lots"], env);
    expect(bad.code).toBe(2);
    expect(bad.stderr).toMatch(/--bandwidth expects a rate/);
    const wrong = await runCli(["migrate", "cancel", "--http", at], { BLMV_TOKEN: testToken("another-token") });
    expect(wrong.code).toBe(2);
    expect(wrong.stderr).toMatch(/the token is wrong/);
    expect(control.running).toBe(true);

    const set = await runCli(["migrate", "set", "--http", at, "--downtime-limit", "60000", "--bandwidth", "64M"], env);
    expect(set.code, set.stderr).toBe(0);
    const { report } = await done;
    expect(report).toMatchObject({ status: "completed", stopReason: "downtime", rounds: 1, downtimeLimitMs: 60000 });
    const ended = await runCli(["migrate", "cancel", "--http", at], env);
    expect(ended.code).toBe(1);
    expect(ended.stderr).toMatch(/has ended \(completed\)/);
    const nobody = await runCli(["migrate", "status", "--http", "127.0.0.1:1"], env);
    expect(nobody.code).toBe(1);
    expect(nobody.stderr).toMatch(/no monitor answered/);
  });
});
