// The pre-copy engine on the source. Round 0 sends all memory while the guest runs; each
// further round sends the pages the guest dirtied meanwhile, until the expected downtime
// (remaining dirty bytes ÷ measured bandwidth) fits the limit or the round cap is reached.
// A guest that dirties memory faster than the link drains it is throttled step by step
// (auto-converge). Then the guest pauses, the last dirty pages go with the CPU and device
// records, and the destination checks everything against the source's digest.
//
// The commit rule: until the source sends `commit`, any failure leaves it running the guest
// exactly as before; once it has sent `commit` it never runs the guest again, whatever
// happens to the link. The destination resumes only on receiving `commit`.

import { performance } from "node:perf_hooks";
import WebSocket from "ws";
import { DeviceStateError, Machine } from "../core/machine.js";
import { PageChecksums, ZERO_PAGE_CRC, pageChecksum } from "../guest/digest.js";
import { countBits, nextSetBit } from "../guest/memory.js";
import { PAGE_SIZE, ZERO_PAGE } from "../guest/page.js";
import { newNonce, proof, verifyProof } from "./auth.js";
import { BatchBuilder } from "./batch.js";
import { Channel, MigrationFailure } from "./channel.js";
import type { LiveGuest } from "./live.js";
import { newReport, summarize, type MigrationReport, type RoundStat } from "./metrics.js";
import {
  CAPABILITIES,
  MAX_PAYLOAD,
  MAX_ROUNDS,
  MIN_PROTOCOL_VERSION,
  PROTOCOL_MAGIC,
  PROTOCOL_VERSION,
  countPages,
  encodeRecord,
  machineSpecOf,
  stateDigest,
} from "./protocol.js";

export const DEFAULT_DOWNTIME_LIMIT_MS = 300;
export const DEFAULT_MAX_ROUNDS = 30;
export const DEFAULT_TIMEOUT_MS = 10_000;
/** Auto-converge (as QEMU's): the first throttle, each further step, the ceiling. */
export const THROTTLE_INITIAL = 0.2;
export const THROTTLE_STEP = 0.1;
export const THROTTLE_MAX = 0.99;

export interface SourceOptions {
  /** ws://host:port of a listening destination. */
  url: string;
  token: string;
  /** Name of the workload, for the destination's log and the report. */
  workload: string;
  downtimeLimitMs?: number;
  maxRounds?: number;
  /** Emulated link speed, bytes per second (token bucket); none when undefined. */
  bandwidth?: number;
  autoConverge?: boolean;
  /** How long to wait for each answer of the destination. */
  timeoutMs?: number;
  signal?: AbortSignal;
  /** Wait for the destination to run the guest to its end and report its digest. */
  awaitFinish?: boolean;
  onProgress?: (p: Progress) => void;
}

export interface Progress {
  phase: "setup" | "pre-copy" | "stop-and-copy" | "commit" | "finishing";
  round: number;
  sentBytes: number;
  /** Pages left in this round, plus the dirty pages waiting for the next, in bytes. */
  remainingBytes: number;
  bytesPerSec: number;
  expectedDowntimeMs: number;
  throttlePercent: number;
}

/** Migrates the running guest to the destination at `options.url`. Never throws for a failed migration: see the report's status. */
export async function migrate(live: LiveGuest, options: SourceOptions): Promise<MigrationReport> {
  return new SourceSession(live, options).run();
}

class SourceSession {
  private readonly limitMs: number;
  private readonly maxRounds: number;
  private readonly timeoutMs: number;
  private readonly report: MigrationReport;
  private channel?: Channel;
  private step = "connect";
  private committed = false;
  private pausedAt = 0;
  private seq = 0;
  private zeroPages = false;
  private readonly checksums: PageChecksums;
  private readonly batch = new BatchBuilder();
  /** Time spent in finished memory rounds, and when the current one started. */
  private memoryMs = 0;
  private roundStart?: number;
  private expectedDowntimeMs = Infinity;

