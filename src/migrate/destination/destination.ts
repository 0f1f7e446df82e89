// The destination of a migration: one session per connection. It checks every message before
// acting on it, loads memory into a staging GuestMemory, rebuilds the devices on a fresh
// machine through the hardware interface (Machine.reconstruct), and compares a digest of all it
// received with the source's before it says it is ready. It resumes the guest only when the
// commit arrives; until then any failure drops everything it holds. A post-copy handoff takes
// the guest before its memory (destination/postcopy.ts); XBZRLE deltas apply to pages it holds.
// What sessions share — limits, the memory budget, failed authentications, the fate of each
// ready session — is the Admission's.

import { formatBytes } from "../report/units.js";
import type WebSocket from "ws";
import { Machine } from "../../core/machine.js";
import type { CpuState } from "../../guest/cpu.js";
import { PageChecksums, ZERO_PAGE_CRC, pageChecksum } from "../../guest/digest.js";
import { PAGE_SIZE } from "../../guest/page.js";
import type { SlabPool } from "../../guest/memory.js";
import { Guest } from "../../guest/workload.js";
import {
  CAPABILITIES, MAX_BATCH_PAGES, MAX_DELTA_PAGES, MAX_PAYLOAD, MAX_UNAUTHENTICATED_PAYLOAD, MIN_PROTOCOL_VERSION, PROTOCOL_VERSION, ProtocolError,
  batchChecksum, encode, handoffDigest, stateDigest,
  type Config, type Deltas, type Handoff, type Message, type MessageType, type Pages, type Query, type SessionFate, type State,
} from "../wire/protocol.js";
import { decode } from "../wire/decode.js";
import { chunksOf, storeRuns } from "../wire/page-bytes.js";
import { DemandMemory } from "./demand-memory.js";
import { PostcopyReceiver } from "./postcopy.js";
import { applyDeltas } from "../wire/xbzrle.js";
import { newNonce, proof, verifyProof } from "../transport/auth.js";
import { Admission, addressOf, type Holding } from "./admission.js";
import { LiveGuest } from "../run/live.js";
import { closeSoon } from "../transport/channel.js";
import { MigrationFailure, type FailureCode } from "../failure.js";
import { asState, rebuildRecords } from "./rebuild.js";

export const DEFAULT_DESTINATION_TIMEOUT_MS = 30_000;
/** Longest wait for `hello` and `auth`: a peer that connects and says nothing frees its slot soon. */
export const HANDSHAKE_TIMEOUT_MS = 5_000;

export interface DestinationOptions {
  token: string;
  /** Largest guest memory this destination agrees to host. */
  maxMemoryBytes: number;
  /** Longest wait for the source's next message before the commit. */
  timeoutMs?: number;
  /** Preallocated guest memory the sessions take their slabs from while it lasts (the listener's --prealloc). */
  memoryPool?: SlabPool;
  onEvent?: (e: DestinationEvent) => void;
}

export type DestinationEvent =
  | { event: "session"; peer: string }
  | { event: "refused"; peer: string; reason: string }
  | { event: "aborted"; peer: string; step: string; code: FailureCode; message: string; byPeer: boolean }
  | { event: "ready"; peer: string; workload: string; memoryBytes: number; pages: number; missingPages: number }
  | { event: "resumed"; peer: string; workload: string; virtualNs: number }
  | { event: "lost"; peer: string; workload: string; virtualNs: number; missingPages: number; code: FailureCode; message: string }
  | { event: "finished"; peer: string; workload: string; virtualNs: number; digest: string; ticks: number; exits: number }
  | { event: "outcome"; peer: string; session: string; outcome: SessionFate };

/** How a session ended: its guest ran to the end here, or nothing was kept. */
export type SessionOutcome = "finished" | "aborted" | "answered";


/**
 * Lets an authenticated peer send frames up to MAX_PAYLOAD. Before authentication the listener's
 * WebSocket layer refuses any frame larger than the handshake's (MAX_UNAUTHENTICATED_PAYLOAD)
 * from its header alone, so nothing larger is ever buffered for a peer without the token.
 */
