// Attacks on a destination by peers without the token: holding connections to starve real
// sources, big frames before authentication, guessing the token from many connections and
// addresses, and a web page opening the migration port. None may keep a source with the token
// out, make the listener buffer more than a handshake, or get more guesses than the budget.

import { connect, type Socket } from "node:net";
import WebSocket from "ws";
import { afterEach, describe, expect, it } from "vitest";
import { Admission, DEFAULT_LIMITS, type AdmissionLimits } from "../src/migrate/destination/admission.js";
import { listen, type Listener } from "../src/migrate/destination/listener.js";
import type { DestinationEvent } from "../src/migrate/destination/destination.js";
import { newNonce, proof } from "../src/migrate/transport/auth.js";
import { PROTOCOL_MAGIC, PROTOCOL_VERSION } from "../src/migrate/wire/protocol.js";
import { referenceDigest, type GuestRunSpec } from "../src/migrate/run/guest-run.js";
import { bootAndMigrate } from "../src/migrate/run/run.js";
import { BareClient, testToken } from "./migrate-harness.js";

const MiB = 2 ** 20;
const MS = 1_000_000;
const SPEC: GuestRunSpec = { workload: "idle", interrupts: "pic", memoryBytes: 2 * MiB, seed: 3, endNs: 150 * MS };
const TOKEN = testToken("dos");
const listeners: Listener[] = [];
const sockets: WebSocket[] = [];
afterEach(async () => {
  for (const ws of sockets.splice(0)) ws.terminate();
  await Promise.all(listeners.splice(0).map((l) => l.close()));
});

async function start(limits: Partial<AdmissionLimits> = {}, events: DestinationEvent[] = []): Promise<Listener> {
  const l = await listen({ host: "127.0.0.1", port: 0, token: TOKEN, maxMemoryBytes: 64 * MiB, limits, onEvent: (e) => events.push(e) });
  listeners.push(l);
  return l;
}

const hello = () => ({ t: "hello", magic: PROTOCOL_MAGIC, version: PROTOCOL_VERSION, minVersion: PROTOCOL_VERSION, capabilities: [], nonce: newNonce() });

/** A connection that has said hello and got its challenge, ready to send a proof. */
async function challenged(url: string, localAddress = "127.0.0.1"): Promise<{ c: BareClient; prove: (token: string) => void }> {
  const ws = new WebSocket(url, { perMessageDeflate: false, localAddress });
  sockets.push(ws);
  const c = await BareClient.wrap(ws);
  const h = hello();
  c.send(h);
  const challenge = await c.next();
  expect(challenge.t).toBe("challenge");
  return { c, prove: (token) => c.send({ t: "auth", proof: proof(token, "source", PROTOCOL_VERSION, h.nonce, challenge.nonce as Uint8Array) }) };
}

/** How an upgrade request ends: the HTTP status of a refusal, or "open". */
function upgrade(url: string, options: WebSocket.ClientOptions = {}): Promise<number | "open"> {
  const ws = new WebSocket(url, { perMessageDeflate: false, ...options });
  sockets.push(ws);
  return new Promise((resolve) => {
    ws.once("open", () => resolve("open"));
    ws.once("unexpected-response", (_req, res) => resolve(res.statusCode ?? 0));
    ws.once("error", () => resolve(0));
  });
}

describe("starving real sources", () => {
  it("32 idle connections, re-opened whenever one is closed, do not keep a source with the token out", async () => {
    const dest = await start();
    let stop = false;
    const attacker = (): void => {
      if (stop) return;
      const ws = new WebSocket(dest.url, { perMessageDeflate: false });
      sockets.push(ws);
      ws.on("error", () => {});
      ws.on("close", () => setTimeout(attacker, 1));
    };
    for (let i = 0; i < 32; i++) attacker();
    await new Promise((r) => setTimeout(r, 300));
    const reference = referenceDigest(SPEC);
    try {
      for (let i = 0; i < 4; i++) {
        const { report } = await bootAndMigrate(SPEC, { url: dest.url, token: TOKEN, migrateAtNs: 50 * MS });
        expect(report.status).toBe("completed");
        expect(report.destination?.digest).toBe(reference);
      }
    } finally {
      stop = true;
    }
  }, 60_000);

  it("connections still authenticating have their own limits, and a newcomer beyond them is refused before the upgrade", async () => {
    const dest = await start({ maxPendingPerAddress: 2, maxPending: 3, handshakeGraceMs: 60_000 });
    await challenged(dest.url);
    await challenged(dest.url);
    expect(await upgrade(dest.url)).toBe(503);
    await challenged(dest.url, "127.0.0.2");
    expect(await upgrade(dest.url, { localAddress: "127.0.0.3" })).toBe(503);
    // A source with the token is not counted against them once it has proved it.
    expect(dest.admission.connections).toBe(3);
  });
});

