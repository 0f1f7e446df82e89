// Migrations that must not happen, and migrations stopped short. Before the commit, whatever
// goes wrong, the source keeps running its guest exactly as before (it ends with the digest of a
// run never migrated) and the destination keeps nothing. Faults injected at every step are in
// migrate-faults.test.ts.

import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import { unpack } from "msgpackr";
import { WebSocketServer } from "ws";
import { referenceDigest, type GuestRunSpec } from "../src/migrate/run/guest-run.js";
import { bootAndMigrate } from "../src/migrate/run/run.js";
import { MAX_UNAUTHENTICATED_PAYLOAD, PROTOCOL_MAGIC, PROTOCOL_VERSION, encode, type Message } from "../src/migrate/wire/protocol.js";
import { newNonce, proof } from "../src/migrate/transport/auth.js";
import { BareClient, FaultProxy, Destination, killChildren } from "./migrate-harness.js";

const MiB = 2 ** 20;
const MS = 1_000_000;
const SPEC: GuestRunSpec = { workload: "uniform", interrupts: "apic", memoryBytes: 16 * MiB, seed: 3, endNs: 350 * MS };
const MIGRATE_AT = 120 * MS;

let reference: string | undefined;
const referenceOnce = (): string => (reference ??= referenceDigest(SPEC));

const proxies: FaultProxy[] = [];
afterEach(async () => {
  killChildren();
  await Promise.all(proxies.splice(0).map((p) => p.close()));
  for (const server of servers.splice(0)) {
    for (const c of server.clients) c.terminate();
    server.close();
  }
});

const servers: WebSocketServer[] = [];

/** A destination played by hand: `reply` answers each decoded message (or stays silent, or closes). */
async function fakeDestination(reply: (m: Record<string, unknown>) => Message | "close" | undefined): Promise<string> {
  const server = new WebSocketServer({ host: "127.0.0.1", port: 0 });
  servers.push(server);
  await new Promise((r) => server.once("listening", r));
  server.on("connection", (ws) =>
    ws.on("message", (d: Buffer) => {
      const answer = reply(unpack(d) as Record<string, unknown>);
      if (answer === "close") ws.terminate();
      else if (answer) ws.send(encode(answer));
    }),
  );
  return `ws://127.0.0.1:${(server.address() as { port: number }).port}`;
}

const hello = (version = PROTOCOL_VERSION, minVersion = PROTOCOL_VERSION) => ({ t: "hello", magic: PROTOCOL_MAGIC, version, minVersion, capabilities: ["zero-pages"], nonce: newNonce() });

