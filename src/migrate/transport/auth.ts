// Mutual authentication by a shared token, challenge–response: each side sends a fresh random
// nonce, and each proves it holds the token with an HMAC-SHA256 over both nonces, the agreed
// protocol version and its own role. The token never crosses the wire; a proof cannot be
// replayed (the peer's nonce is fresh) nor reflected (the role is part of what is signed).
// The source proves first: a listening destination gives its own proof only to a source that
// has proved itself, so whoever merely connects gets nothing to guess the token from offline.

import { createHmac, randomBytes, timingSafeEqual } from "node:crypto";
import { readFileSync, statSync } from "node:fs";

export const NONCE_BYTES = 32;
export const PROOF_BYTES = 32;
/** Environment variable that carries the token when no token file is given. */
export const TOKEN_ENV = "BLMV_TOKEN";

export type Role = "source" | "destination";

export function newNonce(): Uint8Array {
  return randomBytes(NONCE_BYTES);
}

/** The least randomness a token must carry, in bits: out of reach of any number of guesses. */
export const MIN_TOKEN_BITS = 128;

/** A fresh random token (192 bits, base64url), for a listener started without one. */
export function generateToken(): string {
  return randomBytes(24).toString("base64url");
}

/**
 * Why `token` cannot carry MIN_TOKEN_BITS of randomness, or undefined. The estimate is generous
 * to the token: its length times the bits of the smallest alphabet it is written in (hex 4,
 * base64 6, printable ASCII 6.5); a token that repeats its characters a lot is refused too.
 */
export function weakTokenProblem(token: string): string | undefined {
  const alphabetBits = /^[0-9a-fA-F]+$/.test(token) ? 4 : /^[A-Za-z0-9+/=_-]+$/.test(token) ? 6 : Math.log2(95);
  const bits = Math.floor(token.length * alphabetBits);
  const advice = `at least ${MIN_TOKEN_BITS} bits of randomness are needed (e.g. 32 hex digits or 22 base64 characters from a random source; a listener started without a token makes one)`;
  if (bits < MIN_TOKEN_BITS) return `the token is too weak: ${token.length} characters carry at most ${bits} bits; ${advice}`;
  if (new Set(token).size * 3 < token.length) return `the token is too weak: it repeats its characters (${new Set(token).size} distinct in ${token.length}); ${advice}`;
  return undefined;
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

/**
 * The token from a file (surrounding whitespace ignored) or else the environment; undefined when
 * neither. Refused, with the reason: a token file others may read or write (as ssh refuses
 * such a key), an empty or whitespace-only token, a token too weak to withstand guessing.
 */
export function loadToken(file: string | undefined, env: NodeJS.ProcessEnv = process.env): string | undefined {
  if (file !== undefined) {
    const mode = statSync(file).mode;
    if (statSync(file).isFile() && (mode & 0o077) !== 0) {
      throw new Error(`token file ${file} is open to others (mode ${(mode & 0o777).toString(8)}): make it private with chmod 600`);
    }
  }
  const token = (file !== undefined ? readFileSync(file, "utf8") : env[TOKEN_ENV])?.trim();
  if (token === undefined) return undefined;
  const where = file !== undefined ? `token file ${file}` : TOKEN_ENV;
  if (token.length === 0) throw new Error(`${where} is empty`);
  const weak = weakTokenProblem(token);
  if (weak !== undefined) throw new Error(`${where}: ${weak}`);
  return token;
}
