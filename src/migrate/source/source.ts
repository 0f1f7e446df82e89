// The pre-copy engine on the source. Round 0 sends all memory (with zero pages elided: every
// page the guest ever wrote) while the guest runs; each further round sends the pages the guest
// dirtied meanwhile, until the expected downtime (remaining dirty bytes ÷ measured bandwidth)
// fits the limit or the round cap is reached.
// With a destination that acknowledges batches, a round ends once all of it has arrived, and
// the bandwidth is what arrived per second (transport/ack-window.ts).
// A guest that dirties memory faster than the link drains it is throttled step by step
// (auto-converge). Then the guest pauses, the last dirty pages go with the CPU and device
// records, and the destination checks everything against the source's digest.
//
// The commit rule: until the source sends `commit`, any failure leaves it running the guest
// exactly as before; once it has sent `commit` it never runs the guest again, whatever
// happens to the link, unless the destination, asked afterwards, says it dropped the guest
// (see source/resolve.ts). The destination resumes only on receiving `commit`.
//
// The other techniques share these steps: stop-and-copy skips the pre-copy rounds; post-copy
// (source/postcopy.ts) hands the guest over before its memory, hybrid after a few rounds.
// While it runs, a user may change the downtime limit and the bandwidth, switch pre-copy to
// post-copy or cancel, through the control interface (source/control.ts, docs/monitor.md).

import { performance } from "node:perf_hooks";
import { AckWindow } from "../transport/ack-window.js";
import { DeviceStateError, Machine, type DeviceRecord } from "../../core/machine.js";
import { PageChecksums, ZERO_PAGE_CRC, pageChecksum } from "../../guest/digest.js";
import { countBits, nextSetBit } from "../../guest/memory.js";
import { cpusToRecord } from "../../guest/cpu.js";
import { PAGE_SIZE, ZERO_PAGE } from "../../guest/page.js";
import { BatchBuilder } from "./batch.js";
import { needsThrottle, raisedThrottle } from "./throttle.js";
import { DEFAULT_PREPAGE_PAGES, postcopy, type PostcopyHost } from "./postcopy.js";
import { expectedDowntimeMs, type StopConditions } from "./stop-conditions.js";
import { negotiate, roundCap, stopConditions, type TechniqueOptions } from "./techniques.js";
import type { XbzrleEncoder } from "../wire/xbzrle.js";
import { Channel } from "../transport/channel.js";
import { MigrationFailure } from "../failure.js";
import { authenticate, openChannel, type ConnectOptions } from "../transport/connect.js";
import { DEFAULT_RESOLVE_TIMEOUT_MS, askOutcome } from "./resolve.js";
import { ControlError, type ControlTarget, type MigrationControl } from "./control.js";
import type { Progress } from "./progress.js";
import type { LiveGuest } from "../run/live.js";
import { newReport, summarize, type MigrationReport, type PostcopyStats, type RoundStat } from "../report/metrics.js";
import { countPages } from "../wire/decode.js";
import { MAX_ROUNDS, encodeRecord, machineSpecOf, stateDigest, type CapturedState, type Config } from "../wire/protocol.js";
import { saveSnapshot } from "../run/snapshot.js";
import { prepareRebuild } from "../destination/rebuild.js";

export const DEFAULT_DOWNTIME_LIMIT_MS = 300;
export const DEFAULT_MAX_ROUNDS = 30;
export const DEFAULT_TIMEOUT_MS = 10_000;
/** Rounds of the pause's work the first migration of a process rehearses (destination/rebuild.ts). */
const SOURCE_REHEARSALS = 2;
/** The pause's work on both sides as this process's rehearsal timed it; undefined before its first migration. */
let rehearsedPauseMs: number | undefined;

