// The source's way into a destination: open the connection (ws://, or wss:// trusting the
// given certificate) and authenticate both ways. A migration and a later outcome query start
// the same.

import WebSocket from "ws";
import { newNonce, proof, verifyProof } from "./auth.js";
import { Channel, type ChannelOptions } from "./channel.js";
import { MigrationFailure } from "../failure.js";
import { CAPABILITIES, MAX_PAYLOAD, MIN_PROTOCOL_VERSION, PROTOCOL_MAGIC, PROTOCOL_VERSION, type Challenge } from "../wire/protocol.js";

export interface ConnectOptions extends ChannelOptions {
  url: string;
  /** PEM certificate(s) a wss:// destination must present (or chain to); the system's CAs otherwise. */
  ca?: string | Buffer;
}

export function openChannel(o: ConnectOptions): Channel {
  const ws = new WebSocket(o.url, { maxPayload: MAX_PAYLOAD, perMessageDeflate: false, handshakeTimeout: o.timeoutMs, ...(o.ca ? { ca: o.ca } : {}) });
  return new Channel(ws, o);
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
