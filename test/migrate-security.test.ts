// The destination's defences as a user meets them: authentication on by default with a random
// token it prints, a lockout after repeated failed proofs, TLS with a certificate made here,
// the limits several sessions share, and the CLI refusing wrong security options with exit 2.

import { spawn } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createInterface } from "node:readline";
import { generate } from "selfsigned";
import WebSocket from "ws";
import { afterAll, afterEach, beforeAll, describe, expect, it, vi } from "vitest";
import { Admission, DEFAULT_LIMITS } from "../src/migrate/destination/admission.js";
import { newNonce, proof } from "../src/migrate/transport/auth.js";
import { DestinationSession, HANDSHAKE_TIMEOUT_MS } from "../src/migrate/destination/destination.js";
import { referenceDigest, type GuestRunSpec } from "../src/migrate/run/guest-run.js";
import { PROTOCOL_MAGIC, PROTOCOL_VERSION } from "../src/migrate/wire/protocol.js";
import { bootAndMigrate } from "../src/migrate/run/run.js";
import { BareClient, CLI, Destination, killChildren, runCli, testToken } from "./migrate-harness.js";
import { MemorySocket } from "./migrate-stream.js";

const MiB = 2 ** 20;
const MS = 1_000_000;
const SPEC: GuestRunSpec = { workload: "hot", interrupts: "pic", memoryBytes: 8 * MiB, seed: 21, endNs: 300 * MS };
const reference = referenceDigest(SPEC);
const dir = mkdtempSync(join(tmpdir(), "blmv-security-"));

afterEach(killChildren);
afterAll(() => rmSync(dir, { recursive: true, force: true }));

const hello = () => ({ t: "hello", magic: PROTOCOL_MAGIC, version: PROTOCOL_VERSION, minVersion: PROTOCOL_VERSION, capabilities: [], nonce: newNonce() });

/** Sends a hello and an auth proof made with `token`, from `localAddress`; returns the reply to the auth (or the refusal). */
async function tryToken(url: string, token: string, localAddress = "127.0.0.1"): Promise<Record<string, unknown>> {
  const ws = new WebSocket(url, { perMessageDeflate: false, localAddress });
  const c = await BareClient.wrap(ws);
  const h = hello();
  c.send(h);
  const challenge = await c.next();
  if (challenge.t !== "challenge") return challenge;
  c.send({ t: "auth", proof: proof(token, "source", PROTOCOL_VERSION, h.nonce, challenge.nonce as Uint8Array) });
  const reply = await c.next();
  ws.terminate();
  return reply;
}

describe("authentication", () => {
  it("is on by default: a listener given no token makes one up, prints it, and says where it listens", async () => {
    const env = { ...process.env };
    delete env.BLMV_TOKEN;
    const child = spawn(process.execPath, [CLI, "migrate", "listen", "--port", "0"], { env, stdio: ["ignore", "pipe", "inherit"] });
    const lines: string[] = [];
    const rl = createInterface({ input: child.stdout! });
    await new Promise<void>((resolve) => rl.on("line", (l) => (lines.push(l), l.startsWith("token: ") && resolve())));
    child.kill("SIGKILL");
    const listening = lines.find((l) => l.startsWith("listening on "))!;
    expect(listening).toMatch(/^listening on ws:\/\/127\.0\.0\.1:\d+ \(this host only; --host 0\.0\.0\.0 accepts other hosts\), not encrypted/);
    const token = lines.find((l) => l.startsWith("token: "))!.slice(7);
    expect(token).toMatch(/^[A-Za-z0-9_-]{32}$/);
  });

  it("checks no more failed proofs than its budget, from any address, and says when to try again", async () => {
    const dest = await Destination.start("right", ["--max-auth-failures", "3"]);
    for (let i = 0; i < 3; i++) expect(await tryToken(dest.url, testToken(`guess-${i}`))).toMatchObject({ t: "error", code: "auth", message: expect.stringMatching(/does not know the token/) });
    for (const address of ["127.0.0.1", "127.0.0.2"]) {
      expect(await tryToken(dest.url, testToken("guess"), address)).toMatchObject({ t: "error", code: "auth", message: expect.stringMatching(/too many failed authentications at this destination: proofs are not checked now; try again in \d+ s/) });
    }
  });

  it("a peer that connects and says nothing is dropped after the handshake timeout, however long the session timeout", () => {
    vi.useFakeTimers();
    try {
      const socket = new MemorySocket();
      void new DestinationSession(socket.asWebSocket, "10.0.0.9:1", { token: "t", maxMemoryBytes: MiB, timeoutMs: 60_000 });
      vi.advanceTimersByTime(HANDSHAKE_TIMEOUT_MS - 1);
      expect(socket.sent).toEqual([]);
      vi.advanceTimersByTime(1);
      expect(socket.sent).toEqual([{ t: "error", code: "timeout", message: `no hello from the source within ${HANDSHAKE_TIMEOUT_MS} ms` }]);
      expect(socket.readyState).toBe(socket.CLOSED);
    } finally {
      vi.useRealTimers();
    }
  });
});