export interface SourceOptions extends TechniqueOptions {
  /** ws://host:port or wss://host:port of a listening destination. */
  url: string;
  /** For wss://: the PEM certificate(s) the destination must present or chain to. */
  ca?: string | Buffer;
  /** wss://: the SHA-256 fingerprint the destination's certificate must have ("sha256:" and hex). */
  pin?: string;
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
  /** After a commit whose confirmation was lost: how long to keep trying to ask the destination. */
  resolveTimeoutMs?: number;
  signal?: AbortSignal;
  /** Wait for the destination to run the guest to its end and report its digest. */
  awaitFinish?: boolean;
  /**
   * Where to save the paused guest when the outcome stays unknown (the commit unconfirmed):
   * the source cannot run it, and must not lose it. Default: a new file in the working directory.
   */
  snapshotPath?: string;
  onProgress?: (p: Progress) => void;
  /** Changes a user asks for while the migration runs (source/control.ts). */
  control?: MigrationControl;
}

/** Migrates the running guest to the destination at `options.url`. Never throws for a failed migration: see the report's status. */
export async function migrate(live: LiveGuest, options: SourceOptions): Promise<MigrationReport> {
  return new SourceSession(live, options).run();
}

/** One migration. Pre-copy and stop-and-copy are its own steps; post-copy drives it as a PostcopyHost. */
class SourceSession implements PostcopyHost, ControlTarget {
  private limitMs: number;
  private maxRounds: number;
  private bandwidthLimit?: number;
  private postcopyRequested = false;
  private cancelRequested = false;
  private postcopyOffered = false;
  private faults = 0;
  readonly timeoutMs: number;
  readonly report: MigrationReport;
  private openChannel?: Channel;
  private step = "connect";
  private committed = false;
  /** The device record sent, to rebuild from if the guest comes back (with the phase measured at the commit). */
  private pausedDevices?: DeviceRecord;
  /** The guest was resumed on the destination and memory still flows (post-copy). */
  private handedOver = false;
  private pausedAt = 0;
  private seq = 0;
  private zeroPages = false;
  private xbzrle?: XbzrleEncoder;
  /** The destination's challenge nonce names the session in a later outcome query. */
  private session?: Uint8Array;
  private canQuery = false;
  private readonly checksums: PageChecksums;
  private readonly batch = new BatchBuilder();
  /** Time spent in finished memory rounds, and when the current one started. */
  private memoryMs = 0;
  private roundStart?: number;
  private expectedDowntimeMs = Infinity;
  /** The config → prepared exchange. */
  private configRttMs = 0;
  private readonly stop: StopConditions;
  /** What a snapshot of the paused guest needs, as the destination got it; the timer phase measured at the commit. */
  private config?: Config;
  private captured?: CapturedState;
  private timerPhases: number[] = [];
  private exitsRecorded = false;

  constructor(
    private readonly live: LiveGuest,
    private readonly options: SourceOptions,
  ) {
    this.limitMs = options.downtimeLimitMs ?? DEFAULT_DOWNTIME_LIMIT_MS;
    this.bandwidthLimit = options.bandwidth;
    this.maxRounds = Math.min(roundCap(options, options.maxRounds ?? DEFAULT_MAX_ROUNDS), MAX_ROUNDS);
    this.timeoutMs = options.timeoutMs ?? DEFAULT_TIMEOUT_MS;
    const memory = live.guest.memory;
    this.checksums = new PageChecksums(memory.pageCount);
    this.report = newReport(options.workload, memory.bytes, this.limitMs, options.bandwidth);
    this.report.cpus = live.guest.cpus.length;
    this.report.technique = options.technique ?? "precopy";
    this.stop = stopConditions(options, this.limitMs, this.maxRounds, memory.bytes);
  }

