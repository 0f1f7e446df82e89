// Reused buffers for the large frames (`pages`, `deltas`), one pool per process, shared by the
// batch builders that fill them and the channels that send them. A frame encoded into a fresh
// buffer would also pay the first touch of every page of that buffer, as much again as the
// encoding itself. A buffer goes back to the pool once ws has written its frame.
//
// A `pages` frame is built in place: the batch builder copies each page from guest memory
// straight to PAGES_DATA_OFFSET of a pool buffer, and encoding writes the rest of the frame
// around those bytes — a map whose first fields are `t` and `data` (as bin 32), then the others
// as msgpackr encodes them. The page bytes are copied once on their way to the socket.
// docs/migration.md, "The wire".

import { Packr } from "msgpackr";
import { BATCH_DATA_BYTES, MAX_RUNS, PACK_OPTIONS, type Message, type Pages } from "./protocol.js";

/** A `pages` frame's first bytes: a map of its 7 fields, "t": "pages", then "data" as bin 32 (its length follows). */
const PAGES_PREFIX = Buffer.from([0x87, 0xa1, ...Buffer.from("t"), 0xa5, ...Buffer.from("pages"), 0xa4, ...Buffer.from("data"), 0xc6]);
/** Where the page bytes of a `pages` frame built in place start. */
export const PAGES_DATA_OFFSET = PAGES_PREFIX.length + 4;
/** The rest of a `pages` frame at most: `round`, `seq`, `crc`, and the two run lists (9 bytes a number at most). */
const PAGES_TRAILER_BYTES = 64 + 2 * (5 + 2 * MAX_RUNS * 9);
/** A full batch built in place fits, and so does any frame msgpackr encodes of a full batch. */
const FRAME_BUFFER_BYTES = PAGES_DATA_OFFSET + BATCH_DATA_BYTES + PAGES_TRAILER_BYTES;
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

  /** The frame, and what hands its buffer back once the frame has been written. */
  encode(message: Message): { frame: Uint8Array; release: () => void } {
    if (message.t === "pages" && this.builtInPlace(message.data)) {
      const buffer = Buffer.from(message.data.buffer, 0, FRAME_BUFFER_BYTES);
      return { frame: this.finishPages(buffer, message), release: () => this.give(buffer) };
    }
    const buffer = this.take();
    this.packr.useBuffer(buffer);
    const frame = this.packr.pack(message);
    return { frame, release: () => this.give(buffer) };
  }

  /** Whether `data` sits where a batch builder puts page bytes in one of this pool's buffers. */
  private builtInPlace(data: Uint8Array): boolean {
    return data.byteOffset === PAGES_DATA_OFFSET && this.mine.has(data.buffer);
  }

  /** Writes the prefix before the page bytes and the other fields after them; returns the frame. */
  private finishPages(buffer: Buffer, m: Pages): Buffer {
    PAGES_PREFIX.copy(buffer, 0);
    buffer.writeUInt32BE(m.data.length, PAGES_PREFIX.length);
    const rest = this.trailer.pack({ round: m.round, seq: m.seq, runs: m.runs, zeros: m.zeros, crc: m.crc });
    // `rest` is a map of those 5 fields: its pairs follow the data, after its own map header.
    const pairs = rest.subarray(mapHeaderBytes(rest, 5));
    const end = PAGES_DATA_OFFSET + m.data.length;
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