describe("TLS", () => {
  const cert = join(dir, "cert.pem");
  const key = join(dir, "key.pem");
  // A self-signed certificate for 127.0.0.1, made for this test.
  beforeAll(async () => {
    const pems = await generate([{ name: "commonName", value: "blmv test" }], { notAfterDate: new Date(Date.now() + 24 * 3600_000), keySize: 2048, extensions: [{ name: "subjectAltName", altNames: [{ type: 7, ip: "127.0.0.1" }] }] });
    writeFileSync(cert, pems.cert);
    writeFileSync(key, pems.private);
  });

  it("migrates over wss:// to a source that trusts the certificate", async () => {
    const dest = await Destination.start("t", ["--cert", cert, "--key", key]);
    expect(dest.url).toMatch(/^wss:\/\/127\.0\.0\.1:\d+$/);
    const { report } = await bootAndMigrate(SPEC, { url: dest.url, ca: readFileSync(cert), token: dest.token, migrateAtNs: 100 * MS });
    expect(report.status).toBe("completed");
    expect(report.destination?.digest).toBe(reference);
  });

  it("a source that does not trust the certificate, or speaks plain ws://, sends nothing of the guest and runs on", async () => {
    const dest = await Destination.start("t", ["--cert", cert, "--key", key]);
    const untrusted = await bootAndMigrate(SPEC, { url: dest.url, token: dest.token, migrateAtNs: 100 * MS });
    expect(untrusted.report).toMatchObject({ status: "failed", failedAt: "connect", error: { code: "connection", message: expect.stringMatching(/self-signed certificate/) } });
    expect(untrusted.source?.digest).toBe(reference);
    const plain = await bootAndMigrate(SPEC, { url: dest.url.replace("wss:", "ws:"), token: dest.token, migrateAtNs: 100 * MS, timeoutMs: 2000 });
    expect(plain.report).toMatchObject({ status: "failed", failedAt: "connect" });
    expect(plain.source?.digest).toBe(reference);
    expect(dest.events.some((e) => e.event === "session")).toBe(false);
  });

  it("a source can pin the destination's certificate, and checks it before it sends anything", async () => {
    const dest = await Destination.start("t", ["--cert", cert, "--key", key]);
    const fingerprint = (dest.events.find((e) => e.event === "listening") as { fingerprint?: string }).fingerprint!;
    expect(fingerprint).toMatch(/^sha256:[0-9a-f]{64}$/);
    const pinned = await bootAndMigrate(SPEC, { url: dest.url, pin: fingerprint, token: dest.token, migrateAtNs: 100 * MS });
    expect(pinned.report.status).toBe("completed");
    expect(pinned.report.destination?.digest).toBe(reference);
    const before = dest.events.length;
    const other = `sha256:${"ab".repeat(32)}`;
    const impostor = await bootAndMigrate(SPEC, { url: dest.url, ca: readFileSync(cert), pin: other, token: dest.token, migrateAtNs: 100 * MS });
    expect(impostor.report).toMatchObject({ status: "failed", failedAt: "connect", error: { code: "auth", message: `the destination's certificate ${fingerprint} is not the pinned one` } });
    expect(impostor.source?.digest).toBe(reference);
    // The connection was dropped at the TLS certificate: the destination never got a hello.
    await dest.waitFor((e) => e.event === "aborted" && dest.events.indexOf(e) >= before);
    expect(dest.events.slice(before).find((e) => e.event === "aborted")).toMatchObject({ step: "hello", code: "connection" });
  });

  it("wrong or missing certificate options are usage errors (exit 2)", async () => {
    writeFileSync(join(dir, "junk.pem"), "not a certificate");
    const cases: [string[], RegExp][] = [
      [["migrate", "listen", "--port", "0", "--cert", cert], /--cert and --key go together/],
      [["migrate", "listen", "--port", "0", "--cert", join(dir, "none.pem"), "--key", key], /--cert .*none\.pem: no such file/],
      [["migrate", "listen", "--port", "0", "--cert", join(dir, "junk.pem"), "--key", key], /cannot listen on 127\.0\.0\.1:0/],
      [["migrate", "send", "--to", "ws://127.0.0.1:1", "--ca", cert], /--ca applies to wss:\/\/ destinations only/],
      [["migrate", "send", "--to", "ws://127.0.0.1:1", "--pin", `sha256:${"0".repeat(64)}`], /--pin applies to wss:\/\/ destinations only/],
      [["migrate", "send", "--to", "wss://127.0.0.1:1", "--pin", "md5:00"], /--pin expects sha256: and the 64 hex digits/],
      [["migrate", "send", "--to", "wss://127.0.0.1:1", "--ca", join(dir, "none.pem")], /--ca .*none\.pem: no such file/],
      [["migrate", "listen", "--port", "0", "--max-sessions", "0"], /--max-sessions must be at least 1/],
      [["migrate", "listen", "--port", "0", "--memory-budget", "lots"], /--memory-budget expects a size/],
    ];
    for (const [args, message] of cases) {
      const r = await runCli(args, { BLMV_TOKEN: testToken("t") });
      expect({ args, code: r.code }).toEqual({ args, code: 2 });
      expect(r.stderr).toMatch(message);
    }
  });
});