  async run(): Promise<MigrationReport> {
    const start = performance.now();
    this.options.control?.attach(this);
    try {
      if (this.live.guest.machine.policy === "none") {
        throw new MigrationFailure("config", 'the hypervisor runs with policy "none": it kept no shadow of the write-only device state, so the devices cannot be captured');
      }
      await this.setup();
      this.report.setupMs = performance.now() - start;
      if (this.report.technique === "precopy" || this.report.technique === "hybrid") await this.precopy();
      // Pre-copy turns hybrid when the user switches to post-copy while it runs.
      if (this.report.technique === "postcopy" || this.report.technique === "hybrid") await postcopy(this);
      else await this.stopAndCopy();
      this.report.status = "completed";
      this.report.totalMs = performance.now() - start;
      if (this.options.awaitFinish) await this.awaitFinish();
    } catch (e) {
      if (this.report.status !== "completed") this.report.totalMs = performance.now() - start;
      await this.fail(e);
    } finally {
      // Downtime counts from the pause whatever the outcome (a failure: until the guest ran again here).
      if (this.pausedAt > 0 && this.report.downtimeMs === 0) this.report.downtimeMs = performance.now() - this.pausedAt;
      this.report.bytes.total = this.openChannel?.bytesSent ?? 0;
      this.report.acks = this.openChannel?.window?.stats();
      this.live.guest.memory.stopDirtyLog();
      if (this.report.status === "completed" && !this.report.error) this.openChannel?.close();
      if (this.xbzrle) this.report.xbzrle = this.xbzrle.stats;
      summarize(this.report, this.memoryMs, this.maxRounds);
      this.options.control?.detach(this.report.status);
    }
    return this.report;
  }

  // ---- steps ----------------------------------------------------------------------------------

  private async setup(): Promise<void> {
    // The first migration of a process rehearses the pause's work, whose code then runs warm in
    // every downtime, and times it; later ones only get the core ready for capture and the exit report.
    if (rehearsedPauseMs === undefined) rehearsedPauseMs = prepareRebuild(SOURCE_REHEARSALS);
    else Machine.prepare();
    this.progress("setup", 0, 0);
    const channel = (this.openChannel = openChannel(this.connectOptions()));
    if (this.cancelRequested) channel.cancel();
    // A cancel stops the migration only before the commit: after it, the guest is the
    // destination's. Once the migration has completed it only stops the wait for the end of the run there.
    const signal = this.options.signal;
    const cancel = (): void => {
      if (!this.committed || this.report.status === "completed") channel.cancel();
    };
    if (signal?.aborted) cancel();
    signal?.addEventListener("abort", cancel, { once: true });
    channel.onClose(() => signal?.removeEventListener("abort", cancel));
    const challenge = await authenticate(channel, this.options.token, (step) => (this.step = step));
    ({ zeroPages: this.zeroPages, xbzrle: this.xbzrle } = negotiate(this.options, challenge.capabilities));
    this.canQuery = challenge.capabilities.includes("outcome-query");
    this.postcopyOffered = challenge.capabilities.includes("postcopy");
    if (challenge.capabilities.includes("acks")) channel.window = new AckWindow();
    this.session = challenge.nonce;

    this.step = "config";
    const { guest } = this.live;
    this.config = {
      t: "config",
      memoryBytes: guest.memory.bytes,
      pageSize: PAGE_SIZE,
      machine: machineSpecOf(guest.machine),
      workload: this.options.workload,
      endNs: this.live.endNs,
    };
    const configSent = performance.now();
    await channel.send(this.config);
    this.step = "prepared";
    await channel.expect("prepared");
    this.configRttMs = performance.now() - configSent;
  }

  /** Pre-copy rounds, until a stop rule holds; the pages they leave dirty stay in the dirty log. */
  private async precopy(): Promise<void> {
    const memory = this.live.guest.memory;
    memory.startDirtyLog();
    let pages: Uint32Array | undefined;
    for (let round = 0; ; round++) {
      this.step = `pre-copy round ${round}`;
      const stat = await this.sendRound(round, pages, false);
      stat.dirtiedPages = memory.dirtyPageCount();
      const remaining = stat.dirtiedPages * PAGE_SIZE;
      this.expectedDowntimeMs = expectedDowntimeMs(remaining, this.bandwidth(), this.fixedDowntimeMs());
      stat.expectedDowntimeMs = this.expectedDowntimeMs;
      this.report.rounds = round + 1;
      this.progress("pre-copy", round, remaining);
      const reason = this.stop.check({ rounds: round + 1, expectedDowntimeMs: this.expectedDowntimeMs, sentBytes: this.report.bytes.memory, dirtyPages: stat.dirtiedPages });
      if (reason) {
        this.report.stopReason = reason;
        return;
      }
      if (this.postcopyRequested) {
        // The user switched to post-copy: what the rounds so far left goes after the handoff.
        this.report.stopReason = "postcopy-requested";
        this.report.technique = "hybrid";
        this.maxRounds = round + 1;
        return;
      }
      // Auto-converge: the guest dirtied more than half of what the round could carry.
      if (this.options.autoConverge !== false && needsThrottle(stat.dirtiedPages, stat.pages)) this.raiseThrottle();
      pages = memory.harvestDirty();
    }
  }

