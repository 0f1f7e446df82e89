// Guest physical memory with KVM-style dirty logging.
//
// Memory is held in fixed-size slabs allocated on first write, for two reasons: one ArrayBuffer
// cannot exceed 4 GiB in Node 20, and a guest of many GiB that has touched little of its memory
// should cost little. A page that was never written (or was zeroed since) has its "touched" bit
// clear: it reads as zero, is known to be zero without a scan, and is handed out as one shared,
// read-only-by-contract zero page. A SlabPool holds slabs allocated and faulted in ahead of the
// guests that will use them, and takes them back when a guest is released (docs/migration.md,
// "Preallocated guest memory").

import { PageChecksums, memoryDigest } from "./digest.js";
import { PAGE_SIZE, ZERO_PAGE } from "./page.js";

export { PAGE_SIZE, ZERO_PAGE };
const WORDS_PER_PAGE = PAGE_SIZE / 4;
/** Pages per slab as a power of two: 2^16 pages = 256 MiB. */
const SLAB_PAGE_SHIFT = 16;
const SLAB_PAGES = 1 << SLAB_PAGE_SHIFT;
const SLAB_PAGE_MASK = SLAB_PAGES - 1;
/** Pages a pool zeroes in one step while it cleans a returned slab between other work. */
const CLEAN_STEP_PAGES = 1024;
/** The bitmaps (1 bit per page) are allocated up front: 2 × 32 MiB at this size. */
export const MAX_MEMORY_BYTES = 2 ** 40;

/** Words in a bitmap with one bit per page. */
function bitmapWords(pageCount: number): number {
  return Math.ceil(pageCount / 32);
}

/** Number of set bits (pages) in a page bitmap. */
export function countBits(bitmap: Uint32Array): number {
  let n = 0;
  for (let i = 0; i < bitmap.length; i++) {
    let w = bitmap[i];
    w -= (w >>> 1) & 0x55555555;
    w = (w & 0x33333333) + ((w >>> 2) & 0x33333333);
    n += (((w + (w >>> 4)) & 0x0f0f0f0f) * 0x01010101) >>> 24;
  }
  return n;
}

/** The first page at or after `from` whose bit is set in a page bitmap, or -1. */
export function nextSetBit(bitmap: Uint32Array, from: number): number {
  let w = from >>> 5;
  if (w >= bitmap.length) return -1;
  let bits = bitmap[w] & (~0 << (from & 31));
  while (bits === 0) {
    if (++w >= bitmap.length) return -1;
    bits = bitmap[w];
  }
  return 32 * w + (31 - Math.clz32(bits & -bits));
}

/** Sets the bits of pages first..first+count-1 in a page bitmap, a word at a time where it can. */
function setBits(bitmap: Uint32Array, first: number, count: number): void {
  const end = first + count;
  let p = first;
  for (; p < end && (p & 31) !== 0; p++) bitmap[p >>> 5] |= 1 << (p & 31);
  for (; p + 32 <= end; p += 32) bitmap[p >>> 5] = ~0;
  for (; p < end; p++) bitmap[p >>> 5] |= 1 << (p & 31);
}

/**
 * Guest memory allocated ahead of need and kept between guests, as a hypervisor that
 * preallocates guest RAM does: every page of every slab is written once when the pool is made,
 * so the kernel has mapped it before a migration stores into it, and storing a page costs a
 * copy instead of a page fault. The pool holds whole slabs and, for the rest of its size, one
 * smaller slab, which serves a guest's last (partial) slab or a small guest. A slab given back
 * is zeroed (only its pages that were written) in steps between other work before it is handed
 * out again; one taken before that is zeroed at once.
 */
export class SlabPool {
  readonly bytes: number;
  private readonly owned = new Set<Uint32Array>();
  private readonly clean: Uint32Array[] = [];
  /** Returned slabs and the pages of each that may hold a non-zero byte, cleaned from `next` on. */
  private readonly returned: { slab: Uint32Array; touched: Uint32Array; next: number }[] = [];
  private cleaning = false;

