// A 256-bit vector register of the local APIC (IRR, ISR, TMR): one bit per vector. It keeps its
// highest set bit up to date as bits change, so the priority logic that asks for it on every
// acknowledge and every interrupt check reads a field instead of scanning eight words. Only
// clearing the highest bit rescans, and that happens once per acknowledge or EOI.

import { FieldIO } from "../common/fields";

const WORDS: i32 = 8;

export class VectorRegister {
  private words: StaticArray<u32> = new StaticArray<u32>(WORDS);
  /** The highest set bit, or -1 when none is set. */
  private top: i32 = -1;

  clear(): void {
    for (let i = 0; i < WORDS; i++) unchecked((this.words[i] = 0));
    this.top = -1;
  }

  /** The highest set bit, or -1. */
  @inline
  highest(): i32 {
    return this.top;
  }

  /** Bits 32·i .. 32·i + 31, as software reads them. */
  @inline
  word(i: i32): u32 {
    return unchecked(this.words[i & (WORDS - 1)]);
  }

  @inline
  test(bit: u32): bool {
    return ((unchecked(this.words[<i32>((bit >>> 5) & 7)]) >>> (bit & 31)) & 1) != 0;
  }

  set(bit: u32): void {
    const b = bit & 0xff;
    unchecked((this.words[<i32>(b >>> 5)] |= <u32>1 << (b & 31)));
    if (<i32>b > this.top) this.top = <i32>b;
  }

  unset(bit: u32): void {
    const b = bit & 0xff;
    unchecked((this.words[<i32>(b >>> 5)] &= ~(<u32>1 << (b & 31))));
    if (<i32>b == this.top) this.top = this.scanFrom(<i32>(b >>> 5));
  }

  describe(io: FieldIO, name: string): void {
    io.begin(name);
    for (let i = 0; i < WORDS; i++) io.field(i.toString(), unchecked(this.words[i]));
    io.end();
  }

  /** The highest set bit in words `last` down to 0, or -1. */
  private scanFrom(last: i32): i32 {
    for (let i = last; i >= 0; i--) {
      const w = unchecked(this.words[i]);
      if (w != 0) return (i << 5) + 31 - <i32>clz(w);
    }
    return -1;
  }
}
