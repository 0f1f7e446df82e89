// Batch acknowledgements: the destination acknowledges each batch it has checked and stored,
// and the source paces itself by them — a window of bytes in flight, bandwidth measured from
// what arrived, rounds that end when they have arrived, waits timed from the last progress.
// The window on its own; the destination's side on an in-memory connection; then migrations
// between two processes over a link slower than the socket, over the emulated --bandwidth, and
// with a peer that lacks the capability.

import { afterEach, describe, expect, it } from "vitest";
import { TokenBucket } from "../src/migrate/transport/link.js";
import { AckWindow, MAX_BATCHES_IN_FLIGHT, MAX_WINDOW_BYTES, MIN_WINDOW_BYTES } from "../src/migrate/transport/ack-window.js";
import { referenceDigest, type GuestRunSpec } from "../src/migrate/run/guest-run.js";
import { listen } from "../src/migrate/destination/listener.js";
import { ProtocolError, encode, type Message } from "../src/migrate/wire/protocol.js";
import { bootAndMigrate } from "../src/migrate/run/run.js";
import { Destination, killChildren } from "./migrate-harness.js";
import { PacedRelay } from "./migrate-paced-relay.js";
import { MemorySocket, play, validStream } from "./migrate-stream.js";

const MiB = 2 ** 20;
const MS = 1_000_000;

describe("the window of batches in flight", () => {
  it("lets batches go while their bytes fit, and acknowledgements are cumulative", () => {
    const w = new AckWindow();
    const half = MIN_WINDOW_BYTES / 2;
    expect(w.windowBytes).toBe(MIN_WINDOW_BYTES);
    // Nothing in flight: even a batch larger than the window goes.
    expect(w.fits(3 * MIN_WINDOW_BYTES)).toBe(true);
    w.sent(0, half, 0);
    w.sent(1, half, 1);
    expect(w.inFlightBytes).toBe(MIN_WINDOW_BYTES);
    expect(w.fits(1)).toBe(false);
    w.acked(0, 40);
    expect(w.fits(half)).toBe(true);
    expect(w.fits(half + 1)).toBe(false);
    w.sent(2, half, 41);
    expect(w.fits(512)).toBe(false);
    w.acked(1, 60);
    w.sent(3, 512, 61);
    // One acknowledgement for the last two batches.
    w.acked(3, 100);
    expect(w.empty).toBe(true);
    expect(w.stats()).toMatchObject({ ackedBytes: 3 * half + 512, maxInFlightBytes: MIN_WINDOW_BYTES, minRttMs: 39 });
  });

  it("refuses an acknowledgement of a batch that is not in flight", () => {
    const w = new AckWindow();
    expect(() => w.acked(0, 0)).toThrow(ProtocolError);
    w.sent(0, 100, 0);
    w.sent(1, 100, 0);
    expect(() => w.acked(2, 1)).toThrow(/ack.seq: batch 2 is not in flight/);
    w.acked(0, 1);
    expect(() => w.acked(0, 2)).toThrow(/batch 0 is not in flight/);
    w.acked(1, 2);
  });

  it("grows to twice the bandwidth-delay product, within its bounds", () => {
    const w = new AckWindow();
    // Eight 1 MiB batches acknowledged 100 ms after they went: 80 MiB/s × 100 ms, twice.
    for (let seq = 0; seq < 8; seq++) w.sent(seq, MiB, 0);
    w.acked(7, 100);
    expect(w.windowBytes).toBeCloseTo(16 * MiB, -3);
    for (let seq = 8; seq < 8 + 64; seq++) w.sent(seq, 4 * MiB, 100);
    w.acked(71, 200);
    expect(w.windowBytes).toBe(MAX_WINDOW_BYTES);
  });

  it("holds a bounded number of batches, however small", () => {
    const w = new AckWindow();
    for (let seq = 0; seq < MAX_BATCHES_IN_FLIGHT; seq++) w.sent(seq, 10, 0);
    expect(w.fits(10)).toBe(false);
    w.acked(0, 1);
    expect(w.fits(10)).toBe(true);
  });
});

