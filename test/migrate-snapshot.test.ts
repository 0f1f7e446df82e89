// No outcome loses the guest: when the destination vanishes after `ready` and the source cannot
// learn whether its commit arrived, the source keeps the guest paused, saves it whole to a
// snapshot named in the report, and counts the downtime from the pause. `blmv resume` continues
// it and `migrate send --from` sends it again, both ending with the digest of a run that was
// never interrupted; a damaged snapshot is refused (exit 2) naming what is wrong. And a
// verification asked for and not made fails the run's checks.

import { createHash } from "node:crypto";
import { mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { unpack } from "msgpackr";
import { WebSocketServer } from "ws";
import { afterAll, afterEach, describe, expect, it } from "vitest";
import { newNonce, proof } from "../src/migrate/transport/auth.js";
import { PROTOCOL_VERSION, encode, type Message } from "../src/migrate/wire/protocol.js";
import { referenceDigest, type GuestRunSpec } from "../src/migrate/run/guest-run.js";
import { bootAndMigrate } from "../src/migrate/run/run.js";
import { loadSnapshot } from "../src/migrate/run/snapshot.js";
import { Destination, FaultProxy, killChildren, runCli, testToken } from "./migrate-harness.js";

const MiB = 2 ** 20;
const MS = 1_000_000;
const SPEC: GuestRunSpec = { workload: "hot", interrupts: "apic", memoryBytes: 4 * MiB, seed: 12, endNs: 900 * MS };
const TOKEN = testToken("snapshot");
const dir = mkdtempSync(join(tmpdir(), "blmv-snapshot-"));
const servers: WebSocketServer[] = [];
afterEach(killChildren);
afterAll(() => {
  servers.forEach((s) => s.close());
  rmSync(dir, { recursive: true, force: true });
});

/** A destination that takes the whole guest, says `ready`, and dies when the commit comes (no outcome queries). */
async function dyingDestination(): Promise<string> {
  const server = new WebSocketServer({ host: "127.0.0.1", port: 0 });
  servers.push(server);
  await new Promise((r) => server.once("listening", r));
  server.on("connection", (ws) => {
    let sourceNonce: Uint8Array;
    const destinationNonce = newNonce();
    ws.on("message", (d: Buffer) => {
      const m = unpack(d) as Record<string, unknown>;
      const reply = (r: Message): void => ws.send(encode(r));
      if (m.t === "hello") (sourceNonce = m.nonce as Uint8Array), reply({ t: "challenge", version: PROTOCOL_VERSION, capabilities: ["zero-pages"], nonce: destinationNonce });
      else if (m.t === "auth") reply({ t: "accepted", proof: proof(TOKEN, "destination", PROTOCOL_VERSION, sourceNonce, destinationNonce) });
      else if (m.t === "config") reply({ t: "prepared" });
      else if (m.t === "state") reply({ t: "ready", digest: m.digest as Uint8Array });
      else if (m.t === "commit") ws.terminate();
    });
  });
  return `ws://127.0.0.1:${(server.address() as { port: number }).port}`;
}

const reference = referenceDigest(SPEC);
let snapshot: string;

describe("an unconfirmed commit", () => {
  it("keeps the guest paused, saves it whole to the snapshot the report names, and counts the downtime from the pause", async () => {
    snapshot = join(dir, "guest.snapshot");
    const started = performance.now();
    const result = await bootAndMigrate(SPEC, { url: await dyingDestination(), token: TOKEN, migrateAtNs: 200 * MS, timeoutMs: 600, snapshotPath: snapshot });
    const elapsed = performance.now() - started;
    expect(result.report).toMatchObject({ status: "unconfirmed", resolution: "unreachable", snapshot: { path: snapshot } });
    // Counted from the pause to the report, not 0; the guest stays paused.
    expect(result.report.downtimeMs).toBeGreaterThan(1);
    expect(result.report.downtimeMs).toBeLessThan(elapsed);
    expect(statSync(snapshot).mode & 0o077).toBe(0);
    const { guest, config } = loadSnapshot(snapshot);
    // Saved as captured at the pause (the source's own clock ran on a little to measure the timer's phase).
    expect(guest.now()).toBeGreaterThanOrEqual(200 * MS);
    expect(guest.now()).toBeLessThanOrEqual(result.guest.now());
    guest.runUntil(config.endNs);
    expect(guest.digest()).toBe(reference);
  }, 60_000);

  it("blmv resume continues it to the digest of a run never interrupted", async () => {
    const r = await runCli(["resume", snapshot, "--json"]);
    expect(r.code).toBe(0);
    expect(JSON.parse(r.stdout)).toMatchObject({ workload: "hot", virtualNs: SPEC.endNs, digest: reference });
  });

  it("migrate send --from sends it again, and --verify confirms the digest", async () => {
    const dest = await Destination.start("snapshot");
    const r = await runCli(["migrate", "send", "--to", dest.url, "--from", snapshot, "--verify", "--json"], { BLMV_TOKEN: dest.token });
    expect(r.code).toBe(0);
    const out = JSON.parse(r.stdout);
    expect(out).toMatchObject({ status: "completed", destination: { digest: reference }, verification: { made: true, identical: true } });
  }, 60_000);

  it("a damaged snapshot is refused with exit 2, naming what is wrong", async () => {
    const good = readFileSync(snapshot);
    const resealed = (body: Buffer): Buffer => Buffer.concat([body, createHash("sha256").update(body).digest()]);
    const cases: [string, Buffer, RegExp][] = [
      ["flipped", Buffer.from(good).fill(0x55, 4000, 4001), /not a usable snapshot: checksum does not match \(the file is damaged\)/],
      ["cut", good.subarray(0, good.length - 100), /not a usable snapshot: its length does not match its header/],
      ["magic", Buffer.concat([Buffer.from("NOTASNAP"), good.subarray(8)]), /not a usable snapshot: wrong magic/],
      ["version", (() => { const b = Buffer.from(good); b.writeUInt32LE(9, 8); return b; })(), /not a usable snapshot: unsupported version 9/],
      // Resealed after a change inside: the checksum holds, the saved digest does not.
      ["memory", resealed((() => { const b = Buffer.from(good.subarray(0, good.length - 32)); b[b.length - 10] ^= 1; return b; })()), /not a usable snapshot: memory, CPU or device records differ from the digest saved with them/],
    ];
    for (const [name, bytes, message] of cases) {
      const path = join(dir, `${name}.snapshot`);
      writeFileSync(path, bytes);
      const r = await runCli(["resume", path]);
      expect({ name, code: r.code }).toEqual({ name, code: 2 });
      expect(r.stderr).toMatch(message);
    }
    const missing = await runCli(["resume", join(dir, "none.snapshot")]);
    expect(missing).toMatchObject({ code: 2, stderr: expect.stringMatching(/none\.snapshot: no such file/) });
  }, 60_000);
});

describe("a check asked for and not made", () => {
  it("--verify with the link cut before the destination's final report fails the run (exit 1) and says so", async () => {
    const dest = await Destination.start("verify");
    const proxy = await FaultProxy.start(dest.url, { from: "destination", type: "finished" });
    const r = await runCli(["migrate", "send", "--to", proxy.url, "--memory", "4M", "--duration", "1", "--migrate-after", "0.2", "--verify", "--timeout", "1500"], { BLMV_TOKEN: dest.token });
    expect(r.code).toBe(1);
    expect(r.stdout).toMatch(/verification {6}NOT MADE, asked for with --verify: no final digest to compare: the destination's report of the guest's end never came/);
    expect(r.stdout).not.toMatch(/\d\.\d{4,} ms/);
  }, 60_000);
});