  // ---- runtime control (ControlTarget) ----------------------------------------------------------

  setDowntimeLimit(ms: number): void {
    if (this.pausedAt > 0) throw new ControlError("not-now", "the guest is already paused for the last copy: the downtime limit no longer applies; nothing was changed");
    this.limitMs = ms;
    this.report.downtimeLimitMs = ms;
    // Hybrid ends pre-copy on its round count, never on the expected downtime.
    if (this.report.technique !== "hybrid") this.stop.limits.downtimeLimitMs = ms;
  }

  setBandwidth(bytesPerSec: number): void {
    this.bandwidthLimit = bytesPerSec;
    this.report.bandwidthLimitBytesPerSec = bytesPerSec;
    this.openChannel?.setBandwidth(bytesPerSec);
  }

  startPostcopy(): void {
    const technique = this.report.technique;
    if (technique !== "precopy") throw new ControlError("not-now", `this migration runs ${technique}, not pre-copy: there is nothing to switch`);
    if (this.pausedAt > 0) throw new ControlError("not-now", "pre-copy is over: the guest is already paused for the last copy");
    // The destination names its features in the challenge, which also names the session.
    if (this.session === undefined) {
      throw new ControlError("not-now", "the destination has not said yet whether it supports post-copy: try again once pre-copy has started");
    }
    if (!this.postcopyOffered) throw new ControlError("not-now", "the destination does not support post-copy");
    this.postcopyRequested = true;
  }

  cancel(): void {
    if (this.committed) throw new ControlError("not-now", "the commit has been sent: the guest now belongs to the destination and the migration cannot be cancelled");
    this.cancelRequested = true;
    this.openChannel?.cancel();
  }

  countFault(): void {
    this.faults++;
  }

  // ---- the steps every technique shares (PostcopyHost) -------------------------------------------

  /** The connection, once setup has opened it. */
  get channel(): Channel {
    if (!this.openChannel) throw new Error("no connection before setup");
    return this.openChannel;
  }

  get pageCount(): number {
    return this.live.guest.memory.pageCount;
  }

  get prepagePages(): number {
    return this.options.prepagePages ?? DEFAULT_PREPAGE_PAGES;
  }

  enter(step: string): void {
    this.step = step;
  }

  /**
   * Pauses the guest; returns the pages written since the pre-copy rounds' last harvest, or
   * undefined when no round ran (all memory goes).
   */
  pause(): Uint32Array | undefined {
    this.pausedAt = performance.now();
    this.live.pause();
    this.report.expectedDowntimeMs = this.expectedDowntimeMs;
    const memory = this.live.guest.memory;
    return memory.dirtyLogging ? memory.harvestDirty() : undefined;
  }

  /** The paused guest's CPU and device records. */
  capture(): CapturedState {
    const { guest } = this.live;
    try {
      const devices = (this.pausedDevices = guest.machine.capture());
      return (this.captured = { cpu: encodeRecord(cpusToRecord(guest.pause())), devices: encodeRecord(devices) });
    } catch (e) {
      if (e instanceof DeviceStateError) throw new MigrationFailure("state", e.message);
      throw e;
    }
  }

  async sendHandoff(missing: Uint8Array, { cpu, devices }: CapturedState, digest: Buffer): Promise<void> {
    this.report.bytes.state = await this.channel.send({ t: "handoff", batches: this.seq, missing, cpu, devices, digest });
    this.progress("post-copy", this.report.rounds, 0);
  }

  async handOver(digest: Buffer): Promise<void> {
    await this.commit(digest);
    this.handedOver = true;
  }

  openPushRound(): RoundStat {
    const stat: RoundStat = { round: this.report.rounds, stopAndCopy: false, postcopy: true, pages: 0, zeroPages: 0, bytes: 0, durationMs: 0, dirtiedPages: 0, expectedDowntimeMs: 0, throttlePercent: 0 };
    this.report.roundStats.push(stat);
    return stat;
  }

