// A small client for QEMU's machine protocol (QMP) over a unix socket: JSON objects one a line,
// a greeting, then commands matched to their replies by id. Every wait has a deadline, so a
// silent or broken QEMU gives a clear error, never a hang. See docs/performance.md (the peer).

import { connect, type Socket } from "node:net";
import { setTimeout as sleep } from "node:timers/promises";

/** The reply QEMU gave to a command with an `error` member. */
export class QmpCommandError extends Error {
  constructor(
    readonly command: string,
    readonly errorClass: string,
    readonly description: string,
  ) {
    super(`QMP ${command}: ${errorClass}: ${description}`);
    this.name = "QmpCommandError";
  }
}

export interface QmpConnectOptions {
  /** How long to keep retrying while the socket is not there yet (QEMU still starting), and then to wait for the greeting. */
  connectTimeoutMs: number;
  /** The longest any one command may wait for its reply. */
  commandTimeoutMs: number;
  /** Aborted when waiting makes no more sense (the QEMU process exited). */
  signal?: AbortSignal;
}

interface Pending {
  command: string;
  resolve(value: unknown): void;
  reject(error: Error): void;
  timer: NodeJS.Timeout;
}

/** Between attempts to reach a socket QEMU has not created yet. */
const CONNECT_RETRY_MS = 20;

export class QmpClient {
  private buffered = "";
  private nextId = 0;
  private readonly pending = new Map<string, Pending>();
  private failure: Error | undefined;
  private greeted: ((greeting: unknown) => void) | undefined;

  private constructor(
    private readonly socket: Socket,
    private readonly path: string,
    private readonly commandTimeoutMs: number,
  ) {
    socket.setEncoding("utf8");
    socket.on("data", (chunk: string) => this.receive(chunk));
    socket.on("error", (e) => this.fail(new Error(`QMP ${path}: ${e.message}`)));
    socket.on("close", () => this.fail(new Error(`QMP ${path}: QEMU closed the connection`)));
  }

  /**
   * Connects (retrying until the socket exists), reads the greeting and leaves capabilities
   * negotiation mode, all within `connectTimeoutMs`: QEMU answers only once its machine is built.
   */
  static async connect(path: string, options: QmpConnectOptions): Promise<QmpClient> {
    const deadline = Date.now() + options.connectTimeoutMs;
    const socket = await reach(path, deadline, options.signal);
    const client = new QmpClient(socket, path, options.commandTimeoutMs);
    try {
      const greeting = await client.greeting(Math.max(0, deadline - Date.now()));
      if (typeof greeting !== "object" || greeting === null || !("QMP" in greeting)) {
        throw new Error(`QMP ${path}: expected a greeting with a "QMP" member, got ${JSON.stringify(greeting).slice(0, 200)}`);
      }
      await client.execute("qmp_capabilities", undefined, Math.max(1, deadline - Date.now()));
      return client;
    } catch (e) {
      client.close();
      throw e;
    }
  }

  /** Runs `command` and resolves with its `return` value; rejects on an error reply, a bad reply, a closed connection or the deadline. */
  execute<T = unknown>(command: string, args?: Record<string, unknown>, timeoutMs = this.commandTimeoutMs): Promise<T> {
    if (this.failure) return Promise.reject(this.failure);
    const id = `c${this.nextId++}`;
    return new Promise<T>((resolve, reject) => {
      const timer = setTimeout(() => {
        // The stream may still deliver this reply later, out of turn: no later command can trust it.
        this.fail(new Error(`QMP ${command}: no reply within ${timeoutMs} ms`));
      }, timeoutMs);
      this.pending.set(id, { command, resolve: resolve as (v: unknown) => void, reject, timer });
      this.socket.write(`${JSON.stringify(args ? { execute: command, arguments: args, id } : { execute: command, id })}\n`);
    });
  }

  close(): void {
    this.fail(new Error(`QMP ${this.path}: connection closed`));
  }

  private greeting(timeoutMs: number): Promise<unknown> {
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => this.fail(new Error(`QMP ${this.path}: no greeting within ${timeoutMs} ms`)), timeoutMs);
      this.greeted = (g) => {
        clearTimeout(timer);
        resolve(g);
      };
      this.pending.set("greeting", { command: "greeting", resolve, reject, timer });
    });
  }

  private receive(chunk: string): void {
    this.buffered += chunk;
    let end: number;
    while (!this.failure && (end = this.buffered.indexOf("\n")) >= 0) {
      const line = this.buffered.slice(0, end).trim();
      this.buffered = this.buffered.slice(end + 1);
      if (line !== "") this.message(line);
    }
  }

  private message(line: string): void {
    let message: unknown;
    try {
      message = JSON.parse(line);
    } catch {
      this.fail(new Error(`QMP ${this.path}: not JSON: ${line.slice(0, 200)}`));
      return;
    }
    if (typeof message !== "object" || message === null || Array.isArray(message)) {
      this.fail(new Error(`QMP ${this.path}: expected a JSON object, got ${line.slice(0, 200)}`));
      return;
    }
    const m = message as Record<string, unknown>;
    if (this.greeted) {
      const greeted = this.greeted;
      this.greeted = undefined;
      this.pending.delete("greeting");
      greeted(m);
      return;
    }
    if ("event" in m) return;
    const id = typeof m.id === "string" ? m.id : undefined;
    const waiting = id === undefined ? undefined : this.pending.get(id);
    if (!waiting || id === undefined) {
      this.fail(new Error(`QMP ${this.path}: a reply to no command sent: ${line.slice(0, 200)}`));
      return;
    }
    this.pending.delete(id);
    clearTimeout(waiting.timer);
    if ("return" in m) {
      waiting.resolve(m.return);
    } else if (typeof m.error === "object" && m.error !== null) {
      const error = m.error as { class?: unknown; desc?: unknown };
      waiting.reject(new QmpCommandError(waiting.command, String(error.class ?? "Error"), String(error.desc ?? "no description")));
    } else {
      this.fail(new Error(`QMP ${waiting.command}: a reply with neither "return" nor "error": ${line.slice(0, 200)}`));
      waiting.reject(this.failure!);
    }
  }

  /** Fails every command still waiting with `error` and closes the connection; later commands fail at once. */
  private fail(error: Error): void {
    if (this.failure) return;
    this.failure = error;
    this.greeted = undefined;
    for (const p of this.pending.values()) {
      clearTimeout(p.timer);
      p.reject(error);
    }
    this.pending.clear();
    this.socket.destroy();
  }
}

/** A connected socket to `path`, retrying while it does not exist yet or nobody listens, until `deadline`. */
async function reach(path: string, deadline: number, signal: AbortSignal | undefined): Promise<Socket> {
  for (;;) {
    signal?.throwIfAborted();
    const attempt = await new Promise<Socket | Error>((resolve) => {
      const socket = connect(path);
      socket.once("connect", () => resolve(socket));
      socket.once("error", (e) => {
        socket.destroy();
        resolve(e);
      });
    });
    if (!(attempt instanceof Error)) return attempt;
    const code = (attempt as NodeJS.ErrnoException).code;
    if (code !== "ENOENT" && code !== "ECONNREFUSED") throw new Error(`QMP ${path}: ${attempt.message}`);
    if (Date.now() >= deadline) throw new Error(`QMP ${path}: nothing listening there after waiting (${attempt.message})`);
    // Cut short by the signal, which the loop's first line then throws.
    await sleep(CONNECT_RETRY_MS, undefined, { signal }).catch(() => undefined);
  }
}