function liftPayloadLimit(ws: WebSocket): void {
  const receiver = (ws as unknown as { _receiver?: { _maxPayload: number } })._receiver;
  if (receiver && receiver._maxPayload > 0) receiver._maxPayload = MAX_PAYLOAD;
}

export class DestinationSession {
  readonly done: Promise<SessionOutcome>;
  private settle!: (o: SessionOutcome) => void;
  private expecting: MessageType | "checking" | "post-copy" | "nothing" = "hello";
  /** A proof waits for the guessing budget (its reservation is given back if it never gets checked). */
  private checkPending = false;
  private timer?: NodeJS.Timeout;
  private sourceNonce?: Uint8Array;
  private destinationNonce?: Uint8Array;
  private version = PROTOCOL_VERSION;
  private seq = 0;
  private round = 0;
  /** The source asked for an `ack` after each stored batch. */
  private acks = false;
  private deltaPairs?: Uint32Array;
  private readonly scratchPage = new Uint8Array(PAGE_SIZE);
  private config?: Config;
  private stopped = false;
  private readonly holding: Holding = { connection: false, session: false, bytes: 0 };
  /** What a failure must drop: the staging memory, its checksums, the rebuilt guest. */
  private staging?: { memory: DemandMemory; checksums: PageChecksums; pairs: Uint32Array; guest?: Guest };
  /** Post-copy: the records that arrived with the handoff, then the receiver once resumed. */
  private handoffRecords?: { cpus: CpuState[]; machine: Machine };
  private postcopy?: PostcopyReceiver;
  private lost = false;

  constructor(
    private readonly ws: WebSocket,
    private readonly peer: string,
    private readonly options: DestinationOptions,
    private readonly admission = new Admission(),
  ) {
    this.done = new Promise((r) => (this.settle = r));
    admission.enter(this.holding, addressOf(peer), () => this.abort(new ProtocolError("busy", "closed to make room for newer connections: this one had not authenticated")));
    // A message comes as the fragments it was sent in: a batch's pages are read where they arrived (wire/page-bytes.ts).
    ws.binaryType = "fragments";
    ws.on("message", (data: Buffer | Buffer[], isBinary: boolean) => this.onFrame(data, isBinary));
    ws.on("close", () => this.abort(new MigrationFailure("connection", "connection closed by the source")));
    ws.on("error", (e: Error) => this.abort(new MigrationFailure("connection", e.message)));
    this.emit({ event: "session", peer });
    this.armTimer();
  }

  /** Ends the session now: before the commit as any failure does; after it, the guest stops here. */
  stop(): void {
    this.stopped = true;
    this.abort(new MigrationFailure("cancelled", "the destination is shutting down"));
  }

  private onFrame(data: Buffer | Buffer[], isBinary: boolean): void {
    if (this.expecting === "nothing") return;
    try {
      if (!isBinary) throw new ProtocolError("bad-message", "text frame on a binary protocol");
      if (this.expecting === "checking") throw new ProtocolError("unexpected", `${isBinary ? "a message" : "a frame"} while its proof waits to be checked`);
      const authenticated = this.expecting !== "hello" && this.expecting !== "auth";
      const bytes = Array.isArray(data) ? data.reduce((n, f) => n + f.length, 0) : data.length;
      if (!authenticated && bytes > MAX_UNAUTHENTICATED_PAYLOAD) throw new ProtocolError("bad-message", `frame of ${bytes} bytes before authentication`);
      const m = decode(data, this.staging && { pageCount: this.staging.memory.pageCount });
      if (m.t === "error") throw new MigrationFailure(m.code, m.message, true);
      this.armTimer();
      this.handle(m);
    } catch (e) {
      this.abort(e);
    }
  }

