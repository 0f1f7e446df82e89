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
import { PAGE_SIZE } from "../guest/page.js";
import { MigrationFailure } from "./channel.js";
import type { RoundStat } from "./metrics.js";
import { handoffDigest } from "./protocol.js";
import type { SourceSession } from "./source.js";

export const DEFAULT_PREPAGE_PAGES = 7;
export const MAX_PREPAGE_PAGES = 255;
/** Pages with data in one background batch: few, so that a demand waits little behind one on a slow link. */
const BACKGROUND_PAGES = 16;

export async function postcopy(s: SourceSession, dirty: Uint32Array | undefined): Promise<void> {
  const channel = s.channel!;
  const pageCount = s.live.guest.memory.pageCount;
  s.step = "handoff";
  s.pause(dirty);
  const { cpu, devices } = s.capture();
  const pending = dirty ?? allPages(pageCount);
  const missing = new Uint8Array(pending.buffer, pending.byteOffset, Math.ceil(pageCount / 8)).slice();
  const digest = handoffDigest(missing, cpu, devices);
  s.report.bytes.state = await channel.send({ t: "handoff", batches: s.seq, missing, cpu, devices, digest });
  s.progress("post-copy", s.report.rounds, 0);
  await s.commit(digest);
  s.handedOver = true;

  s.step = "post-copy";
  const push = new Push(s, pending);
  await push.run();

  s.step = "complete";
  const memoryDigest = s.checksums.digest();
  await channel.send({ t: "complete", batches: s.seq, memoryDigest: Buffer.from(memoryDigest, "hex") });
  s.step = "received";
  for (;;) {
    const m = await channel.next("received");
    if (m.t === "fault") continue; // for a page already on its way
    if (m.t !== "received") throw new MigrationFailure("unexpected", `expected received, got ${m.t}`);
    s.report.memoryDigest = memoryDigest;
    s.report.postcopy = {
      faults: m.faults,
      demandPages: push.demandPages,
      prepagedPages: push.prepagedPages,
      pushedPages: push.pushedPages,
      blockedMs: m.blockedUs / 1000,
      faultLatencyMedianMs: m.latencyMedianUs / 1000,
      faultLatencyP99Ms: m.latencyP99Us / 1000,
    };
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
    private readonly s: SourceSession,
    /** Pages not sent since the pause; a page's bit clears when it goes. */
    private readonly pending: Uint32Array,
  ) {
    let n = 0;
    for (let p = 0; p < s.live.guest.memory.pageCount; p++) if (this.isPending(p)) n++;
    this.left = n;
    this.prepage = Math.min(MAX_PREPAGE_PAGES, s.options.prepagePages ?? DEFAULT_PREPAGE_PAGES);
    this.stat = { round: s.report.rounds, stopAndCopy: false, postcopy: true, pages: 0, zeroPages: 0, bytes: 0, durationMs: 0, dirtiedPages: 0, expectedDowntimeMs: 0, throttlePercent: 0 };
    s.report.roundStats.push(this.stat);
  }

  async run(): Promise<void> {
    const start = performance.now();
    const pageCount = this.s.live.guest.memory.pageCount;
    while (this.left > 0) {
      for (let m = this.s.channel!.poll(); m; m = this.s.channel!.poll()) {
        if (m.t !== "fault") throw new MigrationFailure("unexpected", `expected fault, got ${m.t}`);
        if (m.page >= pageCount) throw new MigrationFailure("bad-message", `fault on page ${m.page}, outside guest memory (${pageCount} pages)`);
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
    await this.s.channel!.drain();
    this.stat.durationMs = performance.now() - start;
    this.s.memoryMs += this.stat.durationMs;
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
    if (!this.s.batchEmpty) await this.s.flush(this.stat, this.stat.round, this.left * PAGE_SIZE);
  }
}
