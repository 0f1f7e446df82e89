// The source's way into a destination: open the connection (ws://, or wss:// trusting the
// given certificate or the pinned fingerprint) and authenticate both ways. A migration and a
// later outcome query start the same. docs/security.md.

import type { IncomingMessage } from "node:http";
import { isIP } from "node:net";
import type { TLSSocket } from "node:tls";
import WebSocket from "ws";
import { newNonce, proof, verifyProof } from "./auth.js";
import { Channel, type ChannelOptions } from "./channel.js";
import { MigrationFailure } from "../failure.js";
import { CAPABILITIES, MAX_PAYLOAD, MIN_PROTOCOL_VERSION, PROTOCOL_MAGIC, PROTOCOL_VERSION, type Challenge } from "../wire/protocol.js";

export interface ConnectOptions extends ChannelOptions {
  url: string;
  /** PEM certificate(s) a wss:// destination must present (or chain to); the system's CAs otherwise. */
  ca?: string | Buffer;
  /**
   * wss:// only: the SHA-256 fingerprint of the certificate the destination must present
   * ("sha256:" then 64 hex digits, colons allowed). Checked before the source sends anything;
   * without `ca` it replaces the certificate authorities' judgement.
   */
  pin?: string;
}

const PIN = /^sha256:((?:[0-9a-f]{2}:?){31}[0-9a-f]{2})$/i;

/** The pin's fingerprint as Node spells it (upper-case hex pairs joined by colons), or undefined when malformed. */
export function parsePin(pin: string): string | undefined {
  const hex = PIN.exec(pin)?.[1].replaceAll(":", "");
  return hex?.length === 64 ? hex.toUpperCase().match(/../g)!.join(":") : undefined;
}

/**
 * The client's frame masking for `url`. RFC 6455 masks a client's frames with a random key so
 * that bytes a page script chose cannot pass for requests to an intermediary that does not
 * understand the upgrade. Over TLS no intermediary sees the bytes, and on a loopback address
 * there is none: there the key is all zeros, which leaves the payload as it is, so ws sends
 * each frame straight from the sender's buffer instead of copying it into a fresh masked one
 * (a 1 MiB allocation per frame, page faults included). Anywhere else the key stays random.
 */
export function clientMasking(url: string): { generateMask?: (mask: Buffer) => void } {
  const { protocol, hostname } = new URL(url);
  const host = hostname.replace(/^\[|\]$/g, "").toLowerCase();
  const loopback = host === "localhost" || host === "::1" || (isIP(host) === 4 && host.startsWith("127."));
  return protocol === "wss:" || loopback ? { generateMask: (mask) => mask.fill(0) } : {};
}

export function openChannel(o: ConnectOptions): Channel {
  const fingerprint = o.pin === undefined ? undefined : parsePin(o.pin);
  if (o.pin !== undefined && fingerprint === undefined) throw new MigrationFailure("auth", `bad certificate pin ${JSON.stringify(o.pin)}: expected sha256: and 64 hex digits`);
  const trust = { ...(o.ca ? { ca: o.ca } : {}), ...(fingerprint && !o.ca ? { rejectUnauthorized: false } : {}) };
  const ws = new WebSocket(o.url, { maxPayload: MAX_PAYLOAD, perMessageDeflate: false, handshakeTimeout: o.timeoutMs, ...clientMasking(o.url), ...trust });
  const channel = new Channel(ws, o);
  if (fingerprint !== undefined) {
    // The upgrade's response comes before `open`: nothing of ours has crossed the link yet.
    ws.once("upgrade", (response: IncomingMessage) => {
      const presented = (response.socket as TLSSocket).getPeerCertificate?.()?.fingerprint256;
      if (presented !== fingerprint) {
        channel.abort(new MigrationFailure("auth", presented === undefined ? "the destination presented no certificate to check the pin against" : `the destination's certificate sha256:${presented.replaceAll(":", "").toLowerCase()} is not the pinned one`));
      }
    });
  }
  return channel;
}

/** hello → challenge → auth → accepted; `step` names each wait, for the report of a failure. */
export async function authenticate(channel: Channel, token: string, step: (name: string) => void = () => {}): Promise<Challenge> {
  step("connect");
  await channel.opened();
  step("hello");
  const nonce = newNonce();
  await channel.send({ t: "hello", magic: PROTOCOL_MAGIC, version: PROTOCOL_VERSION, minVersion: MIN_PROTOCOL_VERSION, capabilities: [...CAPABILITIES], nonce });
  step("challenge");
  const challenge = await channel.expect("challenge");
  if (challenge.version < MIN_PROTOCOL_VERSION || challenge.version > PROTOCOL_VERSION) {
    throw new MigrationFailure("version", `the destination chose protocol version ${challenge.version}; this source speaks ${MIN_PROTOCOL_VERSION}..${PROTOCOL_VERSION}`);
  }
  step("auth");
  await channel.send({ t: "auth", proof: proof(token, "source", challenge.version, nonce, challenge.nonce) });
  step("accepted");
  const accepted = await channel.expect("accepted");
  if (!verifyProof(accepted.proof, token, "destination", challenge.version, nonce, challenge.nonce)) {
    throw new MigrationFailure("auth", "the destination does not know the token");
  }
  return challenge;
}
