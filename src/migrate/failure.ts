// How a migration step fails: one error type for both sides, with the protocol's error code
// (or "connection" when the link itself failed) and whether the peer reported it.

import type { ErrorCode } from "./wire/protocol.js";
import { printable } from "../common/printable.js";

export type FailureCode = ErrorCode | "connection";

/** A step that failed; `byPeer` when the peer reported the error (its text is made safe to print). */
export class MigrationFailure extends Error {
  override name = "MigrationFailure";
  constructor(
    readonly code: FailureCode,
    message: string,
    readonly byPeer = false,
  ) {
    super(byPeer ? printable(message) : message);
  }
}