describe("buffering before authentication", () => {
  it("a frame announcing 4 MiB before authentication is refused from its header, before its payload arrives", async () => {
    const dest = await start();
    const { port } = dest;
    const socket: Socket = connect(port, "127.0.0.1");
    await new Promise((r) => socket.once("connect", r));
    socket.write(`GET / HTTP/1.1\r\nHost: 127.0.0.1:${port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: ${Buffer.alloc(16, 1).toString("base64")}\r\nSec-WebSocket-Version: 13\r\n\r\n`);
    const received: Buffer[] = [];
    socket.on("data", (d) => received.push(d));
    const ended = new Promise<void>((r) => socket.once("close", () => r()));
    await new Promise((r) => setTimeout(r, 100));
    expect(Buffer.concat(received).toString("latin1")).toMatch(/^HTTP\/1\.1 101/);
    // Binary frame, final, masked, 64-bit length 4 MiB; then only 1 KiB of the payload.
    const header = Buffer.from([0x82, 0xff, 0, 0, 0, 0, 0, 0x40, 0, 0, 1, 2, 3, 4]);
    socket.write(Buffer.concat([header, Buffer.alloc(1024)]));
    await ended;
    const reply = Buffer.concat(received);
    const close = reply.subarray(reply.indexOf(Buffer.from("\r\n\r\n")) + 4);
    expect(close[0]).toBe(0x88); // a close frame
    expect(close.readUInt16BE(2)).toBe(1009); // message too big
  });
});

describe("guessing the token", () => {
  it("the budget of failed proofs is global: 32 connections opened beforehand and other addresses get no more checks", async () => {
    const events: DestinationEvent[] = [];
    const dest = await start({ maxAuthFailures: 3, authWindowMs: 60_000, authWaitMs: 1_000, maxPending: 64, maxPendingPerAddress: 64 }, events);
    const clients = await Promise.all(Array.from({ length: 32 }, () => challenged(dest.url)));
    clients.forEach(({ prove }, i) => prove(testToken(`guess-${i}`)));
    const replies = await Promise.all(clients.map(({ c }) => c.next()));
    const checked = replies.filter((r) => /does not know the token/.test(String(r.message)));
    const unchecked = replies.filter((r) => /too many failed authentications at this destination: proofs are not checked now; try again in \d+ s/.test(String(r.message)));
    expect(checked).toHaveLength(3);
    expect(unchecked).toHaveLength(29);
    for (const address of ["127.0.0.2", "127.0.0.3"]) {
      const { c, prove } = await challenged(dest.url, address);
      prove(testToken("another-guess"));
      expect(await c.next()).toMatchObject({ t: "error", code: "auth", message: expect.stringMatching(/proofs are not checked now/) });
    }
  });

  it("a source with the token gets in after someone without it spent the budget, from the same address", async () => {
    const dest = await start({ maxAuthFailures: 3, authWindowMs: 3_000, authWaitMs: 2_000 });
    for (let i = 0; i < 3; i++) {
      const { c, prove } = await challenged(dest.url);
      prove(testToken(`wrong-${i}`));
      expect(await c.next()).toMatchObject({ code: "auth", message: expect.stringMatching(/does not know the token/) });
    }
    const { report } = await bootAndMigrate(SPEC, { url: dest.url, token: TOKEN, migrateAtNs: 50 * MS });
    expect(report.status).toBe("completed");
  });

  it("the budget refills at its rate, and a correct proof costs none of it", () => {
    const a = new Admission({ ...DEFAULT_LIMITS, maxAuthFailures: 2, authWindowMs: 1000, authWaitMs: 400 });
    expect(a.reserveCheck(0)).toBe(0);
    a.proofChecked(true, 0);
    expect(a.reserveCheck(0)).toBe(0);
    a.proofChecked(false, 0); // correct: given back
    expect(a.reserveCheck(0)).toBe(0);
    a.proofChecked(true, 0);
    expect(a.reserveCheck(0)).toBeUndefined(); // the next one would wait 500 ms
    expect(a.reserveCheck(100)).toBe(400);
    expect(a.reserveCheck(100)).toBeUndefined();
    expect(a.budgetRefillsIn(100)).toBe(900);
  });
});

describe("browsers and names", () => {
  it("refuses a browser Origin, an unknown Host name and another path before the upgrade; admits a configured origin", async () => {
    const events: DestinationEvent[] = [];
    const dest = await start({}, events);
    expect(await upgrade(dest.url, { origin: "https://evil.example" })).toBe(403);
    expect(await upgrade(dest.url, { headers: { Host: "rebound.example" } })).toBe(403);
    expect(await upgrade(`${dest.url}/other`)).toBe(404);
    expect(events.filter((e) => e.event === "session")).toEqual([]);
    expect(events.filter((e) => e.event === "refused").map((e) => (e as { reason: string }).reason)).toEqual([
      "browser origins are refused (listen --allow-origin ORIGIN admits one)",
      "unknown Host name (listen --allow-host NAME admits one)",
      "the migration endpoint is /",
    ]);
    const allowed = await listen({ host: "127.0.0.1", port: 0, token: TOKEN, maxMemoryBytes: MiB, allowOrigins: ["https://ops.example"], allowHosts: ["dest.example"] });
    listeners.push(allowed);
    expect(await upgrade(allowed.url, { origin: "https://ops.example", headers: { Host: `dest.example:${allowed.port}` } })).toBe("open");
    expect(await upgrade(allowed.url, { headers: { Host: `localhost:${allowed.port}` } })).toBe("open");
  });
});