  private handle(m: Message): void {
    if (this.expecting === "post-copy") return this.postcopy!.handle(m);
    const batchStep = m.t === "pages" || m.t === "deltas" || m.t === "state" || m.t === "handoff";
    const accepts = this.expecting === "pages" ? batchStep : m.t === this.expecting || (this.expecting === "config" && m.t === "query");
    if (!accepts) throw new ProtocolError("unexpected", `expected ${this.expecting}, got ${m.t}`);
    switch (m.t) {
      case "hello": {
        if (m.minVersion > m.version) throw new ProtocolError("bad-message", "hello.minVersion is above hello.version");
        const version = Math.min(PROTOCOL_VERSION, m.version);
        if (version < Math.max(MIN_PROTOCOL_VERSION, m.minVersion)) {
          throw new ProtocolError("version", `the source speaks protocol versions ${m.minVersion}..${m.version}, this destination ${MIN_PROTOCOL_VERSION}..${PROTOCOL_VERSION}`);
        }
        this.version = version;
        this.sourceNonce = m.nonce;
        this.destinationNonce = newNonce();
        const capabilities = CAPABILITIES.filter((c) => m.capabilities.includes(c));
        this.acks = capabilities.includes("acks");
        this.admission.progressed(this.holding);
        this.send({ t: "challenge", version, capabilities, nonce: this.destinationNonce });
        this.expecting = "auth";
        return;
      }
      case "auth": {
        const wait = this.admission.reserveCheck();
        if (wait === undefined) {
          const s = Math.ceil(this.admission.budgetRefillsIn() / 1000);
          throw new ProtocolError("auth", `too many failed authentications at this destination: proofs are not checked now; try again in ${s} s`);
        }
        this.checkPending = true;
        if (wait === 0) return this.checkProof(m.proof);
        this.expecting = "checking";
        this.admission.progressed(this.holding, true);
        clearTimeout(this.timer);
        this.timer = setTimeout(() => this.checkProof(m.proof), wait);
        return;
      }
      case "config":
        return this.prepare(m);
      case "query":
        return this.answer(m);
      case "pages":
        return this.load(m);
      case "deltas":
        return this.loadDeltas(m);
      case "state":
        return this.rebuild(m);
      case "handoff":
        return this.handoff(m);
      case "commit": {
        const machine = this.handoffRecords?.machine ?? this.staging!.guest!.machine;
        this.asState(() => machine.applyTimerPhases(m.timerPhases));
        void (this.handoffRecords ? this.resumePostcopy() : this.resume());
        return;
      }
      default:
        throw new ProtocolError("unexpected", `a destination does not take ${m.t}`);
    }
  }

  /** Checks the source's proof once the guessing budget allows it (see Admission.reserveCheck). */
  private checkProof(received: Uint8Array): void {
    this.checkPending = false;
    const [token, version, sourceNonce, destinationNonce] = [this.options.token, this.version, this.sourceNonce!, this.destinationNonce!];
    try {
      const valid = verifyProof(received, token, "source", version, sourceNonce, destinationNonce);
      this.admission.proofChecked(!valid);
      if (!valid) throw new ProtocolError("auth", "authentication failed: the source does not know the token");
      const full = this.admission.admit(this.holding);
      if (full) throw new ProtocolError("busy", full);
      liftPayloadLimit(this.ws);
      this.send({ t: "accepted", proof: proof(token, "destination", version, sourceNonce, destinationNonce) });
      this.expecting = "config";
      this.armTimer();
    } catch (e) {
      this.abort(e);
    }
  }

  private prepare(c: Config): void {
    if (c.memoryBytes > this.options.maxMemoryBytes) {
      throw new ProtocolError("config", `guest memory of ${formatBytes(c.memoryBytes)} exceeds this destination's limit of ${formatBytes(this.options.maxMemoryBytes)} (the listener's --max-memory)`);
    }
    if (c.machine.policy === "none") throw new ProtocolError("config", 'policy "none" keeps no device shadows: the guest could not be migrated again');
    const full = this.admission.reserve(this.holding, c.memoryBytes);
    if (full) throw new ProtocolError("busy", full);
    const memory = new DemandMemory(c.memoryBytes, this.options.memoryPool);
    this.staging = { memory, checksums: new PageChecksums(memory.pageCount), pairs: new Uint32Array(2 * MAX_BATCH_PAGES) };
    this.config = c;
    // Every guest's first batch writes its first slab (the boot data page): allocated now, the
    // collection its size sets off runs before the first pages instead of in a downtime soon after.
    memory.reserveSlab(0);
    this.send({ t: "prepared" });
    this.expecting = "pages";
  }

