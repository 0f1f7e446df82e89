// A destination server: accepts migration connections, one session at a time (a second
// source meanwhile is told the destination is busy), and optionally stops after the first
// guest it received has run to its end.

import type { AddressInfo } from "node:net";
import { WebSocketServer, type WebSocket } from "ws";
import { Machine } from "../core/machine.js";
import { DestinationSession, type DestinationOptions } from "./destination.js";
import { MAX_PAYLOAD, encode } from "./protocol.js";
import { closeSoon } from "./channel.js";

export interface ListenOptions extends DestinationOptions {
  host: string;
  /** 0 lets the system choose a free port. */
  port: number;
  /** Stop once one migrated guest has finished its run here. */
  once?: boolean;
}

export interface Listener {
  readonly host: string;
  readonly port: number;
  readonly url: string;
  /** Resolves when the server has stopped (after `close()`, or after its one guest with `once`). */
  readonly closed: Promise<void>;
  /** Stops accepting, and ends the session under way (a guest running here stops). */
  close(): Promise<void>;
}

export async function listen(options: ListenOptions): Promise<Listener> {
  // Prepared now, the core is ready when a migration's downtime starts.
  Machine.prepare();
  const server = new WebSocketServer({ host: options.host, port: options.port, maxPayload: MAX_PAYLOAD, perMessageDeflate: false });
  await new Promise<void>((resolve, reject) => {
    server.once("listening", resolve);
    server.once("error", reject);
  });
  const { port } = server.address() as AddressInfo;
  let active: DestinationSession | undefined;
  let resolveClosed!: () => void;
  const closed = new Promise<void>((r) => (resolveClosed = r));
  const close = (): Promise<void> =>
    new Promise<void>((resolve) => {
      active?.stop();
      for (const client of server.clients) closeSoon(client);
      server.close(() => {
        resolveClosed();
        resolve();
      });
    });

  server.on("connection", (ws: WebSocket, request) => {
    const peer = `${request.socket.remoteAddress}:${request.socket.remotePort}`;
    if (active) {
      ws.send(encode({ t: "error", code: "busy", message: "this destination is already receiving or running a guest" }));
      closeSoon(ws);
      options.onEvent?.({ event: "refused", peer, reason: "busy" });
      return;
    }
    const session = (active = new DestinationSession(ws, peer, options));
    void session.done.then((outcome) => {
      active = undefined;
      if (options.once && outcome === "finished") void close();
    });
  });

  const shown = options.host.includes(":") ? `[${options.host}]` : options.host;
  return { host: options.host, port, url: `ws://${shown}:${port}`, closed, close };
}
