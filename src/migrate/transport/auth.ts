// Mutual authentication by a shared token, challenge–response: each side sends a fresh random
// nonce, and each proves it holds the token with an HMAC-SHA256 over both nonces, the agreed
// protocol version and its own role. The token never crosses the wire; a proof cannot be
// replayed (the peer's nonce is fresh) nor reflected (the role is part of what is signed).
// The source proves first: a listening destination gives its own proof only to a source that
// has proved itself, so whoever merely connects gets nothing to guess the token from offline.

import { createHmac, randomBytes, timingSafeEqual } from "node:crypto";
import { readFileSync } from "node:fs";

export const NONCE_BYTES = 32;
export const PROOF_BYTES = 32;
/** Environment variable that carries the token when no token file is given. */
export const TOKEN_ENV = "BLMV_TOKEN";

export type Role = "source" | "destination";

export function newNonce(): Uint8Array {
  return randomBytes(NONCE_BYTES);
}

/** A fresh random token, printable, for a listener started without one. */
export function generateToken(): string {
  return randomBytes(24).toString("base64url");
}

export function proof(token: string, role: Role, version: number, sourceNonce: Uint8Array, destinationNonce: Uint8Array): Uint8Array {
  const v = Buffer.alloc(4);
  v.writeUInt32BE(version);
  return createHmac("sha256", token)
    .update(`blmv-migrate ${role}\0`)
    .update(v)
    .update(sourceNonce)
    .update(destinationNonce)
    .digest();
}

/** Whether `received` is the proof `role` must give; constant time in the proof's content. */
export function verifyProof(received: Uint8Array, token: string, role: Role, version: number, sourceNonce: Uint8Array, destinationNonce: Uint8Array): boolean {
  const expected = proof(token, role, version, sourceNonce, destinationNonce);
  return received.length === expected.length && timingSafeEqual(received, expected);
}

/** The token from a file (surrounding whitespace ignored) or else the environment; undefined when neither. */
export function loadToken(file: string | undefined, env: NodeJS.ProcessEnv = process.env): string | undefined {
  const token = file !== undefined ? readFileSync(file, "utf8").trim() : env[TOKEN_ENV];
  if (token === undefined) return undefined;
  if (token.length === 0) throw new Error(file !== undefined ? `token file ${file} is empty` : `${TOKEN_ENV} is empty`);
  return token;
}