describe("what sessions share", () => {
  it("sessions, connections and guest memory stay within their limits and are given back", () => {
    const a = new Admission({ ...DEFAULT_LIMITS, maxSessions: 2, maxPending: 3, memoryBudgetBytes: 10 * MiB });
    const holdings = [0, 1, 2].map(() => ({ connection: false, session: false, bytes: 0 }));
    const evicted: number[] = [];
    holdings.forEach((h, i) => a.enter(h, `10.0.0.${i}`, () => evicted.push(i), 0));
    holdings.forEach((h) => a.progressed(h, false, 0));
    expect(a.makeRoom("10.0.0.9", 1)).toBe("this destination already has 3 connections authenticating");
    expect(a.makeRoom("10.0.0.9", DEFAULT_LIMITS.handshakeGraceMs)).toBeUndefined();
    expect(evicted).toEqual([0]);
    expect(a.admit(holdings[1])).toBeUndefined();
    expect(a.admit(holdings[2])).toBeUndefined();
    expect(a.admit(holdings[0])).toMatch(/already receiving or running 2 guests/);
    expect(a.reserve(holdings[1], 8 * MiB)).toBeUndefined();
    expect(a.reserve(holdings[2], 4 * MiB)).toMatch(/does not fit: 8388608 of 10485760 bytes are held/);
    a.release(holdings[1]);
    expect(a.reserve(holdings[2], 4 * MiB)).toBeUndefined();
    holdings.forEach((h) => a.release(h));
    expect(a).toMatchObject({ connections: 0, sessions: 0, reservedBytes: 0 });
  });

  it("a ready session's fate is decided once; a query drops one still waiting for its commit", () => {
    const a = new Admission();
    let dropped = 0;
    a.awaitCommit("s1", () => (dropped++, a.decide("s1", "dropped")));
    a.awaitCommit("s2", () => a.decide("s2", "dropped"));
    a.decide("s2", "taken");
    a.decide("s2", "dropped");
    expect(a.query("s2")).toBe("taken");
    expect(a.query("s1")).toBe("dropped");
    expect(a.query("s1")).toBe("dropped");
    expect(dropped).toBe(1);
    expect(a.query("never")).toBe("unknown");
  });
});
