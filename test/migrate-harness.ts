// Test equipment for migrations between real processes: a destination process (the built CLI)
// whose JSON events can be awaited, a proxy that cuts, stalls or corrupts the connection at a
// chosen message, and a bare client that speaks the protocol by hand.

import { spawn, type ChildProcess } from "node:child_process";
import { createHash } from "node:crypto";
import { existsSync } from "node:fs";
import { resolve } from "node:path";
import { createInterface } from "node:readline";
import { unpack } from "msgpackr";
import WebSocket, { WebSocketServer } from "ws";
import type { DestinationEvent } from "../src/migrate/destination/destination.js";
import { MAX_PAYLOAD, encode, type Message, type MessageType } from "../src/migrate/wire/protocol.js";

export const CLI = resolve("dist/src/cli/main.js");
if (!existsSync(CLI)) throw new Error("dist/src/cli/main.js is missing: run `npm run build` first (npm test does)");

type Event = DestinationEvent | { event: "listening"; url: string; port: number; token?: string };

const children = new Set<ChildProcess>();

/** Kills every process the harness started (call it in afterEach). */
export function killChildren(): void {
  for (const c of children) if (c.exitCode === null && c.signalCode === null) c.kill("SIGKILL");
  children.clear();
}

/** Runs the CLI to completion; resolves with its exit code and output. */
export function runCli(args: string[], env: NodeJS.ProcessEnv = {}): Promise<{ code: number | null; stdout: string; stderr: string }> {
  const child = spawn(process.execPath, [CLI, ...args], { env: { ...process.env, ...env }, stdio: ["ignore", "pipe", "pipe"] });
  children.add(child);
  let stdout = "";
  let stderr = "";
  child.stdout!.on("data", (d) => (stdout += d));
  child.stderr!.on("data", (d) => (stderr += d));
  return new Promise((r) => child.on("close", (code) => r({ code, stdout, stderr })));
}

/**
 * A token strong enough for the CLI, named by `name` (the same name gives the same token), so a
 * test can say "right" and "wrong" and still pass the CLI's strength check.
 */
export function testToken(name: string): string {
  return `${name.replace(/[^A-Za-z0-9_-]/g, "_")}-${createHash("sha256").update(name).digest("base64url")}`;
}

export class Destination {
  readonly events: Event[] = [];
  private waiters: (() => void)[] = [];

  private constructor(
    readonly child: ChildProcess,
    readonly token: string,
  ) {
    createInterface({ input: child.stdout! }).on("line", (line) => {
      this.events.push(JSON.parse(line) as Event);
      for (const w of this.waiters.splice(0)) w();
    });
  }

  /** Starts `blmv migrate listen --port 0 --json` with testToken(`name`) in the environment. */
  static async start(name = "test-token", extra: string[] = []): Promise<Destination> {
    const token = testToken(name);
    const child = spawn(process.execPath, [CLI, "migrate", "listen", "--port", "0", "--json", ...extra], {
      env: { ...process.env, BLMV_TOKEN: token },
      stdio: ["ignore", "pipe", "inherit"],
    });
    children.add(child);
    const d = new Destination(child, token);
    await d.waitFor((e) => e.event === "listening");
    return d;
  }

  /** SIGTERM, then the exit code; null when it had not exited after `graceMs` (it is killed then). */
  async stop(graceMs = 3000): Promise<number | null> {
    if (this.child.exitCode !== null) return this.child.exitCode;
    const exited = new Promise<number | null>((r) => this.child.once("exit", (code) => r(code)));
    this.child.kill("SIGTERM");
    const late = new Promise<"late">((r) => setTimeout(() => r("late"), graceMs).unref());
    const code = await Promise.race([exited, late]);
    if (code !== "late") return code;
    this.child.kill("SIGKILL");
    return null;
  }

  get url(): string {
    return (this.events.find((e) => e.event === "listening") as { url: string }).url;
  }

  /** The first event (past or future) that matches. */
  async waitFor(match: (e: Event) => boolean, timeoutMs = 20_000): Promise<Event> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const found = this.events.find(match);
      if (found) return found;
      if (this.child.exitCode !== null) throw new Error(`destination exited (${this.child.exitCode}) without the awaited event; events: ${JSON.stringify(this.events)}`);
      if (Date.now() > deadline) throw new Error(`destination event not seen in ${timeoutMs} ms; events: ${JSON.stringify(this.events)}`);
      await new Promise<void>((r) => {
        this.waiters.push(r);
        setTimeout(r, 50);
      });
    }
  }
}

export interface Fault {
  /** Whose message is hit. */
  from: "source" | "destination";
  type: MessageType;
  /** Which one of that type (1 = the first). */
  nth?: number;
  /**
   * cut: the connection drops instead of delivering it. stall: it and everything after it, both
   * ways, is held and never delivered (the link hangs). corrupt: one byte of it is flipped.
   */
  action?: "cut" | "stall" | "corrupt";
  /** Which byte a corruption flips, as a fraction of the frame's length. */
  at?: number;
}