  constructor(
    private readonly live: LiveGuest,
    private readonly options: SourceOptions,
  ) {
    this.limitMs = options.downtimeLimitMs ?? DEFAULT_DOWNTIME_LIMIT_MS;
    this.maxRounds = Math.min(options.maxRounds ?? DEFAULT_MAX_ROUNDS, MAX_ROUNDS);
    this.timeoutMs = options.timeoutMs ?? DEFAULT_TIMEOUT_MS;
    const memory = live.guest.memory;
    this.checksums = new PageChecksums(memory.pageCount);
    this.report = newReport(options.workload, memory.bytes, this.limitMs, options.bandwidth);
  }

  async run(): Promise<MigrationReport> {
    const start = performance.now();
    try {
      if (this.live.guest.machine.policy === "none") {
        throw new MigrationFailure("config", 'the hypervisor runs with policy "none": it kept no shadow of the write-only device state, so the devices cannot be captured');
      }
      await this.setup();
      this.report.setupMs = performance.now() - start;
      const dirty = await this.precopy();
      await this.stopAndCopy(dirty);
      this.report.status = "completed";
      this.report.totalMs = performance.now() - start;
      if (this.options.awaitFinish) await this.awaitFinish();
    } catch (e) {
      if (this.report.status !== "completed") this.report.totalMs = performance.now() - start;
      this.fail(e);
    } finally {
      this.report.bytes.total = this.channel?.bytesSent ?? 0;
      this.live.guest.memory.stopDirtyLog();
      if (this.report.status === "completed" && !this.report.error) this.channel?.close();
      summarize(this.report, this.memoryMs, this.maxRounds);
    }
    return this.report;
  }

  // ---- steps ----------------------------------------------------------------------------------

  private async setup(): Promise<void> {
    const { url, token } = this.options;
    // Capture and the exit report then run warm inside the downtime.
    Machine.prepare();
    this.progress("setup", 0, 0);
    const ws = new WebSocket(url, { maxPayload: MAX_PAYLOAD, perMessageDeflate: false, handshakeTimeout: this.timeoutMs });
    const channel = (this.channel = new Channel(ws, { timeoutMs: this.timeoutMs, bandwidth: this.options.bandwidth, idle: () => this.idle() }));
    // A cancel counts only before the commit: after it, the guest is the destination's.
    const signal = this.options.signal;
    const cancel = (): void => {
      if (!this.committed) channel.cancel();
    };
    if (signal?.aborted) cancel();
    signal?.addEventListener("abort", cancel, { once: true });
    ws.once("close", () => signal?.removeEventListener("abort", cancel));
    await channel.opened();

    this.step = "hello";
    const nonce = newNonce();
    await channel.send({ t: "hello", magic: PROTOCOL_MAGIC, version: PROTOCOL_VERSION, minVersion: MIN_PROTOCOL_VERSION, capabilities: [...CAPABILITIES], nonce });
    this.step = "challenge";
    const challenge = await channel.expect("challenge");
    if (challenge.version < MIN_PROTOCOL_VERSION || challenge.version > PROTOCOL_VERSION) {
      throw new MigrationFailure("version", `the destination chose protocol version ${challenge.version}; this source speaks ${MIN_PROTOCOL_VERSION}..${PROTOCOL_VERSION}`);
    }
    this.zeroPages = challenge.capabilities.includes("zero-pages");
    this.step = "auth";
    await channel.send({ t: "auth", proof: proof(token, "source", challenge.version, nonce, challenge.nonce) });
    this.step = "accepted";
    const accepted = await channel.expect("accepted");
    if (!verifyProof(accepted.proof, token, "destination", challenge.version, nonce, challenge.nonce)) {
      throw new MigrationFailure("auth", "the destination does not know the token");
    }

    this.step = "config";
    const { guest } = this.live;
    await channel.send({
      t: "config",
      memoryBytes: guest.memory.bytes,
      pageSize: PAGE_SIZE,
      machine: machineSpecOf(guest.machine),
      workload: this.options.workload,
      endNs: this.live.endNs,
    });
    this.step = "prepared";
    await channel.expect("prepared");
  }