  /** Checks a batch against its CRC, then stores it: a corrupt batch changes nothing. */
  private load(m: Pages): void {
    const { memory, checksums, pairs } = this.staging!;
    this.checkOrder(m);
    let n = 0;
    for (let i = 0; i < m.runs.length; i += 2) for (let p = m.runs[i]; p < m.runs[i] + m.runs[i + 1]; p++) pairs[2 * n++] = p;
    const dataPages = n;
    // Each page's CRC where its bytes arrived; a plain view per page costs less than a Buffer's subarray.
    n = 0;
    for (const { buffer, byteOffset, length } of chunksOf(m.data)) {
      for (let at = 0; at < length; at += PAGE_SIZE) pairs[2 * n++ + 1] = pageChecksum(new Uint8Array(buffer, byteOffset + at, PAGE_SIZE));
    }
    for (let i = 0; i < m.zeros.length; i += 2) {
      for (let p = m.zeros[i]; p < m.zeros[i] + m.zeros[i + 1]; p++, n++) {
        pairs[2 * n] = p;
        pairs[2 * n + 1] = ZERO_PAGE_CRC;
      }
    }
    if (batchChecksum(pairs, n) !== m.crc) throw new ProtocolError("checksum", `batch ${m.seq} of round ${m.round} does not match its checksum`);
    // Data pages run by run: one copy per run (per part of a run within one fragment).
    storeRuns(memory, m.runs, m.data);
    for (let k = 0; k < dataPages; k++) checksums.set(pairs[2 * k], pairs[2 * k + 1]);
    // Zero pages run by run: a page never written is zero already and costs a bit test.
    for (let i = 0; i < m.zeros.length; i += 2) {
      memory.zeroPages(m.zeros[i], m.zeros[i + 1]);
      checksums.fill(ZERO_PAGE_CRC, m.zeros[i], m.zeros[i] + m.zeros[i + 1]);
    }
    this.stored(m);
  }

  private checkOrder(m: Pages | Deltas): void {
    if (m.seq !== this.seq) throw new ProtocolError("bad-message", `batch ${m.seq} arrived where batch ${this.seq} was due`);
    if (m.round < this.round) throw new ProtocolError("bad-message", `round ${m.round} after round ${this.round}`);
  }

  private loadDeltas(m: Deltas): void {
    const { memory, checksums } = this.staging!;
    this.checkOrder(m);
    this.deltaPairs ??= new Uint32Array(2 * MAX_DELTA_PAGES);
    applyDeltas(memory, checksums, this.deltaPairs, this.scratchPage, m);
    this.stored(m);
  }

  /** A batch is checked and in memory: the next is due, and the source hears of it when it asked. */
  private stored(m: Pages | Deltas): void {
    this.seq++;
    this.round = m.round;
    if (this.acks) this.send({ t: "ack", seq: m.seq });
  }

  /** Rebuilds CPU, devices and guest from the records, then compares digests. */
  private rebuild(m: State): void {
    const staging = this.staging!;
    const digest = stateDigest(staging.checksums.digest(), m.cpu, m.devices);
    this.checkArrived(m.batches, digest, m.digest);
    this.asState(() => {
      const { cpus, machine } = this.records(m.cpu, m.devices);
      try {
        staging.guest = Guest.resume(staging.memory, cpus, machine);
      } catch (e) {
        machine.release();
        throw e;
      }
    });
    this.ready(digest);
  }

