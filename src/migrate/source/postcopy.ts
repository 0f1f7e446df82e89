// Post-copy on the source. The guest pauses, its CPU and device records go first with the
// bitmap of the pages the destination does not hold yet (all of them for pure post-copy, the
// pages dirtied since they were last sent for hybrid), and after the commit the guest runs on
// the destination. The source then pushes the missing pages in page order, each exactly once,
// while the destination's faults jump the queue: the faulting page and the next `prepage`
// missing pages after it go in their own batch before the next background batch.
//
// The failure rule after the resume: neither side alone holds the guest (the destination has
// its CPU, devices and the pages received, the source the rest of its memory). If the link
// fails before the destination has confirmed every page (`received`), the source reports the
// migration "lost" and never resumes its copy — the destination may have run the guest past
// the pause, and running the old copy would fork it — and the destination stops the guest for
// good. The source's paused copy (memory, CPU, devices as at the pause) is left as it was.

import { performance } from "node:perf_hooks";
import { PAGE_SIZE } from "../../guest/page.js";
import { MigrationFailure } from "../failure.js";
import type { Channel } from "../transport/channel.js";
import type { PostcopyStats, RoundStat } from "../report/metrics.js";
import { handoffDigest, type CapturedState } from "../wire/protocol.js";

export const DEFAULT_PREPAGE_PAGES = 7;
export const MAX_PREPAGE_PAGES = 255;
/** Pages with data in one background batch: few, so that a demand waits little behind one on a slow link. */
const BACKGROUND_PAGES = 16;

/** What post-copy asks of the source's session (source.ts): the steps it drives, nothing more. */
export interface PostcopyHost {
  readonly channel: Channel;
  readonly pageCount: number;
  /** Missing pages sent after a faulting one, in its batch. */
  readonly prepagePages: number;
  /** Whether the batches under way should go out before another page is added. */
  readonly batchFull: boolean;
  readonly batchEmpty: boolean;
  /** Names the protocol step under way (a failure reports it). */
  enter(step: string): void;
  pause(): Uint32Array | undefined;
  capture(): CapturedState;
  /** Sends the state with the bitmap of the pages still to come; returns when it is on the wire. */
  sendHandoff(missing: Uint8Array, state: CapturedState, digest: Buffer): Promise<void>;
  /** Waits for `ready`, commits and waits for `resumed`: the guest now runs on the destination. */
  handOver(digest: Buffer): Promise<void>;
  /** A new round entry in the report, for the post-copy push. */
  openPushRound(): RoundStat;
  addPage(p: number, resent: boolean): boolean;
  flush(stat: RoundStat, remainingBytes: number): Promise<void>;
  /** A fault of the destination's guest arrived (for the live figures). */
  countFault(): void;
  /** The push is over: its time counts as memory transfer time. */
  closePushRound(stat: RoundStat, durationMs: number): void;
  /** Sends `complete` with the memory digest and returns that digest. */
  sendComplete(): Promise<string>;
  /** The destination confirmed every page: the migration's post-copy figures. */
  finish(memoryDigest: string, stats: PostcopyStats): void;
}

export async function postcopy(s: PostcopyHost): Promise<void> {
  const { channel, pageCount } = s;
  s.enter("handoff");
  const dirty = s.pause();
  const state = s.capture();
  const pending = dirty ?? allPages(pageCount);
  const missing = new Uint8Array(pending.buffer, pending.byteOffset, Math.ceil(pageCount / 8)).slice();
  const digest = handoffDigest(missing, state.cpu, state.devices);
  await s.sendHandoff(missing, state, digest);
  await s.handOver(digest);

  s.enter("post-copy");
  const push = new Push(s, pending);
  await push.run();

  s.enter("complete");
  const memoryDigest = await s.sendComplete();
  s.enter("received");
  for (;;) {
    const m = await channel.next("received");
    if (m.t === "fault") continue; // for a page already on its way
    if (m.t !== "received") throw new MigrationFailure("unexpected", `expected received, got ${m.t}`);
    s.finish(memoryDigest, {
      faults: m.faults,
      demandPages: push.demandPages,
      prepagedPages: push.prepagedPages,
      pushedPages: push.pushedPages,
      blockedMs: m.blockedUs / 1000,
      faultLatencyMedianMs: m.latencyMedianUs / 1000,
      faultLatencyP99Ms: m.latencyP99Us / 1000,
    });
    return;
  }
}

/** Every page of the memory, as a dirty-log bitmap. */
function allPages(pageCount: number): Uint32Array {
  const bits = new Uint32Array(Math.ceil(pageCount / 32)).fill(0xffff_ffff);
  if (pageCount % 32) bits[bits.length - 1] = (1 << pageCount % 32) - 1;
  return bits;
}

/** The post-copy stream: background pages in order, demanded ones first. */
class Push {
  demandPages = 0;
  prepagedPages = 0;
  pushedPages = 0;
  private left: number;
  private cursor = 0;
  private readonly stat: RoundStat;
  private readonly prepage: number;

  constructor(
    private readonly s: PostcopyHost,
    /** Pages not sent since the pause; a page's bit clears when it goes. */
    private readonly pending: Uint32Array,
  ) {
    let n = 0;
    for (let p = 0; p < s.pageCount; p++) if (this.isPending(p)) n++;
    this.left = n;
    this.prepage = Math.min(MAX_PREPAGE_PAGES, s.prepagePages);
    this.stat = s.openPushRound();
  }

  async run(): Promise<void> {
    const start = performance.now();
    const { channel, pageCount } = this.s;
    while (this.left > 0) {
      for (let m = channel.poll(); m; m = channel.poll()) {
        if (m.t !== "fault") throw new MigrationFailure("unexpected", `expected fault, got ${m.t}`);
        if (m.page >= pageCount) throw new MigrationFailure("bad-message", `fault on page ${m.page}, outside guest memory (${pageCount} pages)`);
        this.s.countFault();
        if (!this.isPending(m.page)) continue; // on its way already
        this.send(m.page);
        this.demandPages++;
        for (let p = m.page + 1, n = 0; p < pageCount && n < this.prepage && !this.s.batchFull; p++) {
          if (!this.isPending(p)) continue;
          this.send(p);
          this.prepagedPages++;
          n++;
        }
        await this.flush();
      }
      // Elided zero pages cost the link nothing: they do not count against the batch.
      for (let n = 0; n < BACKGROUND_PAGES && this.left > 0 && !this.s.batchFull; ) {
        while (!this.isPending(this.cursor)) this.cursor++;
        if (this.send(this.cursor)) n++;
        this.pushedPages++;
      }
      await this.flush();
      // Without a bandwidth limit sending never waits: let the destination's faults in.
      await new Promise((r) => setImmediate(r));
    }
    await channel.drain();
    this.s.closePushRound(this.stat, performance.now() - start);
  }

  private isPending(p: number): boolean {
    return (this.pending[p >>> 5] & (1 << (p & 31))) !== 0;
  }

  /** Adds page p to the batch; true when it carries bytes. */
  private send(p: number): boolean {
    this.pending[p >>> 5] &= ~(1 << (p & 31));
    this.left--;
    return this.s.addPage(p, false);
  }

  private async flush(): Promise<void> {
    if (!this.s.batchEmpty) await this.s.flush(this.stat, this.left * PAGE_SIZE);
  }
}
