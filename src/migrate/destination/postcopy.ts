// Post-copy on the destination. After the commit the guest runs on memory that is still
// arriving: an access to a page not yet here faults (DemandMemory), the guest stops at that
// access, the destination asks the source for the page and resumes the guest when it is in.
// Pages keep arriving from the source's background push meanwhile. When the source says it has
// sent everything (`complete`), every page must be here and the digest of what arrived must
// equal the source's memory digest at the pause; the destination confirms with `received`.
//
// If the link fails (or the source falls silent) before that, the guest cannot go on — part of
// its memory exists only on the source — so it stops here for good and the session reports it
// lost. See source/postcopy.ts for the source's side of that rule.

import { performance } from "node:perf_hooks";
import type { Machine } from "../../core/machine.js";
import type { CpuState } from "../../guest/cpu.js";
import type { PageChecksums } from "../../guest/digest.js";
import { Guest } from "../../guest/workload.js";
import { DemandMemory, PageFault } from "./demand-memory.js";
import type { LiveGuest } from "../run/live.js";
import { ProtocolError, type Complete, type Message, type Pages } from "../wire/protocol.js";

export interface PostcopyIo {
  send(m: Message): void;
  /** Checks and stores a batch as any other (sequence, checksum). */
  load(m: Pages): void;
  /** Batches stored so far. */
  batches(): number;
}

export class PostcopyReceiver {
  private faults = 0;
  private readonly latenciesUs: number[] = [];
  private waitingFor = -1;
  private faultAt = 0;
  private arrived?: () => void;
  private live?: LiveGuest;
  /** Settles when every page is here and verified. */
  readonly memoryIn: Promise<void>;
  private settleMemory!: { resolve: () => void; reject: (e: Error) => void };

  constructor(
    private readonly memory: DemandMemory,
    private readonly checksums: PageChecksums,
    private readonly io: PostcopyIo,
  ) {
    this.memoryIn = new Promise((resolve, reject) => (this.settleMemory = { resolve, reject }));
    // Until someone waits for it, a failure is reported through the session, not here.
    this.memoryIn.catch(() => undefined);
  }

  /** Builds the guest from its records; the pages it reads to start (its data page) are fetched as faults. */
  async guest(cpus: CpuState[], machine: Machine): Promise<Guest> {
    for (;;) {
      try {
        return Guest.resume(this.memory, cpus, machine);
      } catch (e) {
        if (!(e instanceof PageFault)) throw e;
        await new Promise<void>((r) => {
          this.arrived = r;
          this.fault(e.page);
        });
      }
    }
  }

  /** From now on the running guest's faults come here. */
  attach(live: LiveGuest): void {
    this.live = live;
    live.onFault = (page) => this.fault(page);
  }

  handle(m: Message): void {
    if (m.t === "pages") return this.pages(m);
    if (m.t === "complete") return this.complete(m);
    throw new ProtocolError("unexpected", `expected pages or complete during post-copy, got ${m.t}`);
  }

  /** The link failed or the session stops: the guest can never run on. */
  lose(reason: Error): void {
    if (this.live?.running) this.live.pause();
    this.settleMemory.reject(reason);
  }

  private fault(page: number): void {
    this.faults++;
    this.waitingFor = page;
    this.faultAt = performance.now();
    this.io.send({ t: "fault", page });
  }

  private pages(m: Pages): void {
    // Only pages still missing may come: one already here may have been written by the guest since.
    for (const runs of [m.runs, m.zeros]) {
      for (let i = 0; i < runs.length; i += 2) {
        for (let p = runs[i]; p < runs[i] + runs[i + 1]; p++) {
          if (!this.memory.isAbsent(p)) throw new ProtocolError("bad-message", `post-copy batch ${m.seq} carries page ${p}, which is already here`);
        }
      }
    }
    this.io.load(m);
    if (this.waitingFor >= 0 && !this.memory.isAbsent(this.waitingFor)) {
      this.latenciesUs.push(Math.round((performance.now() - this.faultAt) * 1000));
      this.waitingFor = -1;
      this.live?.unblock();
      const arrived = this.arrived;
      this.arrived = undefined;
      arrived?.();
    }
  }

  private complete(m: Complete): void {
    if (m.batches !== this.io.batches()) throw new ProtocolError("digest", `the source sent ${m.batches} batches, ${this.io.batches()} arrived`);
    if (this.memory.missingPages > 0) throw new ProtocolError("digest", `the source says it is done, ${this.memory.missingPages} pages are still missing`);
    if (this.checksums.digest() !== Buffer.from(m.memoryDigest).toString("hex")) throw new ProtocolError("digest", "the memory that arrived differs from the source's at the pause");
    const sorted = [...this.latenciesUs].sort((a, b) => a - b);
    const at = (q: number): number => (sorted.length ? sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))] : 0);
    this.io.send({ t: "received", faults: this.faults, blockedUs: sorted.reduce((a, v) => a + v, 0), latencyMedianUs: at(0.5), latencyP99Us: at(0.99) });
    this.settleMemory.resolve();
  }
}