  /** Post-copy: the CPU and devices are rebuilt now; the pages named missing will follow after the commit. */
  private handoff(m: Handoff): void {
    const digest = handoffDigest(m.missing, m.cpu, m.devices);
    this.checkArrived(m.batches, digest, m.digest);
    this.handoffRecords = this.asState(() => this.records(m.cpu, m.devices));
    this.staging!.memory.markAbsent(m.missing);
    this.ready(digest);
  }

  private checkArrived(batches: number, digest: Buffer, sent: Uint8Array): void {
    if (batches !== this.seq) throw new ProtocolError("digest", `the source sent ${batches} batches, ${this.seq} arrived`);
    if (!digest.equals(sent)) throw new ProtocolError("digest", "what arrived differs from what the source sent (memory, CPU or device digest)");
  }

  /** Runs `f`, turning what a bad record throws into a "state" error. */
  private asState<T>(f: () => T): T {
    return asState(f);
  }

  private records(cpuRecord: Uint8Array, devices: Uint8Array): { cpus: CpuState[]; machine: Machine } {
    return rebuildRecords(this.config!, cpuRecord, devices);
  }

  private ready(digest: Buffer): void {
    const config = this.config!;
    this.send({ t: "ready", digest });
    this.expecting = "commit";
    this.admission.awaitCommit(this.id, () => this.abort(new MigrationFailure("cancelled", "the source asked for this session's outcome: its commit never arrived")));
    const { pageCount, missingPages } = this.staging!.memory;
    this.emit({ event: "ready", peer: this.peer, workload: config.workload, memoryBytes: config.memoryBytes, pages: pageCount, missingPages });
  }

  /** The commit: the guest is ours now and runs here until the end of its run. */
  private async resume(): Promise<void> {
    this.expecting = "nothing";
    clearTimeout(this.timer);
    this.admission.decide(this.id, "taken");
    this.announceResumed(this.staging!.guest!.now());
    await this.run(this.staging!.guest!);
  }

  /**
   * The post-copy commit: the guest resumes at once, fetching its data page first if it is
   * missing; pages go on arriving, and the source's silence still times the session out.
   */
  private async resumePostcopy(): Promise<void> {
    const { memory, checksums } = this.staging!;
    const { cpus, machine } = this.handoffRecords!;
    this.admission.decide(this.id, "taken");
    const receiver = (this.postcopy = new PostcopyReceiver(memory, checksums, { send: (m) => this.send(m), load: (m) => this.load(m), batches: () => this.seq }));
    this.expecting = "post-copy";
    // Once all memory is here the guest no longer depends on the source.
    void receiver.memoryIn.then(
      () => {
        this.expecting = "nothing";
        clearTimeout(this.timer);
      },
      () => undefined, // lost: reported by lose()
    );
    this.announceResumed(machine.now());
    try {
      const guest = await receiver.guest(cpus, machine);
      await this.run(guest, receiver);
    } catch (e) {
      this.abort(e);
    }
  }

  private announceResumed(virtualNs: number): void {
    this.send({ t: "resumed", virtualNs });
    this.emit({ event: "resumed", peer: this.peer, workload: this.config!.workload, virtualNs });
  }

  /** Runs the guest to the end of its run (post-copy: with all its memory in) and reports its digest. */
  private async run(guest: Guest, postcopy?: PostcopyReceiver): Promise<void> {
    const { workload, endNs } = this.config!;
    const live = new LiveGuest(guest, endNs);
    postcopy?.attach(live);
    live.resume();
    try {
      await live.runLive(() => this.stopped || !live.running);
      if (this.stopped || !live.running) throw new Error(`stopped at ${guest.now()} ns virtual, before the end of the guest's run`);
      await postcopy?.memoryIn;
      const result = { virtualNs: guest.now(), digest: guest.digest(), ticks: guest.ticks(), exits: guest.machine.exits().total };
      this.send({ t: "finished", ...result });
      this.emit({ event: "finished", peer: this.peer, workload, ...result });
      closeSoon(this.ws);
      this.end("finished");
    } catch (e) {
      if (this.lost) return; // reported as lost already
      // The guest itself failed after the commit: nothing to roll back, but say so.
      this.emit({ event: "aborted", peer: this.peer, step: "running", code: this.stopped ? "cancelled" : "internal", message: (e as Error).message, byPeer: false });
      closeSoon(this.ws);
      this.end("aborted");
    }
  }