  closePushRound(stat: RoundStat, durationMs: number): void {
    stat.durationMs = durationMs;
    this.memoryMs += durationMs;
  }

  async sendComplete(): Promise<string> {
    const memoryDigest = this.checksums.digest();
    await this.channel.send({ t: "complete", batches: this.seq, memoryDigest: Buffer.from(memoryDigest, "hex") });
    return memoryDigest;
  }

  finish(memoryDigest: string, stats: PostcopyStats): void {
    this.report.memoryDigest = memoryDigest;
    this.report.postcopy = stats;
  }

  /** Waits for `ready` with the expected digest, then commits: from here on the guest belongs to the destination. */
  private async commit(digest: Buffer): Promise<void> {
    const channel = this.channel;
    this.step = "ready";
    const ready = await channel.expect("ready");
    if (!digest.equals(ready.digest)) throw new MigrationFailure("digest", "the destination's digest differs from the source's");
    this.step = "commit";
    this.committed = true;
    // From here the source never runs the guest again, so it may let the clock run to measure
    // the APIC timers' phases, which the destination applies before it resumes the guest.
    const timerPhases = (this.timerPhases = this.live.guest.machine.probeTimerPhases());
    await channel.send({ t: "commit", timerPhases });
    this.progress("commit", this.report.rounds, 0);
    this.step = "resumed";
    await channel.expect("resumed");
    this.report.downtimeMs = performance.now() - this.pausedAt;
    this.recordExits();
  }

  /**
   * The source's exit counts at the pause, into the report: read once the downtime is over (the
   * guest has not run here since the pause, and probing the timers causes no exit).
   */
  private recordExits(): void {
    if (this.exitsRecorded) return;
    this.exitsRecorded = true;
    const exits = this.live.guest.machine.exits();
    this.report.exits = { total: exits.total, byReason: exits.byReason, byCpu: exits.byCpu };
  }

  /** Pauses and sends the last dirty pages (all memory when no round ran: non-live migration) with the state. */
  private async stopAndCopy(): Promise<void> {
    this.step = "stop-and-copy";
    const dirty = this.pause();
    const stat = await this.sendRound(this.report.rounds, dirty, true);
    this.step = "state";
    const { cpu, devices } = this.capture();
    const memoryDigest = this.checksums.digest();
    const digest = stateDigest(memoryDigest, cpu, devices);
    this.report.bytes.state = await this.channel.send({ t: "state", batches: this.seq, cpu, devices, digest });
    await this.endRound(stat);
    this.progress("stop-and-copy", this.report.rounds, 0);
    await this.commit(digest);
    this.report.memoryDigest = memoryDigest;
  }

  private async awaitFinish(): Promise<void> {
    const channel = this.channel;
    this.step = "finished";
    this.progress("finishing", this.report.rounds, 0);
    // The destination runs the rest of the guest's run in real time.
    const restMs = Math.max(0, this.live.endNs - this.live.guest.now()) / 1e6;
    const f = await channel.expect("finished", restMs + this.timeoutMs);
    this.report.destination = { virtualNs: f.virtualNs, digest: f.digest, ticks: f.ticks, exits: f.exits };
  }

  /**
   * Sends `pages` (all memory when undefined) as batches; returns the round's statistics. With
   * zero pages elided, all memory means the pages the guest ever wrote: the destination's memory
   * starts zero, and a page written from now on is in the dirty log.
   */
  private async sendRound(round: number, dirty: Uint32Array | undefined, stopAndCopy: boolean): Promise<RoundStat> {
    const stat: RoundStat = { round, stopAndCopy, pages: 0, zeroPages: 0, bytes: 0, durationMs: 0, dirtiedPages: 0, expectedDowntimeMs: 0, throttlePercent: Math.round(this.live.throttle * 100) };
    this.report.roundStats.push(stat);
    this.roundStart = performance.now();
    const pages = dirty ?? (this.zeroPages ? this.live.guest.memory.touchedPages() : undefined);
    const total = pages ? countBits(pages) : this.live.guest.memory.pageCount;
    let done = 0;
    // Pages in order: every page, or the set bits of `pages`. Only a full batch waits.
    const next = pages ? (q: number) => nextSetBit(pages, q + 1) : (q: number) => (q + 1 < total ? q + 1 : -1);
    for (let p = next(-1); p >= 0; p = next(p)) {
      if (this.batchFull) await this.flush(stat, (total - done) * PAGE_SIZE);
      this.addPage(p, round > 0);
      done++;
    }
    if (!this.batchEmpty) await this.flush(stat, 0);
    // The stop-and-copy's batches drain along with the state that follows them (stopAndCopy).
    if (!stopAndCopy) await this.endRound(stat);
    return stat;
  }

