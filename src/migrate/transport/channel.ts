// One side of a migration connection as a sequence of awaited steps: send a message (paced by
// backpressure, an optional bandwidth limit and, once acknowledgements are agreed, the window
// of batches in flight), or wait for the peer's next one. While it waits it keeps calling
// `idle`, so the guest keeps running between the network's events. A wait times out after
// `timeoutMs` without progress: an acknowledgement counts as progress.

import type { IncomingMessage } from "node:http";
import { performance } from "node:perf_hooks";
import type { Duplex } from "node:stream";
import type WebSocket from "ws";
import { AckWindow } from "./ack-window.js";
import { framePool } from "../wire/frame-pool.js";
import { TokenBucket } from "./link.js";
import { decode } from "../wire/decode.js";
import { ProtocolError, encode, type Message, type MessageType } from "../wire/protocol.js";
import { MigrationFailure } from "../failure.js";
import { printable } from "../../common/printable.js";

/** Bytes handed to the socket but not yet written out, above which sending waits. */
const HIGH_WATER = 4 * 1024 * 1024;
/** Messages the peer may have sent ahead of what we asked for. */
const MAX_QUEUED = 8;
/** The longest nap between two calls to `idle` while the guest runs. */
const IDLE_NAP_MS = 1;

export interface ChannelOptions {
  timeoutMs: number;
  bandwidth?: number;
  /** Emulated one-way latency: each frame, sent or received, is held this long. */
  latencyMs?: number;
  /** Called between waits: returns whether there is work that wants to be called again soon. */
  idle: () => boolean;
}

export class Channel {
  bytesSent = 0;
  private inflight = 0;
  private readonly queue: Message[] = [];
  /** The connection's socket, once the upgrade has named it (a source's channel): corked while a fragmented frame is handed over. */
  private socket?: Duplex;
  private failure?: MigrationFailure;
  private wake?: () => void;
  private bucket?: TokenBucket;
  /** Batches in flight, once the peer acknowledges them. */
  window?: AckWindow;
  /** When the peer last showed progress (an acknowledgement). */
  private progressAt = 0;

  constructor(
    private readonly ws: WebSocket,
    private readonly options: ChannelOptions,
  ) {
    if (options.bandwidth !== undefined) this.bucket = new TokenBucket(options.bandwidth);
    // With emulated latency, what the peer sent (its close included) arrives that much later, in order.
    const latency = options.latencyMs ?? 0;
    const later = (f: () => void): unknown => (latency > 0 ? setTimeout(f, latency) : f());
    ws.once("upgrade", (response: IncomingMessage) => (this.socket = response.socket));
    ws.on("message", (data: Buffer, isBinary: boolean) => later(() => this.receive(data, isBinary)));
    ws.on("close", (code: number, reason: Buffer) => later(() => this.fail(new MigrationFailure("connection", `connection closed (${code}${reason.length ? ` ${printable(reason.toString(), 100)}` : ""})`))));
    ws.on("error", (e: Error) => this.fail(new MigrationFailure("connection", e.message)));
  }

  /** Paces what is sent from now on at `bytesPerSec`. */
  setBandwidth(bytesPerSec: number): void {
    this.bucket = new TokenBucket(bytesPerSec);
  }

  /** Calls `listener` once the connection has closed. */
  onClose(listener: () => void): void {
    this.ws.once("close", listener);
  }

  /** Waits for the connection to open; throws the failure if it does not. */
  async opened(): Promise<void> {
    const ws = this.ws;
    await new Promise<void>((resolve) => {
      if (ws.readyState !== ws.CONNECTING) return resolve();
      const done = (): void => {
        ws.off("open", done).off("close", done).off("error", done);
        resolve();
      };
      ws.on("open", done).on("close", done).on("error", done);
    });
    this.check();
  }

  /**
   * Puts a message on the wire once the link has room; returns the frame's size. A batch sent
   * `beyondWindow` (the paused guest's last pages, which must all go anyway) does not wait for
   * the acknowledgement window, though it counts in flight until acknowledged.
   */
  async send(message: Message, { beyondWindow = false } = {}): Promise<number> {
    const seq = message.t === "pages" || message.t === "deltas" ? message.seq : -1;
    const encoded = seq >= 0 ? framePool.encode(message) : undefined;
    const fragments = encoded?.fragments ?? [encode(message)];
    const bytes = encoded?.bytes ?? fragments[0].length;
    const batch = seq >= 0 ? this.window : undefined;
    if (batch && !batch.fits(bytes, beyondWindow)) await this.waitUntil(() => batch.fits(bytes, beyondWindow), "acknowledgement");
    for (;;) {
      this.check();
      // A peer that stops reading fails the send after the timeout, like any other wait on it.
      if (this.inflight > HIGH_WATER) await this.waitUntil(() => this.inflight <= HIGH_WATER, "reading of what was sent");
      const wait = this.bucket?.take(bytes) ?? 0;
      if (wait === 0) break;
      await this.nap(wait);
    }
    batch?.sent(seq, bytes, performance.now());
    this.inflight += bytes;
    this.bytesSent += bytes;
    const written = (e?: Error): void => {
      encoded?.release();
      this.inflight -= bytes;
      if (e) this.fail(new MigrationFailure("connection", e.message));
      this.wake?.();
    };
    const put = (): void => {
      if (this.ws.readyState !== this.ws.OPEN) return;
      // The fragments of one message leave together: one write to the socket, not one each.
      this.socket?.cork();
      const last = fragments.length - 1;
      for (let i = 0; i < last; i++) this.ws.send(fragments[i], { binary: true, fin: false });
      this.ws.send(fragments[last], { binary: true, fin: true }, written);
      this.socket?.uncork();
    };
    // Frames held for the same time leave in the order they were sent.
    if (this.options.latencyMs) setTimeout(put, this.options.latencyMs);
    else put();
    return bytes;
  }