  /** Allocates and faults in `bytes` of guest memory, in whole pages. */
  constructor(bytes: number) {
    if (!Number.isSafeInteger(bytes) || bytes < PAGE_SIZE || bytes % PAGE_SIZE !== 0 || bytes > MAX_MEMORY_BYTES) {
      throw new RangeError(`preallocated memory must be a positive multiple of ${PAGE_SIZE} bytes up to ${MAX_MEMORY_BYTES}, got ${bytes}`);
    }
    for (let left = bytes / PAGE_SIZE; left > 0; left -= SLAB_PAGES) {
      const slab = allocateSlab(Math.min(left, SLAB_PAGES), bytes);
      // A store into each page has the kernel map it now (a load would map only the shared zero page).
      for (let w = 0; w < slab.length; w += WORDS_PER_PAGE) slab[w] = 0;
      this.clean.push(slab);
      this.owned.add(slab);
    }
    this.bytes = bytes;
  }

  /** Slabs no guest uses (some may still be being zeroed). */
  get free(): number {
    return this.clean.length + this.returned.length;
  }

  /** Whether `slab` is one of this pool's. */
  owns(slab: Uint32Array): boolean {
    return this.owned.has(slab);
  }

  /** The smallest zeroed slab of at least `pages` pages, or undefined when none is free. */
  take(pages: number): Uint32Array | undefined {
    const words = pages * WORDS_PER_PAGE;
    const fit = (slab: Uint32Array, best: Uint32Array | undefined): boolean => slab.length >= words && (best === undefined || slab.length < best.length);
    let best: Uint32Array | undefined;
    for (const slab of this.clean) if (fit(slab, best)) best = slab;
    if (best !== undefined) {
      this.clean.splice(this.clean.indexOf(best), 1);
      return best;
    }
    let returned: (typeof this.returned)[number] | undefined;
    for (const r of this.returned) if (fit(r.slab, returned?.slab)) returned = r;
    if (returned === undefined) return undefined;
    this.returned.splice(this.returned.indexOf(returned), 1);
    zeroTouchedPages(returned.slab, returned.touched, returned.next);
    return returned.slab;
  }

  /** Takes back one of its slabs, whose pages set in `touched` (bit p: page p of the slab) may be non-zero. */
  give(slab: Uint32Array, touched: Uint32Array): void {
    this.returned.push({ slab, touched, next: 0 });
    if (!this.cleaning) {
      this.cleaning = true;
      setImmediate(() => this.cleanStep());
    }
  }

  /** Zeroes the next few pages of the oldest returned slab; goes on later until none is left. */
  private cleanStep(): void {
    const r = this.returned[0];
    if (r === undefined) {
      this.cleaning = false;
      return;
    }
    const pages = r.slab.length / WORDS_PER_PAGE;
    const end = Math.min(pages, r.next + CLEAN_STEP_PAGES);
    zeroTouchedPages(r.slab, r.touched, r.next, end);
    r.next = end;
    if (end === pages) this.clean.push(this.returned.shift()!.slab);
    setImmediate(() => this.cleanStep());
  }
}

/** A slab of `pages` pages for a pool of `total` bytes, or an error saying the pool does not fit. */
function allocateSlab(pages: number, total: number): Uint32Array {
  try {
    return new Uint32Array(pages * WORDS_PER_PAGE);
  } catch (e) {
    throw new RangeError(`cannot preallocate ${total} bytes of guest memory: ${(e as Error).message}`);
  }
}

/** Zeroes the pages of a slab from `from` up to `end` whose bits are set in `touched`, 32 clean pages at a test. */
function zeroTouchedPages(slab: Uint32Array, touched: Uint32Array, from: number, end = slab.length / WORDS_PER_PAGE): void {
  for (let p = from; p < end; p++) {
    if ((p & 31) === 0 && p + 32 <= end && touched[p >>> 5] === 0) p += 31;
    else if ((touched[p >>> 5] & (1 << (p & 31))) !== 0) slab.fill(0, p * WORDS_PER_PAGE, (p + 1) * WORDS_PER_PAGE);
  }
}

export class GuestMemory {
  readonly bytes: number;
  readonly pageCount: number;
  /** One Uint32Array per slab, or undefined until the slab is first written. */
  private readonly slabs: (Uint32Array | undefined)[];
  /** Pages that may hold a non-zero byte. */
  private readonly touched: Uint32Array;
  private dirty: Uint32Array;
  private logging = false;
  private released = false;

