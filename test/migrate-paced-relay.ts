// A slow link behind the socket, for migration tests: a WebSocket relay that takes at once
// everything the source sends — as the buffers in front of a slow network path do — and passes
// it on to the destination at a fixed rate, one frame after the other. What it holds at any
// moment is what the source has sent and the destination has not yet received; the most it
// ever held is kept. It can also remove a capability from the source's hello, so that both
// sides see a peer that lacks it.

import { unpack } from "msgpackr";
import WebSocket, { type WebSocketServer } from "ws";
import { MAX_PAYLOAD, encode, type Message } from "../src/migrate/wire/protocol.js";
import { closeRelay, relayServer, tieEnds } from "./migrate-harness.js";

export class PacedRelay {
  maxHeldBytes = 0;
  private heldBytes = 0;

  private constructor(
    private readonly server: WebSocketServer,
    readonly url: string,
  ) {}

  /** Relays to `target` at `bytesPerSec` (Infinity: no pacing), without `strip` among the source's capabilities. */
  static async start(target: string, bytesPerSec: number, strip?: string): Promise<PacedRelay> {
    const { server, url } = await relayServer();
    const relay = new PacedRelay(server, url);
    server.on("connection", (down) => relay.relay(down, target, bytesPerSec, strip));
    return relay;
  }

  private relay(down: WebSocket, target: string, bytesPerSec: number, strip: string | undefined): void {
    const up = new WebSocket(target, { maxPayload: MAX_PAYLOAD, perMessageDeflate: false });
    const queue: Buffer[] = [];
    let busy = false;
    const pump = (): void => {
      if (busy || queue.length === 0 || up.readyState !== WebSocket.OPEN) return;
      busy = true;
      const frame = queue[0];
      setTimeout(() => {
        queue.shift();
        this.heldBytes -= frame.length;
        if (up.readyState === WebSocket.OPEN) up.send(frame);
        busy = false;
        pump();
      }, (frame.length / bytesPerSec) * 1000);
    };
    down.on("message", (data: Buffer) => {
      const m = unpack(data) as Record<string, unknown>;
      if (strip && m.t === "hello") data = Buffer.from(encode({ ...m, capabilities: (m.capabilities as string[]).filter((c) => c !== strip) } as unknown as Message));
      queue.push(data);
      this.heldBytes += data.length;
      this.maxHeldBytes = Math.max(this.maxHeldBytes, this.heldBytes);
      pump();
    });
    up.on("open", pump);
    up.on("message", (d: Buffer) => down.readyState === WebSocket.OPEN && down.send(d));
    tieEnds(down, up);
  }

  close(): Promise<void> {
    return closeRelay(this.server);
  }
}