  /**
   * A round ends when the destination has acknowledged all of it (when it acknowledges at all):
   * the pages the guest dirtied meanwhile, the round's time and the bandwidth measured from it
   * are then those of the transfer itself, and nothing is left in flight at a pause.
   */
  private async endRound(stat: RoundStat): Promise<void> {
    await this.channel.drain();
    stat.durationMs = performance.now() - this.roundStart!;
    this.memoryMs += stat.durationMs;
    this.roundStart = undefined;
  }

  /**
   * Copies page p into a batch and records the CRC the destination will compute for it. A page
   * `resent` (it went in an earlier round) goes as an XBZRLE delta when that is on and small.
   * Returns whether it carries bytes (false for an elided zero page).
   */
  addPage(p: number, resent: boolean): boolean {
    const memory = this.live.guest.memory;
    const page = memory.page(p);
    const crc = pageChecksum(page);
    // Only a page with the zero page's CRC can be zero: every other page skips the scan.
    if (this.zeroPages && crc === ZERO_PAGE_CRC && memory.isZero(p)) {
      this.batch.add(p, ZERO_PAGE, ZERO_PAGE_CRC, true);
      this.checksums.set(p, ZERO_PAGE_CRC);
      this.xbzrle?.forget(p);
      return false;
    }
    this.checksums.set(p, crc);
    if (!this.xbzrle?.add(p, page, crc, resent)) this.batch.add(p, page, crc, false);
    return true;
  }

  /** Whether the batches under way should go out before another page is added. */
  get batchFull(): boolean {
    return this.batch.full || this.xbzrle?.full === true;
  }

  get batchEmpty(): boolean {
    return this.batch.empty && this.xbzrle?.empty !== false;
  }

  /** Puts the batches under way on the wire. */
  async flush(stat: RoundStat, remainingBytes: number): Promise<void> {
    const round = stat.round;
    if (!this.batch.empty) {
      const message = this.batch.take(round, this.seq++);
      const size = await this.channel.send(message, { beyondWindow: stat.stopAndCopy });
      stat.pages += message.data.length / PAGE_SIZE;
      stat.zeroPages += countPages(message.zeros);
      stat.bytes += size;
      this.report.bytes.memory += size;
    }
    if (this.xbzrle && !this.xbzrle.empty) {
      const message = this.xbzrle.take(round, this.seq++);
      const size = await this.channel.send(message, { beyondWindow: stat.stopAndCopy });
      stat.pages += message.pages.length;
      stat.bytes += size;
      this.report.bytes.memory += size;
    }
    this.live.runSlice();
    this.progress(stat.stopAndCopy ? "stop-and-copy" : stat.postcopy ? "post-copy" : "pre-copy", round, remainingBytes);
  }

  // ---- helpers --------------------------------------------------------------------------------

  /**
   * Measured bandwidth: memory bytes per second of the rounds (this one's so far included) —
   * bytes the destination acknowledged when it does, else bytes the socket took.
   */
  private bandwidth(): number {
    const ms = this.memoryMs + (this.roundStart === undefined ? 0 : performance.now() - this.roundStart);
    const bytes = this.openChannel?.window?.ackedBytes ?? this.report.bytes.memory;
    return ms > 0 ? (bytes * 1000) / ms : Infinity;
  }

  /**
   * The pause's part that moves no pages: two exchanges (state → ready, commit → resumed), each
   * as long as the shortest exchange seen — config → prepared, or a batch and its
   * acknowledgement — and the work of a capture here and a rebuild there, as rehearsed.
   */
  private fixedDowntimeMs(): number {
    const exchangeMs = Math.min(this.configRttMs, this.openChannel?.window?.minRttMs ?? Infinity);
    return 2 * exchangeMs + (rehearsedPauseMs ?? 0);
  }

