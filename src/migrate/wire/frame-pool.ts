// Reused buffers for the large frames (`pages`, `deltas`). Encoded into a fresh buffer, which
// msgpackr moves to every few frames, each frame also pays the first touch of every page of
// that buffer, as much again as the encoding itself. A buffer goes back to the pool once ws
// has written its frame, so the pool holds as many as there are frames on their way.

import { Packr } from "msgpackr";
import { BATCH_DATA_BYTES, PACK_OPTIONS, type Message } from "./protocol.js";

/** A full batch and its headers fit; a larger frame gets a buffer of its own from msgpackr. */
const FRAME_BUFFER_BYTES = BATCH_DATA_BYTES + 256 * 1024;

export class FramePool {
  private readonly free: Buffer[] = [];
  private readonly packr = new Packr(PACK_OPTIONS);

  /** The frame, and what hands its buffer back once the frame has been written. */
  encode(message: Message): { frame: Uint8Array; release: () => void } {
    const buffer = this.free.pop() ?? Buffer.allocUnsafeSlow(FRAME_BUFFER_BYTES);
    this.packr.useBuffer(buffer);
    const frame = this.packr.pack(message);
    return { frame, release: () => this.free.push(buffer) };
  }
}