  /** A source that lost its link after its commit asks what became of that session. */
  private answer(q: Query): void {
    const session = Buffer.from(q.session).toString("hex");
    const outcome = this.admission.query(session);
    this.expecting = "nothing";
    clearTimeout(this.timer);
    this.send({ t: "outcome", outcome });
    closeSoon(this.ws);
    this.emit({ event: "outcome", peer: this.peer, session, outcome });
    this.end("answered");
  }

  /** This session's name for a later query: the destination's nonce, known to both sides only. */
  private get id(): string {
    return Buffer.from(this.destinationNonce!).toString("hex");
  }

  /** Lets go of the staged guest: its memory goes back to the pool (or to the garbage collector). */
  private dropStaging(): void {
    this.staging?.memory.release();
    this.staging = undefined;
  }

  private end(outcome: SessionOutcome): void {
    this.dropStaging();
    if (this.checkPending) this.admission.proofChecked(false);
    this.checkPending = false;
    this.admission.release(this.holding);
    this.settle(outcome);
  }

  /** Before the commit: tells the source why (unless it told us), and drops everything. */
  private abort(e: unknown): void {
    if (this.expecting === "nothing") return;
    const f = e instanceof MigrationFailure ? e : e instanceof ProtocolError ? new MigrationFailure(e.code, e.message) : new MigrationFailure("internal", e instanceof Error ? e.message : String(e));
    if (this.expecting === "post-copy") return this.lose(f);
    const step = this.expecting;
    this.expecting = "nothing";
    clearTimeout(this.timer);
    // A rebuilt machine's core serves the next session's reconstruction (a new one costs far more).
    (this.staging?.guest?.machine ?? this.handoffRecords?.machine)?.release();
    this.handoffRecords = undefined;
    this.dropStaging();
    this.config = undefined;
    if (step === "commit") this.admission.decide(this.id, "dropped");
    if (!f.byPeer && f.code !== "connection") this.send({ t: "error", code: f.code, message: f.message });
    closeSoon(this.ws);
    this.emit({ event: "aborted", peer: this.peer, step, code: f.code, message: f.message, byPeer: f.byPeer });
    this.end("aborted");
  }

  /** Post-copy, before all memory is in: the guest stops here for good (see destination/postcopy.ts). */
  private lose(f: MigrationFailure): void {
    this.lost = true;
    this.expecting = "nothing";
    clearTimeout(this.timer);
    this.postcopy!.lose(f);
    const memory = this.staging!.memory;
    if (!f.byPeer && f.code !== "connection") this.send({ t: "error", code: f.code, message: f.message });
    closeSoon(this.ws);
    const virtualNs = this.handoffRecords!.machine.now();
    this.emit({ event: "lost", peer: this.peer, workload: this.config!.workload, virtualNs, missingPages: memory.missingPages, code: f.code, message: f.message });
    this.dropStaging();
    this.end("aborted");
  }

  private armTimer(): void {
    clearTimeout(this.timer);
    const handshake = this.expecting === "hello" || this.expecting === "auth";
    const ms = Math.min(this.options.timeoutMs ?? DEFAULT_DESTINATION_TIMEOUT_MS, handshake ? HANDSHAKE_TIMEOUT_MS : Infinity);
    this.timer = setTimeout(() => this.abort(new ProtocolError("timeout", `no ${this.expecting} from the source within ${ms} ms`)), ms);
  }

  private send(m: Message): void {
    if (this.ws.readyState === this.ws.OPEN) this.ws.send(encode(m), { binary: true });
  }

  private emit(e: DestinationEvent): void {
    this.options.onEvent?.(e);
  }
}
