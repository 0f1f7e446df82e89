// Skips the "ram" section's records (migration/ram.c's format): the block list of its start
// and the page records of every part, down to the end-of-section flag. Pages are not kept:
// the model's memory is not QEMU's. docs/qemu-state.md.

import type { Cursor } from "./cursor.js";

/** Flags in the low bits of each record's 64-bit address word. */
const enum RamFlag {
  Zero = 0x02,
  MemSize = 0x04,
  Page = 0x08,
  EndOfSection = 0x10,
  Continue = 0x20,
  Xbzrle = 0x40,
  Hook = 0x80,
  CompressedPage = 0x100,
  MultifdFlush = 0x200,
}
const FLAG_BITS = 0xfff;
const XBZRLE_ENCODING = 0x01;

export interface RamSkip {
  blocks: { name: string; bytes: bigint }[];
  pages: number;
  zeroPages: number;
}

export interface RamOptions {
  /** The x-ignore-shared capability: each block in the list carries its guest address. */
  ignoreShared: boolean;
  pageSize: number;
}

/** Skips one START, PART or END payload of the "ram" section, adding what it saw to `seen`. */
export function skipRamRecords(c: Cursor, options: RamOptions, seen: RamSkip): void {
  for (;;) {
    const at = c.offset;
    const word = c.u64("a ram record's address and flags");
    const flags = Number(word & BigInt(FLAG_BITS));
    const kind = flags & ~RamFlag.Continue;
    if (kind === RamFlag.EndOfSection) return;
    if (kind === RamFlag.MemSize) {
      readBlockList(c, word & ~BigInt(FLAG_BITS), options, seen);
      continue;
    }
    if (kind === RamFlag.MultifdFlush) continue;
    if (kind === RamFlag.Hook) c.fail("ram: an RDMA hook record; RDMA streams are not read", at);
    if (kind !== RamFlag.Zero && kind !== RamFlag.Page && kind !== RamFlag.Xbzrle && kind !== RamFlag.CompressedPage) {
      c.fail(`ram: a record with flags 0x${flags.toString(16)}, which no ram record has`, at);
    }
    if (!(flags & RamFlag.Continue)) c.name("ram: the block name of a page");
    if (kind === RamFlag.Zero) {
      c.u8("ram: a zero page's fill byte");
      seen.zeroPages++;
    } else if (kind === RamFlag.Page) {
      c.skip(options.pageSize, "ram: a page");
      seen.pages++;
    } else if (kind === RamFlag.Xbzrle) {
      const encodingAt = c.offset;
      if (c.u8("ram: the XBZRLE encoding") !== XBZRLE_ENCODING) c.fail("ram: an XBZRLE page with an unknown encoding", encodingAt);
      c.skip(c.u16("ram: the XBZRLE length"), "ram: an XBZRLE page");
      seen.pages++;
    } else {
      c.skip(c.u32("ram: the compressed length"), "ram: a compressed page");
      seen.pages++;
    }
  }
}

function readBlockList(c: Cursor, total: bigint, options: RamOptions, seen: RamSkip): void {
  let left = total;
  while (left > 0n) {
    const at = c.offset;
    const name = c.name("ram: a block's name");
    const bytes = c.u64(`ram: block ${name}'s length`);
    if (bytes > left) c.fail(`ram: block ${name} is longer than the ${total} bytes the list announced`, at);
    if (options.ignoreShared) c.u64(`ram: block ${name}'s address`);
    seen.blocks.push({ name, bytes });
    left -= bytes;
  }
}