  /** Pre-copy rounds; returns the dirty pages left when it is time to stop. */
  private async precopy(): Promise<Uint32Array> {
    const memory = this.live.guest.memory;
    memory.startDirtyLog();
    let pages: Uint32Array | undefined;
    for (let round = 0; ; round++) {
      this.step = `pre-copy round ${round}`;
      const stat = await this.sendRound(round, pages, false);
      const dirty = memory.harvestDirty();
      stat.dirtiedPages = countBits(dirty);
      const remaining = stat.dirtiedPages * PAGE_SIZE;
      this.expectedDowntimeMs = (remaining / this.bandwidth()) * 1000;
      stat.expectedDowntimeMs = this.expectedDowntimeMs;
      this.report.rounds = round + 1;
      this.progress("pre-copy", round, remaining);
      if (this.expectedDowntimeMs <= this.limitMs || round + 1 >= this.maxRounds) return dirty;
      // Auto-converge: the guest dirtied more than half of what the round could carry.
      if (this.options.autoConverge !== false && remaining > (stat.pages * PAGE_SIZE) / 2) this.raiseThrottle();
      pages = dirty;
    }
  }

  private async stopAndCopy(dirty: Uint32Array): Promise<void> {
    const { guest } = this.live;
    const channel = this.channel!;
    this.step = "stop-and-copy";
    this.pausedAt = performance.now();
    const cpu = this.live.pause();
    // Pages written since the last harvest: none unless the guest ran after it.
    const late = guest.memory.harvestDirty();
    for (let i = 0; i < dirty.length; i++) dirty[i] |= late[i];
    this.report.expectedDowntimeMs = this.expectedDowntimeMs;
    await this.sendRound(this.report.rounds, dirty, true);

    this.step = "state";
    const exits = guest.machine.exits();
    this.report.exits = { total: exits.total, byReason: exits.byReason };
    let devices;
    try {
      devices = encodeRecord(guest.machine.capture());
    } catch (e) {
      if (e instanceof DeviceStateError) throw new MigrationFailure("state", e.message);
      throw e;
    }
    const cpuRecord = encodeRecord(cpu.toRecord());
    const memoryDigest = this.checksums.digest();
    const digest = stateDigest(memoryDigest, cpuRecord, devices);
    this.report.bytes.state = await channel.send({ t: "state", batches: this.seq, cpu: cpuRecord, devices, digest });
    this.progress("stop-and-copy", this.report.rounds, 0);

    this.step = "ready";
    const ready = await channel.expect("ready");
    if (!digest.equals(ready.digest)) throw new MigrationFailure("digest", "the destination's digest differs from the source's");
    this.report.memoryDigest = memoryDigest;

    // From here on the guest belongs to the destination (see the commit rule above).
    this.step = "commit";
    this.committed = true;
    await channel.send({ t: "commit" });
    this.progress("commit", this.report.rounds, 0);
    this.step = "resumed";
    await channel.expect("resumed");
    this.report.downtimeMs = performance.now() - this.pausedAt;
  }

  private async awaitFinish(): Promise<void> {
    const channel = this.channel!;
    this.step = "finished";
    this.progress("finishing", this.report.rounds, 0);
    // The destination runs the rest of the guest's run in real time.
    const restMs = Math.max(0, this.live.endNs - this.live.guest.now()) / 1e6;
    const f = await channel.expect("finished", restMs + this.timeoutMs);
    this.report.destination = { virtualNs: f.virtualNs, digest: f.digest, ticks: f.ticks, exits: f.exits };
  }

