// The page: the unit of guest memory, of dirty logging and of transfer.

export const PAGE_SIZE = 4096;

/** The page every never-written page reads as. Callers must not write into it. */
export const ZERO_PAGE: Uint8Array = new Uint8Array(PAGE_SIZE);

/** Whatever holds guest memory as numbered pages (a digest needs no more). */
export interface PagedMemory {
  readonly pageCount: number;
  page(p: number): Uint8Array;
}
