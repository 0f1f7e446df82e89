// A bounds-checked big-endian reader over a QEMU migration stream: every read names what it
// reads, and running past the end or finding a wrong value is a QemuStreamError at its byte
// offset. docs/qemu-state.md.

/** A stream that is truncated, corrupt or cannot be delimited: `offset` is where, in bytes. */
export class QemuStreamError extends Error {
  override name = "QemuStreamError";
  constructor(
    readonly offset: number,
    what: string,
  ) {
    super(`byte ${offset} (0x${offset.toString(16)}): ${what}`);
  }
}

export class Cursor {
  offset = 0;
  private readonly view: DataView;

  constructor(readonly bytes: Uint8Array) {
    this.view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  }

  get length(): number {
    return this.bytes.length;
  }

  get atEnd(): boolean {
    return this.offset >= this.bytes.length;
  }

  /** The next byte without consuming it, or -1 at the end. */
  peek(ahead = 0): number {
    const at = this.offset + ahead;
    return at < this.bytes.length ? this.bytes[at]! : -1;
  }

  fail(what: string, at = this.offset): never {
    throw new QemuStreamError(at, what);
  }

  /** Claims `n` bytes for `what`, or fails naming where the stream ends. */
  private take(n: number, what: string): number {
    const at = this.offset;
    if (n > this.bytes.length - at) this.fail(`truncated: ${what} needs ${n} byte${n === 1 ? "" : "s"}, the stream ends at byte ${this.bytes.length}`);
    this.offset = at + n;
    return at;
  }

  u8(what: string): number {
    return this.view.getUint8(this.take(1, what));
  }

  u16(what: string): number {
    return this.view.getUint16(this.take(2, what));
  }

  u32(what: string): number {
    return this.view.getUint32(this.take(4, what));
  }

  i32(what: string): number {
    return this.view.getInt32(this.take(4, what));
  }

  u64(what: string): bigint {
    return this.view.getBigUint64(this.take(8, what));
  }

  i64(what: string): bigint {
    return this.view.getBigInt64(this.take(8, what));
  }

  bytesOf(n: number, what: string): Uint8Array {
    const at = this.take(n, what);
    return this.bytes.subarray(at, at + n);
  }

  skip(n: number, what: string): void {
    this.take(n, what);
  }

  /** A QEMU idstr: one length byte, then that many printable ASCII bytes. */
  name(what: string): string {
    const at = this.offset;
    const length = this.u8(`${what}'s length`);
    const text = this.bytesOf(length, what);
    for (const c of text) if (c < 0x20 || c > 0x7e) this.fail(`${what} is not printable text`, at);
    return String.fromCharCode(...text);
  }

  /** Consumes `expected` or fails naming `what`. */
  expect(expected: number, what: string): void {
    const at = this.offset;
    const got = this.u8(what);
    if (got !== expected) this.fail(`expected ${what} (0x${expected.toString(16)}), found 0x${got.toString(16)}`, at);
  }
}