  /** Sends `pages` (every page when undefined) as batches; returns the round's statistics. */
  private async sendRound(round: number, pages: Uint32Array | undefined, stopAndCopy: boolean): Promise<RoundStat> {
    const stat: RoundStat = { round, stopAndCopy, pages: 0, zeroPages: 0, bytes: 0, durationMs: 0, dirtiedPages: 0, expectedDowntimeMs: 0, throttlePercent: Math.round(this.live.throttle * 100) };
    this.report.roundStats.push(stat);
    const start = (this.roundStart = performance.now());
    const total = pages ? countBits(pages) : this.live.guest.memory.pageCount;
    let done = 0;
    // Pages in order: every page, or the set bits of `pages`. Only a full batch waits.
    const next = pages ? (q: number) => nextSetBit(pages, q + 1) : (q: number) => (q + 1 < total ? q + 1 : -1);
    for (let p = next(-1); p >= 0; p = next(p)) {
      if (this.batch.full) await this.flush(stat, round, (total - done) * PAGE_SIZE);
      this.addPage(p);
      done++;
    }
    if (!this.batch.empty) await this.flush(stat, round, 0);
    stat.durationMs = performance.now() - start;
    this.memoryMs += stat.durationMs;
    this.roundStart = undefined;
    return stat;
  }

  /** Copies page p into the batch and records the CRC the destination will compute for it. */
  private addPage(p: number): void {
    const memory = this.live.guest.memory;
    const page = memory.page(p);
    const crc = pageChecksum(page);
    // Only a page with the zero page's CRC can be zero: every other page skips the scan.
    if (this.zeroPages && crc === ZERO_PAGE_CRC && memory.isZero(p)) {
      this.batch.add(p, ZERO_PAGE, ZERO_PAGE_CRC, true);
      this.checksums.crcs[p] = ZERO_PAGE_CRC;
      return;
    }
    this.batch.add(p, page, crc, false);
    this.checksums.crcs[p] = crc;
  }

  private async flush(stat: RoundStat, round: number, remainingBytes: number): Promise<void> {
    const message = this.batch.take(round, this.seq++);
    const pages = message.data.length / PAGE_SIZE;
    const size = await this.channel!.send(message);
    stat.pages += pages;
    stat.zeroPages += countPages(message.zeros);
    stat.bytes += size;
    this.report.bytes.memory += size;
    this.live.runSlice();
    this.progress(stat.stopAndCopy ? "stop-and-copy" : "pre-copy", round, remainingBytes);
  }

  // ---- helpers --------------------------------------------------------------------------------

  /** Measured bandwidth: memory bytes on the wire per second spent sending them (this round's so far included). */
  private bandwidth(): number {
    const ms = this.memoryMs + (this.roundStart === undefined ? 0 : performance.now() - this.roundStart);
    return ms > 0 ? (this.report.bytes.memory * 1000) / ms : Infinity;
  }

  private raiseThrottle(): void {
    const t = this.live.throttle;
    this.live.throttle = t === 0 ? THROTTLE_INITIAL : Math.min(THROTTLE_MAX, Math.round((t + THROTTLE_STEP) * 100) / 100);
    if (this.live.throttle !== t) this.report.throttleSteps++;
  }

  /** Lets the guest run while the channel waits; true when it is running. */
  private idle(): boolean {
    this.live.runSlice();
    return this.live.running;
  }

  private fail(e: unknown): void {
    const f = e instanceof MigrationFailure ? e : new MigrationFailure("internal", e instanceof Error ? e.message : String(e));
    this.report.error = { code: f.code, message: f.message, byPeer: f.byPeer };
    this.report.failedAt = this.step;
    if (this.report.status === "completed") {
      // Only the wait for the destination's end-of-run report failed: the migration itself stands.
      this.channel?.close();
      return;
    }
    if (this.committed) {
      this.report.status = "unconfirmed";
    } else {
      this.report.status = f.code === "cancelled" ? "cancelled" : "failed";
      // The guest goes on where it stopped, at full speed, as if nothing had happened.
      this.live.throttle = 0;
      if (!this.live.running) this.live.resume();
    }
    this.channel?.close(f);
  }

  private progress(phase: Progress["phase"], round: number, remainingBytes: number): void {
    this.options.onProgress?.({
      phase,
      round,
      sentBytes: this.report.bytes.memory,
      remainingBytes,
      bytesPerSec: this.bandwidth(),
      expectedDowntimeMs: this.expectedDowntimeMs,
      throttlePercent: Math.round(this.live.throttle * 100),
    });
  }
}