describe("the destination's acknowledgements", () => {
  const TOKEN = "ack-token";
  const stream = validStream({ workload: "uniform", interrupts: "apic", memoryBytes: 2 * MiB, seed: 3, endNs: 400 * MS }, 30 * MS, TOKEN);
  const frames = (capabilities: string[]): (Uint8Array | "auth")[] =>
    stream.messages.map((m) => (m.t === "auth" ? "auth" : encode(m.t === "hello" ? ({ ...m, capabilities } as Message) : m)));
  const batches = stream.messages.filter((m) => m.t === "pages").length;

  async function playInto(capabilities: string[]): Promise<Record<string, unknown>[]> {
    const listener = await listen({ host: "127.0.0.1", port: 0, token: TOKEN, maxMemoryBytes: 64 * MiB });
    try {
      const socket = new MemorySocket();
      listener.accept(socket.asWebSocket, "127.0.0.2:1");
      play(socket, frames(capabilities), TOKEN);
      socket.close();
      return socket.sent;
    } finally {
      await listener.close();
    }
  }

  it("answers every stored batch, in order and before ready, to a source that asked", async () => {
    const sent = await playInto(["zero-pages", "acks"]);
    expect(sent[0]).toMatchObject({ t: "challenge", capabilities: ["zero-pages", "acks"] });
    expect(batches).toBeGreaterThan(2);
    expect(sent.map((m) => m.t)).toEqual(["challenge", "accepted", "prepared", ...Array(batches).fill("ack"), "ready"]);
    expect(sent.filter((m) => m.t === "ack").map((m) => m.seq)).toEqual([...Array(batches).keys()]);
  });

  it("sends none to a source that did not ask", async () => {
    const sent = await playInto(["zero-pages"]);
    expect(sent.map((m) => m.t)).toEqual(["challenge", "accepted", "prepared", "ready"]);
  });
});

describe("migrations paced by acknowledgements, between two processes", () => {
  const spec: GuestRunSpec = { workload: "idle", interrupts: "apic", memoryBytes: 8 * MiB, seed: 11, endNs: 3000 * MS };
  let relay: PacedRelay | undefined;
  afterEach(async () => {
    killChildren();
    await relay?.close();
    relay = undefined;
  });

  it("over a link slower than the socket: throughput is the link's, the window bounds what it holds, waits outlast a full pipe", async () => {
    const rate = 4 * MiB;
    const dest = await Destination.start();
    relay = await PacedRelay.start(dest.url, rate);
    // All 8 MiB with their bytes take two seconds on this link; the source gives up after 1.5 s
    // without progress, so it may not count its wait from the last frame it handed the socket.
    const { report } = await bootAndMigrate(spec, { url: relay.url, token: dest.token, migrateAtNs: 100 * MS, zeroPages: false, timeoutMs: 1500 });
    expect(report.error).toBeUndefined();
    expect(report.status).toBe("completed");
    expect(report.destination?.digest).toBe(referenceDigest(spec));
    expect(report.bytes.memory).toBeGreaterThan(spec.memoryBytes);
    expect(report.throughputBytesPerSec).toBeLessThanOrEqual(rate * 1.03);
    const acks = report.acks!;
    expect(acks.ackedBytes).toBe(report.bytes.memory);
    expect(acks.maxInFlightBytes).toBeLessThanOrEqual(acks.maxWindowBytes);
    // The relay never held more than the window: the rest waited in the source, unsent.
    expect(relay.maxHeldBytes).toBeLessThanOrEqual(acks.maxWindowBytes);
    expect(acks.maxWindowBytes).toBeLessThan(spec.memoryBytes);
  });

  it("over the emulated --bandwidth: the throughput reported does not exceed it beyond the bucket's burst", async () => {
    const bandwidth = 16 * MiB;
    const dest = await Destination.start();
    const { report } = await bootAndMigrate(spec, { url: dest.url, token: dest.token, migrateAtNs: 100 * MS, zeroPages: false, bandwidth });
    expect(report.status).toBe("completed");
    expect(report.destination?.digest).toBe(referenceDigest(spec));
    const acked = report.acks!.ackedBytes;
    expect(acked).toBe(report.bytes.memory);
    // The bucket lets at most its burst go ahead of the rate: acked ≤ burst + bandwidth × time,
    // time being acked ÷ the throughput reported.
    const { burst } = new TokenBucket(bandwidth);
    expect(report.throughputBytesPerSec).toBeLessThanOrEqual((bandwidth * acked) / (acked - burst));
  });

  it("with a peer that lacks the capability: no acknowledgements either way, and the guest still arrives whole", async () => {
    const dest = await Destination.start();
    relay = await PacedRelay.start(dest.url, Infinity, "acks");
    const { report } = await bootAndMigrate(spec, { url: relay.url, token: dest.token, migrateAtNs: 100 * MS });
    expect(report.error).toBeUndefined();
    expect(report.status).toBe("completed");
    expect(report.destination?.digest).toBe(referenceDigest(spec));
    expect(report.acks).toBeUndefined();
  });
});
