// Guest memory on a post-copy destination: pages that have not arrived yet are absent, and a
// guest access to one of them faults instead of reading or writing stale bytes. A page becomes
// present when its content is loaded (writePage(s), zeroPage(s)) and never absent again.

import { GuestMemory } from "../../guest/memory.js";
import { PAGE_SIZE } from "../../guest/page.js";

/**
 * A guest access to an absent page. The guest stops at the access that faulted, before it
 * changes anything (as an instruction that faults restarts), and runs on once the page is in.
 */
export class PageFault extends Error {
  override name = "PageFault";
  constructor(readonly page: number) {
    super(`page ${page} has not arrived yet`);
  }
}

export class DemandMemory extends GuestMemory {
  /** Bit p set: page p has not arrived; undefined while every page is present. */
  private absent?: Uint32Array;
  private absentCount = 0;

  /** Pages still to arrive. */
  get missingPages(): number {
    return this.absentCount;
  }

  /** Marks the pages of a bitmap (bit p of byte p>>3) absent, as a post-copy handoff names them. */
  markAbsent(bitmap: Uint8Array): void {
    const absent = new Uint32Array(Math.ceil(this.pageCount / 32));
    let count = 0;
    for (let p = 0; p < this.pageCount; p++) {
      if (bitmap[p >>> 3] & (1 << (p & 7))) {
        absent[p >>> 5] |= 1 << (p & 31);
        count++;
      }
    }
    this.absent = count > 0 ? absent : undefined;
    this.absentCount = count;
  }

  isAbsent(p: number): boolean {
    return this.absent !== undefined && (this.absent[p >>> 5] & (1 << (p & 31))) !== 0;
  }

  override writePages(first: number, count: number, data: Uint8Array, offset: number): void {
    super.writePages(first, count, data, offset);
    for (let p = first; p < first + count; p++) this.arrived(p);
  }

  override zeroPage(p: number): void {
    super.zeroPage(p);
    this.arrived(p);
  }

  override zeroPages(first: number, count: number): void {
    super.zeroPages(first, count);
    for (let p = first; p < first + count; p++) this.arrived(p);
  }

  override write32(addr: number, value: number): void {
    if (this.absent !== undefined) this.check(Math.floor(addr / PAGE_SIZE));
    super.write32(addr, value);
  }

  override read32(addr: number): number {
    if (this.absent !== undefined) this.check(Math.floor(addr / PAGE_SIZE));
    return super.read32(addr);
  }

  override page(p: number): Uint8Array {
    if (this.absent !== undefined) this.check(p);
    return super.page(p);
  }

  override isZero(p: number): boolean {
    if (this.absent !== undefined) this.check(p);
    return super.isZero(p);
  }

  private check(p: number): void {
    if (this.isAbsent(p)) throw new PageFault(p);
  }

  private arrived(p: number): void {
    if (!this.isAbsent(p)) return;
    this.absent![p >>> 5] &= ~(1 << (p & 31));
    if (--this.absentCount === 0) this.absent = undefined;
  }
}