  /** The peer's next message if one has arrived, without waiting; an `error` from the peer throws. */
  poll(): Message | undefined {
    this.check();
    return this.queue.shift();
  }

  /** The peer's next message, which must be of `type`; an `error` from the peer throws. */
  async expect<T extends MessageType>(type: T, timeoutMs = this.options.timeoutMs): Promise<Extract<Message, { t: T }>> {
    const m = await this.next(type, timeoutMs);
    if (m.t !== type) throw new MigrationFailure("unexpected", `expected ${type}, got ${m.t}`);
    return m as Extract<Message, { t: T }>;
  }

  /** The peer's next message, whatever its type (`awaited` names it in a timeout); an `error` throws. */
  async next(awaited: string, timeoutMs = this.options.timeoutMs): Promise<Message> {
    await this.waitUntil(() => this.queue.length > 0, awaited, timeoutMs);
    const m = this.queue.shift()!;
    if (m.t === "error") throw new MigrationFailure(m.code, m.message, true);
    return m;
  }

  /** Waits until the peer has acknowledged every batch sent (at once without acknowledgements). */
  async drain(): Promise<void> {
    const window = this.window;
    if (window && !window.empty) await this.waitUntil(() => window.empty, "acknowledgement");
  }

  /** Waits until `done`, failing after `timeoutMs` without progress from the peer. */
  private async waitUntil(done: () => boolean, awaited: string, timeoutMs = this.options.timeoutMs): Promise<void> {
    const start = performance.now();
    while (!done()) {
      this.check();
      const left = Math.max(start, this.progressAt) + timeoutMs - performance.now();
      if (left <= 0) throw new MigrationFailure("timeout", `no ${awaited} from the peer within ${Math.round(timeoutMs)} ms`);
      await this.nap(left);
    }
  }

  /** Stops whatever step is under way with a "cancelled" failure. */
  cancel(): void {
    this.abort(new MigrationFailure("cancelled", "cancelled by the user"));
  }

  /** Stops whatever step is under way with `failure`; a connection still opening is dropped. */
  abort(failure: MigrationFailure): void {
    this.fail(failure);
    if (this.ws.readyState === this.ws.CONNECTING) this.ws.terminate();
  }

  /** Tells the peer why we stop (when the link still works) and closes. */
  close(failure?: MigrationFailure): void {
    if (failure && !failure.byPeer && failure.code !== "connection" && this.ws.readyState === this.ws.OPEN) {
      this.ws.send(encode({ t: "error", code: failure.code, message: failure.message }));
    }
    closeSoon(this.ws);
  }

  /** Throws what ended the connection, if anything did: the peer's own error message first. */
  check(): void {
    const peer = this.queue.find((m) => m.t === "error");
    if (peer?.t === "error") throw new MigrationFailure(peer.code, peer.message, true);
    if (this.failure) throw this.failure;
  }

  private receive(data: Buffer, isBinary: boolean): void {
    if (this.failure) return;
    try {
      if (!isBinary) throw new ProtocolError("bad-message", "text frame on a binary protocol");
      const m = decode(data);
      if (m.t === "ack") this.acked(m.seq);
      else if (this.queue.length === MAX_QUEUED) throw new ProtocolError("bad-message", "the peer sends messages nobody asked for");
      else this.queue.push(m);
    } catch (e) {
      const p = e as ProtocolError;
      this.fail(new MigrationFailure(p.code ?? "bad-message", `from the peer: ${p.message}`));
    }
    this.wake?.();
  }

  private acked(seq: number): void {
    if (!this.window) throw new ProtocolError("unexpected", "an acknowledgement nobody asked for");
    this.progressAt = performance.now();
    this.window.acked(seq, this.progressAt);
  }

  private fail(f: MigrationFailure): void {
    this.failure ??= f;
    this.wake?.();
  }

  /** Waits up to `ms` (less while the idle work wants to run) or until something happens. */
  private nap(ms: number): Promise<void> {
    const busy = this.options.idle();
    return new Promise((resolve) => {
      const done = (): void => {
        clearTimeout(timer);
        this.wake = undefined;
        resolve();
      };
      const timer = setTimeout(done, busy ? Math.min(ms, IDLE_NAP_MS) : ms);
      this.wake = done;
    });
  }
}

/** Closes gracefully, and for sure within a second even if the peer never answers. */
export function closeSoon(ws: WebSocket): void {
  if (ws.readyState === ws.CLOSED) return;
  ws.close(1000);
  setTimeout(() => ws.terminate(), 1000).unref();
}