/**
 * A WebSocket relay between source and destination that injects `fault` into the first
 * connection through it; later connections (a source asking what became of its commit) pass.
 */
export class FaultProxy {
  fired = false;
  private connections = 0;

  private constructor(
    private readonly server: WebSocketServer,
    readonly url: string,
  ) {}

  static async start(target: string, fault: Fault): Promise<FaultProxy> {
    const { server, url } = await relayServer();
    const proxy = new FaultProxy(server, url);
    server.on("connection", (down) => proxy.relay(down, target, proxy.connections++ === 0 ? fault : undefined));
    return proxy;
  }

  private relay(down: WebSocket, target: string, fault: Fault | undefined): void {
    const up = new WebSocket(target, { maxPayload: MAX_PAYLOAD, perMessageDeflate: false });
    const early: Buffer[] = [];
    const seen = new Map<string, number>();
    let stalled = false;
    const forward = (from: Fault["from"], data: Buffer, to: WebSocket): void => {
      if (stalled) return;
      const type = (unpack(data) as { t: string }).t;
      const n = (seen.get(`${from}:${type}`) ?? 0) + 1;
      seen.set(`${from}:${type}`, n);
      if (fault && from === fault.from && type === fault.type && n === (fault.nth ?? 1)) {
        this.fired = true;
        const action = fault.action ?? "cut";
        if (action === "cut") {
          down.terminate();
          up.terminate();
          return;
        }
        if (action === "stall") {
          stalled = true;
          return;
        }
        data = Buffer.from(data);
        data[Math.min(data.length - 1, Math.floor((fault.at ?? 0.5) * data.length))] ^= 0x5a;
      }
      if (to.readyState === WebSocket.OPEN) to.send(data);
      else early.push(data);
    };
    up.on("open", () => early.splice(0).forEach((d) => up.send(d)));
    down.on("message", (d: Buffer) => forward("source", d, up));
    up.on("message", (d: Buffer) => forward("destination", d, down));
    tieEnds(down, up);
  }

  close(): Promise<void> {
    return closeRelay(this.server);
  }
}

/** A WebSocket server on a free loopback port, for a relay between source and destination. */
export async function relayServer(): Promise<{ server: WebSocketServer; url: string }> {
  const server = new WebSocketServer({ host: "127.0.0.1", port: 0, maxPayload: MAX_PAYLOAD, perMessageDeflate: false });
  await new Promise((r) => server.once("listening", r));
  return { server, url: `ws://127.0.0.1:${(server.address() as { port: number }).port}` };
}

/** Either end of a relayed connection drops when the other does. */
export function tieEnds(down: WebSocket, up: WebSocket): void {
  down.on("close", () => up.terminate());
  up.on("close", () => down.terminate());
  up.on("error", () => down.terminate());
}

export function closeRelay(server: WebSocketServer): Promise<void> {
  for (const c of server.clients) c.terminate();
  return new Promise((r) => server.close(() => r()));
}

/** A client that sends hand-made frames and reads the replies, decoded but not validated. */
export class BareClient {
  readonly received: Record<string, unknown>[] = [];
  closed = false;

  private constructor(readonly ws: WebSocket) {
    ws.on("message", (d: Buffer) => this.received.push(unpack(d) as Record<string, unknown>));
    ws.on("close", () => (this.closed = true));
  }

  static connect(url: string): Promise<BareClient> {
    return BareClient.wrap(new WebSocket(url, { perMessageDeflate: false }));
  }

  /** A client on a socket just made, once it is open. */
  static async wrap(ws: WebSocket): Promise<BareClient> {
    // Listening from the start: a reply may arrive in the same read as the handshake.
    const client = new BareClient(ws);
    await new Promise((r, j) => ws.once("open", r).once("error", j));
    return client;
  }

  send(m: Message | Record<string, unknown>): void {
    this.ws.send(encode(m as Message));
  }

  sendRaw(bytes: Uint8Array): void {
    this.ws.send(bytes);
  }

  /** The next reply, or what the destination sent before it closed. */
  async next(timeoutMs = 5000): Promise<Record<string, unknown>> {
    const deadline = Date.now() + timeoutMs;
    while (this.received.length === 0) {
      if (Date.now() > deadline) throw new Error("no reply");
      await new Promise((r) => setTimeout(r, 10));
    }
    return this.received.shift()!;
  }

  async waitClosed(timeoutMs = 5000): Promise<boolean> {
    const deadline = Date.now() + timeoutMs;
    while (!this.closed && Date.now() < deadline) await new Promise((r) => setTimeout(r, 10));
    return this.closed;
  }
}