  /** `pool`: where slabs come from (and go back to on release) while it has any; else they are allocated. */
  constructor(
    bytes: number,
    private readonly pool?: SlabPool,
  ) {
    if (!Number.isSafeInteger(bytes) || bytes <= 0 || bytes % PAGE_SIZE !== 0 || bytes > MAX_MEMORY_BYTES) {
      throw new RangeError(`guest memory size must be a positive multiple of ${PAGE_SIZE} up to ${MAX_MEMORY_BYTES} bytes, got ${bytes}`);
    }
    this.bytes = bytes;
    this.pageCount = bytes / PAGE_SIZE;
    this.slabs = new Array<Uint32Array | undefined>(Math.ceil(this.pageCount / SLAB_PAGES)).fill(undefined);
    this.touched = new Uint32Array(bitmapWords(this.pageCount));
    this.dirty = new Uint32Array(bitmapWords(this.pageCount));
  }

  get dirtyLogging(): boolean {
    return this.logging;
  }

  /** A view of page p, valid until the page is next written or zeroed; read-only by contract. */
  page(p: number): Uint8Array {
    this.checkPage(p);
    if (!this.isTouched(p)) return ZERO_PAGE;
    const slab = this.slabs[p >>> SLAB_PAGE_SHIFT]!;
    return new Uint8Array(slab.buffer, (p & SLAB_PAGE_MASK) * PAGE_SIZE, PAGE_SIZE);
  }

  isZero(p: number): boolean {
    this.checkPage(p);
    if (!this.isTouched(p)) return true;
    const slab = this.slabs[p >>> SLAB_PAGE_SHIFT]!;
    const start = (p & SLAB_PAGE_MASK) * WORDS_PER_PAGE;
    for (let i = start; i < start + WORDS_PER_PAGE; i++) if (slab[i] !== 0) return false;
    return true;
  }

  /** Loads a page on the destination. Not a guest store, so not dirty-logged (as in KVM). */
  writePage(p: number, data: Uint8Array): void {
    if (data.length !== PAGE_SIZE) throw new RangeError(`page ${p}: expected ${PAGE_SIZE} bytes, got ${data.length}`);
    this.writePages(p, 1, data, 0);
  }

  /**
   * Loads `count` consecutive pages from `first`, their bytes taken from `data` at `offset`:
   * writePage for a whole run, one copy per slab it spans.
   */
  writePages(first: number, count: number, data: Uint8Array, offset: number): void {
    if (count === 0) return;
    this.checkPage(first);
    this.checkPage(first + count - 1);
    if (!Number.isInteger(offset) || offset < 0 || offset + count * PAGE_SIZE > data.length) {
      throw new RangeError(`pages ${first}+${count}: ${data.length} bytes from offset ${offset} do not hold them`);
    }
    const end = first + count;
    for (let p = first; p < end; ) {
      const n = Math.min(end - p, SLAB_PAGES - (p & SLAB_PAGE_MASK));
      const from = offset + (p - first) * PAGE_SIZE;
      new Uint8Array(this.slabFor(p).buffer, (p & SLAB_PAGE_MASK) * PAGE_SIZE, n * PAGE_SIZE).set(data.subarray(from, from + n * PAGE_SIZE));
      p += n;
    }
    setBits(this.touched, first, count);
  }

  /** Makes page p zero again (and cheap to recognise as such). Not dirty-logged. */
  zeroPage(p: number): void {
    this.checkPage(p);
    if (this.isTouched(p)) this.clearPage(p);
  }

  /** zeroPage for `count` pages from `first`; 32 untouched pages at a time cost one test. */
  zeroPages(first: number, count: number): void {
    if (count === 0) return;
    this.checkPage(first);
    this.checkPage(first + count - 1);
    const end = first + count;
    for (let p = first; p < end; p++) {
      if ((p & 31) === 0 && p + 32 <= end && this.touched[p >>> 5] === 0) p += 31;
      else if (this.isTouched(p)) this.clearPage(p);
    }
  }

  private clearPage(p: number): void {
    const slab = this.slabs[p >>> SLAB_PAGE_SHIFT]!;
    const start = (p & SLAB_PAGE_MASK) * WORDS_PER_PAGE;
    slab.fill(0, start, start + WORDS_PER_PAGE);
    this.touched[p >>> 5] &= ~(1 << (p & 31));
  }