describe("refusals", () => {
  it("a source and a destination with different tokens do not migrate, and the source runs on", async () => {
    const dest = await Destination.start("right");
    const result = await bootAndMigrate(SPEC, { url: dest.url, token: "wrong", migrateAtNs: MIGRATE_AT });
    expect(result.report.status).toBe("failed");
    expect(result.report.error).toMatchObject({ code: "auth", byPeer: true });
    expect(result.source?.digest).toBe(referenceOnce());
    expect(result.source?.virtualNs).toBe(SPEC.endNs);
    await dest.waitFor((e) => e.event === "aborted" && e.code === "auth");
  });

  it("a client that cannot prove the token is refused after the challenge, without the destination's proof", async () => {
    const dest = await Destination.start("right");
    const c = await BareClient.connect(dest.url);
    const h = hello();
    c.send(h);
    const challenge = await c.next();
    expect(challenge).toMatchObject({ t: "challenge", version: PROTOCOL_VERSION });
    expect(challenge).not.toHaveProperty("proof");
    c.send({ t: "auth", proof: proof("guess", "source", PROTOCOL_VERSION, h.nonce, challenge.nonce as Uint8Array) });
    expect(await c.next()).toMatchObject({ t: "error", code: "auth" });
    expect(await c.waitClosed()).toBe(true);
  });

  it.each([
    [99, 99],
    [0, 0],
    [PROTOCOL_VERSION - 1, PROTOCOL_VERSION - 1],
  ])("a source speaking only protocol versions %i..%i is refused with a version error", async (version, minVersion) => {
    const dest = await Destination.start();
    const c = await BareClient.connect(dest.url);
    c.send(hello(version, minVersion));
    const reply = await c.next();
    expect(reply).toMatchObject({ t: "error", code: "version" });
    expect(reply.message).toMatch(new RegExp(`this destination ${PROTOCOL_VERSION}\\.\\.${PROTOCOL_VERSION}`));
    expect(await c.waitClosed()).toBe(true);
    await dest.waitFor((e) => e.event === "aborted" && e.code === "version");
  });

  it("a newer source that still accepts this version is answered in it", async () => {
    const dest = await Destination.start();
    const c = await BareClient.connect(dest.url);
    c.send(hello(PROTOCOL_VERSION + 3, PROTOCOL_VERSION));
    expect(await c.next()).toMatchObject({ t: "challenge", version: PROTOCOL_VERSION });
  });

  it("the source refuses a destination that picks a version it does not speak", async () => {
    const url = await fakeDestination(() => ({ t: "challenge", version: 1, capabilities: [], nonce: newNonce() }));
    const result = await bootAndMigrate(SPEC, { url, token: "t", migrateAtNs: MIGRATE_AT });
    expect(result.report.status).toBe("failed");
    expect(result.report.error?.code).toBe("version");
    expect(result.source?.digest).toBe(referenceOnce());
  });

  it("the source refuses a destination that cannot prove the token, before sending it anything of the guest", async () => {
    const seen: string[] = [];
    const url = await fakeDestination((m) => {
      seen.push(m.t as string);
      if (m.t === "hello") return { t: "challenge", version: PROTOCOL_VERSION, capabilities: [], nonce: newNonce() };
      if (m.t === "auth") return { t: "accepted", proof: new Uint8Array(32) };
      return undefined;
    });
    const result = await bootAndMigrate(SPEC, { url, token: "t", migrateAtNs: MIGRATE_AT });
    expect(result.report).toMatchObject({ status: "failed", failedAt: "accepted", error: { code: "auth", byPeer: false } });
    expect(seen).toEqual(["hello", "auth", "error"]);
    expect(result.source?.digest).toBe(referenceOnce());
  });

  it("a destination that stops answering times the source out, and the source runs on", async () => {
    const url = await fakeDestination(() => undefined);
    const result = await bootAndMigrate(SPEC, { url, token: "t", migrateAtNs: MIGRATE_AT, timeoutMs: 200 });
    expect(result.report).toMatchObject({ status: "failed", failedAt: "challenge", error: { code: "timeout" } });
    expect(result.source?.digest).toBe(referenceOnce());
  });

  it("garbage, oversized frames before authentication and a source beyond --max-sessions are refused", async () => {
    const dest = await Destination.start("test-token", ["--max-sessions", "1"]);
    const garbage = await BareClient.connect(dest.url);
    garbage.sendRaw(new Uint8Array([0x93, 1]));
    expect(await garbage.next()).toMatchObject({ t: "error", code: "bad-message" });
    await garbage.waitClosed();

    // Refused by the WebSocket layer from the frame's header: "message too big".
    const big = await BareClient.connect(dest.url);
    const closeCode = new Promise((r) => big.ws.once("close", r));
    big.send({ ...hello(), padding: new Uint8Array(MAX_UNAUTHENTICATED_PAYLOAD) });
    expect(await closeCode).toBe(1009);

    const sessions = [];
    for (let i = 0; i < 2; i++) {
      const c = await BareClient.connect(dest.url);
      const h = hello();
      c.send(h);
      const challenge = await c.next();
      c.send({ t: "auth", proof: proof(dest.token, "source", PROTOCOL_VERSION, h.nonce, challenge.nonce as Uint8Array) });
      sessions.push(await c.next());
    }
    expect(sessions[0]).toMatchObject({ t: "accepted" });
    expect(sessions[1]).toMatchObject({ t: "error", code: "busy", message: expect.stringMatching(/already receiving or running 1 guests/) });
  });

  it("a memory size above the destination's limit is refused at configuration", async () => {
    const dest = await Destination.start("t", ["--max-memory", "8M"]);
    const result = await bootAndMigrate(SPEC, { url: dest.url, token: dest.token, migrateAtNs: MIGRATE_AT });
    expect(result.report).toMatchObject({ status: "failed", failedAt: "prepared", error: { code: "config", byPeer: true } });
    expect(result.source?.digest).toBe(referenceOnce());
  });
});