  private raiseThrottle(): void {
    const t = this.live.throttle;
    this.live.throttle = raisedThrottle(t);
    if (this.live.throttle !== t) this.report.throttleSteps++;
  }

  /** Lets the guest run while the channel waits; true when it is running. */
  private idle(): boolean {
    this.live.runSlice();
    return this.live.running;
  }

  private async fail(e: unknown): Promise<void> {
    const f = e instanceof MigrationFailure ? e : new MigrationFailure("internal", e instanceof Error ? e.message : String(e));
    this.report.error = { code: f.code, message: f.message, byPeer: f.byPeer };
    this.report.failedAt = this.step;
    if (this.report.status === "completed") {
      // Only the wait for the destination's end-of-run report failed: the migration itself stands.
      this.openChannel?.close();
      return;
    }
    this.openChannel?.close(f);
    if (this.pausedAt > 0) this.recordExits();
    if (this.handedOver) {
      // Post-copy: the guest resumed on the destination before all its memory arrived there
      // (source/postcopy.ts); neither copy can run alone any more.
      this.report.status = "lost";
      return;
    }
    if (this.committed) {
      // The ambiguous case: the destination decides, and says so when asked (source/resolve.ts).
      const fate = this.canQuery ? await askOutcome(this.connectOptions(), this.options.token, this.session!, performance.now() + (this.options.resolveTimeoutMs ?? DEFAULT_RESOLVE_TIMEOUT_MS)) : undefined;
      this.report.resolution = fate ?? "unreachable";
      if (fate !== "dropped") {
        this.report.status = fate === "taken" ? "completed" : "unconfirmed";
        if (fate !== "taken") this.saveGuest();
        return;
      }
      this.takeBack();
    }
    this.report.status = f.code === "cancelled" ? "cancelled" : "failed";
    // The guest goes on where it stopped, at full speed, as if nothing had happened.
    this.live.throttle = 0;
    if (!this.live.running) this.live.resume();
  }

  /**
   * Nobody knows whether the destination runs the guest: it stays paused here, and is saved
   * whole — as the destination got it — for the operator to resume or send again.
   */
  private saveGuest(): void {
    const path = this.options.snapshotPath ?? `blmv-${this.options.workload.replace(/[^A-Za-z0-9_-]/g, "_")}-${new Date().toISOString().replace(/[:.]/g, "-")}.snapshot`;
    try {
      saveSnapshot(path, { config: this.config!, ...this.captured!, timerPhases: this.timerPhases, memory: this.live.guest.memory });
      this.report.snapshot = { path };
    } catch (e) {
      this.report.snapshot = { error: `cannot save the paused guest to ${path}: ${(e as Error).message}` };
    }
  }

  /**
   * The destination dropped a guest committed to it. Measuring the timers' phases let this
   * machine's clock run past the pause, so the guest goes on where the destination would have:
   * on its own record rebuilt and restarted at those phases, at the pause time.
   */
  private takeBack(): void {
    const { guest } = this.live;
    const probed = guest.machine;
    guest.machine = Machine.resume(this.pausedDevices, this.timerPhases, { policy: probed.policy });
    probed.release();
  }

  private connectOptions(): ConnectOptions {
    const { url, ca, pin, latencyMs } = this.options;
    return { url, ca, pin, timeoutMs: this.timeoutMs, bandwidth: this.bandwidthLimit, latencyMs, idle: () => this.idle() };
  }

  private progress(phase: Progress["phase"], round: number, remainingBytes: number): void {
    const p: Progress = {
      phase,
      round,
      sentBytes: this.report.bytes.memory,
      remainingBytes,
      bytesPerSec: this.bandwidth(),
      expectedDowntimeMs: this.expectedDowntimeMs,
      throttlePercent: Math.round(this.live.throttle * 100),
      faults: this.faults,
    };
    this.options.onProgress?.(p);
    this.options.control?.reportProgress(p);
  }
}