  /** The guest's 32-bit store to a 4-byte aligned physical address. */
  write32(addr: number, value: number): void {
    const p = this.pageOfWord(addr);
    const slab = this.slabs[p >>> SLAB_PAGE_SHIFT] ?? this.slabFor(p);
    slab[(p & SLAB_PAGE_MASK) * WORDS_PER_PAGE + ((addr & 0xfff) >>> 2)] = value;
    const word = p >>> 5;
    const bit = 1 << (p & 31);
    this.touched[word] |= bit;
    if (this.logging) this.dirty[word] |= bit;
  }

  read32(addr: number): number {
    const p = this.pageOfWord(addr);
    const slab = this.slabs[p >>> SLAB_PAGE_SHIFT];
    return slab === undefined ? 0 : slab[(p & SLAB_PAGE_MASK) * WORDS_PER_PAGE + ((addr & 0xfff) >>> 2)];
  }

  /** Starts logging guest stores with an empty bitmap. */
  startDirtyLog(): void {
    this.dirty.fill(0);
    this.logging = true;
  }

  /** Stops logging; pages logged so far stay in the bitmap for one last harvest. */
  stopDirtyLog(): void {
    this.logging = false;
  }

  /** How many pages were written since the last harvest, without clearing the log. */
  dirtyPageCount(): number {
    return countBits(this.dirty);
  }

  /** The pages written since the last harvest (bit p of word p>>>5), clearing the log. */
  harvestDirty(): Uint32Array {
    const harvested = this.dirty;
    this.dirty = new Uint32Array(harvested.length);
    return harvested;
  }

  /** The pages that may hold a non-zero byte now (bit p of word p>>>5), as a copy: every other page is zero. */
  touchedPages(): Uint32Array {
    return this.touched.slice();
  }

  /** Every page's checksum, computed now. */
  pageHashes(): PageChecksums {
    return PageChecksums.of(this);
  }

  /** The digest of the per-page checksums (guest/digest.ts). */
  digest(): string {
    return memoryDigest(this);
  }

  /**
   * Gives the memory's slabs back to its pool (or to the garbage collector); the memory is empty
   * afterwards and refuses to be written. Views handed out by page() must not be used any more.
   */
  release(): void {
    for (let s = 0; s < this.slabs.length; s++) {
      const slab = this.slabs[s];
      if (slab === undefined) continue;
      this.slabs[s] = undefined;
      if (this.pool?.owns(slab)) {
        const touched = new Uint32Array(bitmapWords(slab.length / WORDS_PER_PAGE));
        touched.set(this.touched.subarray((s * SLAB_PAGES) >>> 5, (s * SLAB_PAGES) / 32 + touched.length));
        this.pool.give(slab, touched);
      }
    }
    this.touched.fill(0);
    this.released = true;
  }

  private isTouched(p: number): boolean {
    return (this.touched[p >>> 5] & (1 << (p & 31))) !== 0;
  }

  /**
   * Allocates (or takes from the pool) the slab that holds page p now, ahead of its first write:
   * an allocation this large sets off a garbage collection, which then runs at a time the caller chose.
   */
  reserveSlab(p: number): void {
    this.checkPage(p);
    this.slabFor(p);
  }

  private slabFor(p: number): Uint32Array {
    const s = p >>> SLAB_PAGE_SHIFT;
    let slab = this.slabs[s];
    if (slab === undefined) {
      if (this.released) throw new Error("guest memory was released: it cannot be written any more");
      // An allocated last slab holds only the pages that exist; a pool's is whole.
      const pages = Math.min(SLAB_PAGES, this.pageCount - s * SLAB_PAGES);
      slab = this.slabs[s] = this.pool?.take(pages) ?? new Uint32Array(pages * WORDS_PER_PAGE);
    }
    return slab;
  }

  private checkPage(p: number): void {
    if (!Number.isInteger(p) || p < 0 || p >= this.pageCount) {
      throw new RangeError(`page ${p} is outside guest memory (${this.pageCount} pages)`);
    }
  }

  private pageOfWord(addr: number): number {
    const p = Math.floor(addr / PAGE_SIZE);
    if (!(p >= 0 && p < this.pageCount) || addr % 4 !== 0) {
      throw new RangeError(`guest address ${addr} is not a 4-byte aligned address below ${this.bytes}`);
    }
    return p;
  }
}