describe("after a failure", () => {
  it("after the destination is ready, once more from the start, the migration succeeds", async () => {
    const dest = await Destination.start();
    const proxy = await FaultProxy.start(dest.url, { from: "destination", type: "ready" });
    proxies.push(proxy);
    const failed = await bootAndMigrate(SPEC, { url: proxy.url, token: dest.token, migrateAtNs: MIGRATE_AT });
    expect(failed.report.status).toBe("failed");
    await dest.waitFor((e) => e.event === "aborted");
    const retried = await bootAndMigrate(SPEC, { url: dest.url, token: dest.token, migrateAtNs: MIGRATE_AT });
    expect(retried.report.status).toBe("completed");
    expect(retried.report.destination?.digest).toBe(referenceOnce());
  });

  it("when the destination cannot be asked after a lost commit, the source keeps the guest paused: it never runs on a guess", async () => {
    // A destination that takes everything, drops the link at the commit, and knows no queries.
    let sourceNonce: Uint8Array | undefined;
    const destinationNonce = newNonce();
    let connections = 0;
    const url = await fakeDestination((m) => {
      if (m.t === "hello") {
        connections++;
        sourceNonce = m.nonce as Uint8Array;
        return { t: "challenge", version: PROTOCOL_VERSION, capabilities: ["zero-pages"], nonce: destinationNonce };
      }
      if (m.t === "auth") return { t: "accepted", proof: proof("t", "destination", PROTOCOL_VERSION, sourceNonce!, destinationNonce) };
      if (m.t === "config") return { t: "prepared" };
      if (m.t === "state") return { t: "ready", digest: m.digest as Uint8Array };
      return m.t === "commit" ? "close" : undefined;
    });
    const snapshotPath = join(mkdtempSync(join(tmpdir(), "blmv-unconfirmed-")), "guest.snapshot");
    const result = await bootAndMigrate({ ...SPEC, endNs: 5000 * MS }, { url, token: "t", migrateAtNs: MIGRATE_AT, timeoutMs: 500, snapshotPath });
    expect(result.report.snapshot).toEqual({ path: snapshotPath });
    expect(result.report).toMatchObject({ status: "unconfirmed", resolution: "unreachable", failedAt: "resumed" });
    expect(result.source).toBeUndefined();
    const pausedAt = result.guest.now();
    await new Promise((r) => setTimeout(r, 100));
    expect(result.guest.now()).toBe(pausedAt);
    expect(pausedAt).toBeLessThan(5000 * MS);
    // The destination did not announce outcome queries: the source did not try to connect again.
    expect(connections).toBe(1);
  });

  it("a cancel before the commit leaves the source running; the destination drops the session", async () => {
    const dest = await Destination.start();
    const controller = new AbortController();
    // A slow link keeps the pre-copy going long enough to cancel in the middle of it.
    void dest.waitFor((e) => e.event === "session").then(() => setTimeout(() => controller.abort(), 100));
    const result = await bootAndMigrate(SPEC, { url: dest.url, token: dest.token, migrateAtNs: MIGRATE_AT, bandwidth: 2 * MiB, signal: controller.signal });
    expect(result.report.status).toBe("cancelled");
    expect(result.report.failedAt).toMatch(/pre-copy/);
    expect(result.source?.digest).toBe(referenceOnce());
    const aborted = await dest.waitFor((e) => e.event === "aborted");
    expect(aborted).toMatchObject({ code: "cancelled", byPeer: true });
  });
});
