// A destination server: accepts migration connections, plain (ws://) or over TLS (wss://), and
// runs a session for each, several at once within the Admission's limits (a source beyond them
// is told the destination is busy); optionally it stops after the first guest it received has
// run to its end. Browsers (an Origin header), unknown Host names and other paths are refused
// before the upgrade; until a peer authenticates its frames may not exceed the handshake's.
// With `preallocBytes` it allocates and faults in guest memory before it opens its port and
// lends it to the sessions (docs/migration.md, "Preallocated guest memory"). docs/security.md.

import { createServer, type Server } from "node:https";
import { isIP, type AddressInfo } from "node:net";
import { WebSocketServer, type WebSocket } from "ws";
import { LISTENER_REHEARSALS, prepareRebuild } from "./rebuild.js";
import { SlabPool } from "../../guest/memory.js";
import { Admission, DEFAULT_LIMITS, type AdmissionLimits } from "./admission.js";
import { DestinationSession, type DestinationOptions } from "./destination.js";
import { MAX_UNAUTHENTICATED_PAYLOAD } from "../wire/protocol.js";
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
  /** Origins a browser page may connect from (none by default: any Origin header is refused). */
  allowOrigins?: readonly string[];
  /** Host names a source may address this listener by, besides IP addresses, localhost and `host`. */
  allowHosts?: readonly string[];
  /** Guest memory to allocate and fault in now and keep between guests (rounded up to whole slabs). */
  preallocBytes?: number;
}

/** Why an upgrade request is refused (HTTP status and text), or undefined when it may proceed. */
export function refuseRequest(request: { url?: string; headers: Record<string, string | string[] | undefined> }, options: Pick<ListenOptions, "host" | "allowOrigins" | "allowHosts">): { status: number; message: string } | undefined {
  const origin = request.headers.origin;
  if (origin !== undefined && !(options.allowOrigins ?? []).includes(String(origin))) {
    return { status: 403, message: "browser origins are refused (listen --allow-origin ORIGIN admits one)" };
  }
  if ((request.url ?? "/") !== "/") return { status: 404, message: "the migration endpoint is /" };
  const host = hostName(String(request.headers.host ?? ""));
  const known = isIP(host) !== 0 || host === "localhost" || host === options.host.toLowerCase() || (options.allowHosts ?? []).some((h) => h.toLowerCase() === host);
  if (!known) return { status: 403, message: "unknown Host name (listen --allow-host NAME admits one)" };
  return undefined;
}

/** The host name of a Host header, lower case, without port or IPv6 brackets. */
function hostName(header: string): string {
  const h = header.toLowerCase();
  if (h.startsWith("[")) return h.slice(1, h.indexOf("]") < 0 ? undefined : h.indexOf("]"));
  const colon = h.lastIndexOf(":");
  return colon < 0 ? h : h.slice(0, colon);
}

export interface Listener {
  readonly host: string;
  readonly port: number;
  readonly url: string;
  readonly admission: Admission;
  /** Guest memory allocated and faulted in at start-up, kept between guests (0 without). */
  readonly preallocatedBytes: number;
  /** Resolves when the server has stopped (after `close()`, or after its one guest with `once`). */
  readonly closed: Promise<void>;
  /** Takes a connection as if it had arrived on the port (the server's own entry point). */
  accept(ws: WebSocket, peer: string): void;
  /** Stops accepting, and ends the sessions under way (guests running here stop). */
  close(): Promise<void>;
}

export async function listen(options: ListenOptions): Promise<Listener> {
  // Prepared now, the core and the rebuild are ready when a migration's downtime starts.
  prepareRebuild(LISTENER_REHEARSALS);
  // Faulted in now, before any source connects: a migration then stores its pages without page faults.
  const memoryPool = options.preallocBytes ? new SlabPool(options.preallocBytes) : undefined;
  const sessionOptions = { ...options, memoryPool };
  const admission = new Admission({ ...DEFAULT_LIMITS, ...options.limits });
  const busy = (address: string): { status: number; message: string } | undefined => {
    const full = admission.makeRoom(address);
    return full === undefined ? undefined : { status: 503, message: full };
  };
  let https: Server | undefined;
  let server: WebSocketServer;
  const wsOptions = {
    // Raised for each session once it has authenticated (destination.ts).
    maxPayload: MAX_UNAUTHENTICATED_PAYLOAD,
    perMessageDeflate: false,
    verifyClient: (info: { req: import("node:http").IncomingMessage }, done: (ok: boolean, status?: number, message?: string) => void): void => {
      const refusal = refuseRequest(info.req, options) ?? busy(info.req.socket.remoteAddress ?? "");
      if (refusal) options.onEvent?.({ event: "refused", peer: `${info.req.socket.remoteAddress}:${info.req.socket.remotePort}`, reason: refusal.message });
      done(refusal === undefined, refusal?.status, refusal?.message);
    },
  };
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
    const session = new DestinationSession(ws, peer, sessionOptions, admission);
    sessions.add(session);
    void session.done.then((outcome) => {
      sessions.delete(session);
      if (options.once && outcome === "finished") void close();
    });
  };
  server.on("connection", (ws: WebSocket, request) => accept(ws, `${request.socket.remoteAddress}:${request.socket.remotePort}`));

  const shown = options.host.includes(":") ? `[${options.host}]` : options.host;
  return { host: options.host, port, url: `${options.tls ? "wss" : "ws"}://${shown}:${port}`, admission, preallocatedBytes: memoryPool?.bytes ?? 0, closed, accept, close };
}
