// The rule for the one ambiguous moment of a migration: the source sent `commit` and then lost
// the link (or heard nothing back in time), so it cannot tell whether the destination took the
// guest. The destination decides, once: the guest is its own if the commit reached it before
// it noticed the loss or was asked; otherwise it drops the guest for good. The source connects
// again, authenticates and asks; it resumes the guest only on the answer "dropped", stays
// stopped on "taken", and — when the destination cannot be reached or has no record — keeps the
// guest paused rather than guess, so the guest never runs twice.

import { Channel } from "../transport/channel.js";
import { authenticate, openChannel, type ConnectOptions } from "../transport/connect.js";
import type { SessionFate } from "../wire/protocol.js";

/** How long a source keeps trying to ask: the guest stays paused meanwhile, so this is downtime. */
export const DEFAULT_RESOLVE_TIMEOUT_MS = 30_000;
/** Pause between attempts to reach the destination again. */
const RETRY_MS = 200;

/** The destination's word on `session`, or undefined when it could not be had before `deadlineMs` (performance.now()). */
export async function askOutcome(o: ConnectOptions, token: string, session: Uint8Array, deadlineMs: number): Promise<SessionFate | undefined> {
  while (performance.now() < deadlineMs) {
    let channel: Channel | undefined;
    try {
      channel = openChannel({ ...o, timeoutMs: Math.max(1, Math.min(o.timeoutMs, deadlineMs - performance.now())) });
      const challenge = await authenticate(channel, token);
      if (!challenge.capabilities.includes("outcome-query")) return undefined;
      await channel.send({ t: "query", session });
      return (await channel.expect("outcome")).outcome;
    } catch {
      await new Promise((r) => setTimeout(r, RETRY_MS));
    } finally {
      channel?.close();
    }
  }
  return undefined;
}
