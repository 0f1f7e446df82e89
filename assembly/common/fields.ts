// One description of a record serves four jobs: naming its fields (the schema the host uses to
// build plain objects), writing its values, reading them back, and checking each value read
// against what the register it describes can legally hold. A record class lists its fields
// once, in a `describe(io)` method, and calls io.field() for each; that method is the single
// source of truth for the record's layout.

export const enum FieldMode {
  /** Collect dotted field names; values pass through unchanged. */
  Schema = 0,
  /** Append each value to the buffer; values pass through unchanged. */
  Write = 1,
  /** Replace each value with the next one from the buffer, checking its range. */
  Read = 2,
}

const CAPACITY: i32 = 8192;

export class FieldIO {
  mode: FieldMode = FieldMode.Write;
  values: StaticArray<u32> = new StaticArray<u32>(CAPACITY);
  /** Fields written or read so far. */
  count: i32 = 0;
  /** Fields available to read (Read mode). */
  limit: i32 = 0;
  /** Comma-separated dotted names (Schema mode). */
  names: string = "";
  /** In Read mode: index of the first field that was missing or out of range, else -1. */
  error: i32 = -1;
  private prefix: string = "";
  private prefixes: Array<string> = new Array<string>();

  start(mode: FieldMode, limit: i32 = 0): void {
    this.mode = mode;
    this.count = 0;
    this.limit = limit;
    this.names = "";
    this.error = -1;
    this.prefix = "";
    this.prefixes.length = 0;
  }

  /** Opens a named group: later field names are prefixed with "name.". */
  begin(name: string): void {
    if (this.mode != FieldMode.Schema) return;
    this.prefixes.push(this.prefix);
    this.prefix = this.prefix + name + ".";
  }

  /** Opens group number `index` (an array element). */
  beginIndex(index: i32): void {
    if (this.mode != FieldMode.Schema) return;
    this.begin(index.toString());
  }

  end(): void {
    if (this.mode != FieldMode.Schema) return;
    this.prefix = this.prefixes.pop();
  }

  /** A field whose legal values are 0..max. Returns the value the record should hold. */
  field(name: string, value: u32, max: u32 = u32.MAX_VALUE): u32 {
    const i = this.count++;
    if (this.mode == FieldMode.Write) {
      if (i < CAPACITY) unchecked((this.values[i] = value));
      return value;
    }
    if (this.mode == FieldMode.Schema) {
      this.names = this.names.length == 0 ? this.prefix + name : this.names + "," + this.prefix + name;
      return value;
    }
    if (i >= this.limit || i >= CAPACITY) {
      if (this.error < 0) this.error = i;
      return 0;
    }
    const v = unchecked(this.values[i]);
    if (v > max) {
      if (this.error < 0) this.error = i;
      return 0;
    }
    return v;
  }

  /** A field whose legal values are those with no bit outside `mask`. */
  bits(name: string, value: u32, mask: u32): u32 {
    const v = this.field(name, value);
    if (this.mode == FieldMode.Read && (v & ~mask) != 0) {
      if (this.error < 0) this.error = this.count - 1;
      return 0;
    }
    return v;
  }

  flag(name: string, value: bool): bool {
    return this.field(name, value ? 1 : 0, 1) != 0;
  }

  /** A 64-bit value, as two fields `name.lo` and `name.hi`. */
  wide(name: string, value: u64): u64 {
    this.begin(name);
    const lo = this.field("lo", <u32>value);
    const hi = this.field("hi", <u32>(value >>> 32));
    this.end();
    return (<u64>hi << 32) | <u64>lo;
  }

  /** A time in ns (0 .. 2^53), as a wide field. */
  time(name: string, value: i64): i64 {
    const v = this.wide(name, <u64>value);
    if (this.mode == FieldMode.Read && v > (<u64>1 << 53)) {
      if (this.error < 0) this.error = this.count - 1;
      return 0;
    }
    return <i64>v;
  }
}
