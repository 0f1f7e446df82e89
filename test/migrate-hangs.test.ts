// Every wait on a peer has a deadline: a destination that authenticates, agrees to receive the
// guest without acknowledgements and then stops reading must not hold the source in its first
// pre-copy round forever. The source fails the migration with a timeout and runs on.

import { unpack } from "msgpackr";
import { WebSocketServer, type WebSocket } from "ws";
import { afterAll, describe, expect, it } from "vitest";
import { newNonce, proof } from "../src/migrate/transport/auth.js";
import { PROTOCOL_VERSION, encode } from "../src/migrate/wire/protocol.js";
import { referenceDigest, type GuestRunSpec } from "../src/migrate/run/guest-run.js";
import { bootAndMigrate } from "../src/migrate/run/run.js";

const MiB = 2 ** 20;
const MS = 1_000_000;
const SPEC: GuestRunSpec = { workload: "hot", interrupts: "pic", memoryBytes: 48 * MiB, seed: 8, endNs: 300 * MS };
const TOKEN = "hang-token-0123456789abcdefghijklmnop";
const servers: WebSocketServer[] = [];
afterAll(() => servers.forEach((s) => s.close()));

describe("a destination that stops reading", () => {
  it("times the source out in its first pre-copy round (no acknowledgements agreed); the source runs on", async () => {
    const server = new WebSocketServer({ host: "127.0.0.1", port: 0, maxPayload: 8 * MiB });
    servers.push(server);
    await new Promise((r) => server.once("listening", r));
    server.on("connection", (ws: WebSocket) => {
      let sourceNonce: Uint8Array;
      const destinationNonce = newNonce();
      ws.on("message", (d: Buffer) => {
        const m = unpack(d) as Record<string, unknown>;
        if (m.t === "hello") {
          sourceNonce = m.nonce as Uint8Array;
          ws.send(encode({ t: "challenge", version: PROTOCOL_VERSION, capabilities: [], nonce: destinationNonce }));
        } else if (m.t === "auth") {
          ws.send(encode({ t: "accepted", proof: proof(TOKEN, "destination", PROTOCOL_VERSION, sourceNonce, destinationNonce) }));
        } else if (m.t === "config") {
          ws.send(encode({ t: "prepared" }));
          (ws as unknown as { _socket: { pause(): void } })._socket.pause();
        }
      });
    });
    const url = `ws://127.0.0.1:${(server.address() as { port: number }).port}`;
    const started = performance.now();
    const result = await bootAndMigrate(SPEC, { url, token: TOKEN, migrateAtNs: 50 * MS, timeoutMs: 1500 });
    expect(result.report).toMatchObject({ status: "failed", error: { code: "timeout", message: expect.stringMatching(/no reading of what was sent from the peer within 1500 ms/) } });
    expect(performance.now() - started).toBeLessThan(30_000);
    expect(result.source?.digest).toBe(referenceDigest(SPEC));
  }, 60_000);
});
