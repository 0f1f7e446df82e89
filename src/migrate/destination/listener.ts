// A destination server: accepts migration connections, plain (ws://) or over TLS (wss://), and
// runs a session for each, several at once within the Admission's limits (a source beyond them
// is told the destination is busy); optionally it stops after the first guest it received has
// run to its end. A connection a web browser opens (it carries an Origin header) is refused
// before the handshake: no page in the user's browser can reach the migration port.

import { createServer, type Server } from "node:https";
import type { AddressInfo } from "node:net";
import { WebSocketServer, type WebSocket } from "ws";
import { Machine } from "../../core/machine.js";
import { Admission, DEFAULT_LIMITS, addressOf, type AdmissionLimits } from "./admission.js";
import { DestinationSession, type DestinationOptions } from "./destination.js";
import { MAX_PAYLOAD, encode } from "../wire/protocol.js";
import { closeSoon } from "../transport/channel.js";

export interface ListenOptions extends DestinationOptions {
  host: string;
  /** 0 lets the system choose a free port. */
  port: number;
  /** Stop once one migrated guest has finished its run here. */
  once?: boolean;
  /** Certificate chain and private key (PEM): the listener speaks wss:// only. */
  tls?: { cert: Buffer | string; key: Buffer | string };
  limits?: Partial<AdmissionLimits>;
}

export interface Listener {
  readonly host: string;
  readonly port: number;
  readonly url: string;
  readonly admission: Admission;
  /** Resolves when the server has stopped (after `close()`, or after its one guest with `once`). */
  readonly closed: Promise<void>;
  /** Takes a connection as if it had arrived on the port (the server's own entry point). */
  accept(ws: WebSocket, peer: string): void;
  /** Stops accepting, and ends the sessions under way (guests running here stop). */
  close(): Promise<void>;
}

export async function listen(options: ListenOptions): Promise<Listener> {
  // Prepared now, the core is ready when a migration's downtime starts.
  Machine.prepare();
  const admission = new Admission({ ...DEFAULT_LIMITS, ...options.limits });
  let https: Server | undefined;
  let server: WebSocketServer;
  const wsOptions = { maxPayload: MAX_PAYLOAD, perMessageDeflate: false, verifyClient: (info: { origin?: string }) => info.origin === undefined };
  if (options.tls) {
    https = createServer({ cert: options.tls.cert, key: options.tls.key });
    server = new WebSocketServer({ ...wsOptions, server: https });
    https.listen(options.port, options.host);
  } else {
    server = new WebSocketServer({ ...wsOptions, host: options.host, port: options.port });
  }
  const listening = https ?? server;
  await new Promise<void>((resolve, reject) => {
    listening.once("listening", resolve);
    listening.once("error", reject);
  });
  const { port } = (https ?? server).address() as AddressInfo;
  const sessions = new Set<DestinationSession>();
  let resolveClosed!: () => void;
  const closed = new Promise<void>((r) => (resolveClosed = r));
  const close = (): Promise<void> =>
    new Promise<void>((resolve) => {
      for (const s of sessions) s.stop();
      for (const client of server.clients) closeSoon(client);
      server.close(() => {
        const done = (): void => {
          resolveClosed();
          resolve();
        };
        if (https) https.close(done);
        else done();
      });
    });

  const accept = (ws: WebSocket, peer: string): void => {
    const refusal = admission.refuseConnection(addressOf(peer));
    if (refusal) {
      ws.send(encode({ t: "error", ...refusal }));
      closeSoon(ws);
      options.onEvent?.({ event: "refused", peer, reason: refusal.message });
      return;
    }
    const session = new DestinationSession(ws, peer, options, admission);
    sessions.add(session);
    void session.done.then((outcome) => {
      sessions.delete(session);
      if (options.once && outcome === "finished") void close();
    });
  };
  server.on("connection", (ws: WebSocket, request) => accept(ws, `${request.socket.remoteAddress}:${request.socket.remotePort}`));

  const shown = options.host.includes(":") ? `[${options.host}]` : options.host;
  return { host: options.host, port, url: `${options.tls ? "wss" : "ws"}://${shown}:${port}`, admission, closed, accept, close };
}
