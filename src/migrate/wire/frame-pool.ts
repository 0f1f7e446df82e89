// Reused buffers for the large frames (`pages`, `deltas`), one pool per process, shared by the
// batch builders that fill them and the channels that send them. A frame encoded into a fresh
// buffer would also pay the first touch of every page of that buffer, as much again as the
// encoding itself. A buffer goes back to the pool once ws has written its frame.
//
// A `pages` frame is built in place: the batch builder copies each page from guest memory
// straight to PAGES_DATA_OFFSET of a pool buffer, and encoding writes the rest of the frame
// around those bytes — a map whose first fields are `t` and `data` (as bin 32), then the others
// as msgpackr encodes them. The page bytes are copied once on their way to the socket. Such a
// frame goes as a fragmented WebSocket message: its prefix, its pages PAGES_FRAGMENT_BYTES at a
// time, then the rest, so that the destination can take the pages from the buffers its socket
// reads filled, where they arrived (page-bytes.ts). docs/migration.md, "The link".

import { Packr } from "msgpackr";
import { BATCH_DATA_BYTES, MAX_RUNS, PACK_OPTIONS, PAGES_DATA_OFFSET, PAGES_PREFIX, type Message, type Pages } from "./protocol.js";

/** The rest of a `pages` frame at most: `round`, `seq`, `crc`, and the two run lists (9 bytes a number at most). */
const PAGES_TRAILER_BYTES = 64 + 2 * (5 + 2 * MAX_RUNS * 9);
/** A full batch built in place fits, and so does any frame msgpackr encodes of a full batch. */
const FRAME_BUFFER_BYTES = PAGES_DATA_OFFSET + BATCH_DATA_BYTES + PAGES_TRAILER_BYTES;
/**
 * Page bytes per WebSocket fragment of a `pages` frame: a whole number of pages, small beside the
 * 64 KiB the receiver's socket reads return, so that most fragments lie within one read and ws
 * hands them over as views of it rather than copies (a larger one always straddles two reads).
 */
export const PAGES_FRAGMENT_BYTES = 32 * 1024;
/** The buffer msgpackr's packers go on with once a frame was packed into a pool buffer (it grows its own as needed). */
const MSGPACKR_BUFFER_BYTES = 64 * 1024;
/** Free buffers kept: more than the frames ever in flight at once (channel's high water and ack window). */
const MAX_FREE_BUFFERS = 8;

export class FramePool {
  private readonly free: Buffer[] = [];
  /** The memory of every buffer this pool handed out, to recognise a `pages` frame built in one. */
  private readonly mine = new WeakSet<ArrayBufferLike>();
  /** Encodes whole frames into a pool buffer. */
  private readonly packr = new Packr(PACK_OPTIONS);
  /** Encodes the fields of an in-place `pages` frame that follow its data, into msgpackr's own buffer. */
  private readonly trailer = new Packr(PACK_OPTIONS);

  /** A buffer for one frame; handed back by the `release` of the frame encoded in it. */
  take(): Buffer {
    const buffer = this.free.pop() ?? Buffer.allocUnsafeSlow(FRAME_BUFFER_BYTES);
    this.mine.add(buffer.buffer);
    return buffer;
  }

  /**
   * The frame as the WebSocket fragments to send it in (one, but for a `pages` frame built in
   * place), its size, and what hands its buffer back once it has been written.
   */
  encode(message: Message): { fragments: Uint8Array[]; bytes: number; release: () => void } {
    if (message.t === "pages" && message.data instanceof Uint8Array && this.builtInPlace(message.data)) {
      const buffer = Buffer.from(message.data.buffer, 0, FRAME_BUFFER_BYTES);
      const frame = this.finishPages(buffer, message.data.length, message);
      const fragments = [frame.subarray(0, PAGES_DATA_OFFSET)];
      const dataEnd = PAGES_DATA_OFFSET + message.data.length;
      for (let at = PAGES_DATA_OFFSET; at < dataEnd; at += PAGES_FRAGMENT_BYTES) fragments.push(frame.subarray(at, Math.min(dataEnd, at + PAGES_FRAGMENT_BYTES)));
      fragments.push(frame.subarray(dataEnd));
      return { fragments, bytes: frame.length, release: () => this.give(buffer) };
    }
    const buffer = this.take();
    this.packr.useBuffer(buffer);
    const frame = this.packr.pack(message);
    // msgpackr's packers all write into one buffer of its module: point it at one of its own
    // again, or the next message packed anywhere would be written into this pool buffer.
    this.packr.useBuffer(Buffer.allocUnsafeSlow(MSGPACKR_BUFFER_BYTES));
    return { fragments: [frame], bytes: frame.length, release: () => this.give(buffer) };
  }

  /** Whether `data` sits where a batch builder puts page bytes in one of this pool's buffers. */
  private builtInPlace(data: Uint8Array): boolean {
    return data.byteOffset === PAGES_DATA_OFFSET && this.mine.has(data.buffer);
  }

  /** Writes the prefix before the page bytes and the other fields after them; returns the frame. */
  private finishPages(buffer: Buffer, dataBytes: number, m: Pages): Buffer {
    buffer.set(PAGES_PREFIX, 0);
    buffer.writeUInt32BE(dataBytes, PAGES_PREFIX.length);
    const rest = this.trailer.pack({ round: m.round, seq: m.seq, runs: m.runs, zeros: m.zeros, crc: m.crc });
    // `rest` is a map of those 5 fields: its pairs follow the data, after its own map header.
    const pairs = rest.subarray(mapHeaderBytes(rest, 5));
    const end = PAGES_DATA_OFFSET + dataBytes;
    buffer.set(pairs, end);
    return buffer.subarray(0, end + pairs.length);
  }

  private give(buffer: Buffer): void {
    if (this.free.length < MAX_FREE_BUFFERS) this.free.push(buffer);
  }
}

/** The length of the msgpack map header at the start of `map`, which must announce `fields` fields. */
function mapHeaderBytes(map: Uint8Array, fields: number): number {
  const [length, count] = map[0] === 0x80 + fields ? [1, fields] : map[0] === 0xde ? [3, (map[1] << 8) | map[2]] : [0, -1];
  if (count !== fields) throw new Error(`msgpackr encoded a map of ${fields} fields with header 0x${map[0].toString(16)}`);
  return length;
}

/** The process's pool. */
export const framePool = new FramePool();
