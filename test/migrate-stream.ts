// A migration stream made in the test process, and a way to play it into a destination without
// a socket: the valid messages a source would send for a small paused guest, and an in-memory
// connection a listener accepts like a real one. The fuzzer mutates the stream and plays it.

import { EventEmitter } from "node:events";
import { unpack } from "msgpackr";
import type WebSocket from "ws";
import { PageChecksums, ZERO_PAGE_CRC, pageChecksum } from "../src/guest/digest.js";
import { PAGE_SIZE, ZERO_PAGE } from "../src/guest/page.js";
import { proof } from "../src/migrate/transport/auth.js";
import { BatchBuilder } from "../src/migrate/source/batch.js";
import { bootGuest, type GuestRunSpec } from "../src/migrate/run/guest-run.js";
import { cpusToRecord } from "../src/guest/cpu.js";
import { PROTOCOL_MAGIC, PROTOCOL_VERSION, encode, encodeRecord, machineSpecOf, stateDigest, type Message, type State } from "../src/migrate/wire/protocol.js";

/** Pages per `pages` frame here, so that a small guest still takes several frames. */
const PAGES_PER_BATCH = 64;

export interface Stream {
  token: string;
  /** The source's messages in order; the `auth` proof is made when the challenge arrives. */
  messages: Message[];
  /** What the destination must answer in `ready` for this stream. */
  digest: Buffer;
  cpuRecord: Record<string, unknown>;
  deviceRecord: Record<string, unknown>;
  memoryDigest: string;
  pageCount: number;
}

/** The stream that migrates `spec`'s guest paused at `atNs`; the guest's run ends where it stopped. */
export function validStream(spec: GuestRunSpec, atNs: number, token: string): Stream {
  const guest = bootGuest(spec);
  guest.runUntil(atNs);
  const cpus = guest.pause();
  const memory = guest.memory;
  const checksums = new PageChecksums(memory.pageCount);
  const messages: Message[] = [
    { t: "hello", magic: PROTOCOL_MAGIC, version: PROTOCOL_VERSION, minVersion: PROTOCOL_VERSION, capabilities: ["zero-pages", "outcome-query"], nonce: HELLO_NONCE },
    { t: "auth", proof: new Uint8Array(32) },
    { t: "config", memoryBytes: memory.bytes, pageSize: PAGE_SIZE, machine: machineSpecOf(guest.machine), workload: spec.workload, endNs: guest.now() },
  ];
  const batch = new BatchBuilder();
  let seq = 0;
  for (let p = 0; p < memory.pageCount; p++) {
    const zero = memory.isZero(p);
    const crc = zero ? ZERO_PAGE_CRC : pageChecksum(memory.page(p));
    batch.add(p, zero ? ZERO_PAGE : memory.page(p), crc, zero);
    checksums.set(p, crc);
    if ((p + 1) % PAGES_PER_BATCH === 0 || p === memory.pageCount - 1) {
      const m = batch.take(0, seq++);
      messages.push({ ...m, data: Uint8Array.from(m.data), runs: [...m.runs], zeros: [...m.zeros] });
    }
  }
  const cpuRecord = cpusToRecord(cpus) as unknown as Record<string, unknown>;
  const deviceRecord = guest.machine.capture() as unknown as Record<string, unknown>;
  const memoryDigest = checksums.digest();
  const state = withRecords(memoryDigest, seq, encodeRecord(cpuRecord), encodeRecord(deviceRecord));
  messages.push(state);
  return { token, messages, digest: Buffer.from(state.digest), cpuRecord, deviceRecord, memoryDigest, pageCount: memory.pageCount };
}

/** A `state` message carrying these encoded records (encodeRecord), with the digest a source would compute for them. */
export function withRecords(memoryDigest: string, batches: number, cpu: Uint8Array, devices: Uint8Array): State {
  return { t: "state", batches, cpu, devices, digest: stateDigest(memoryDigest, cpu, devices) };
}

/** An in-memory connection: what the destination sends is kept, decoded. */
export class MemorySocket extends EventEmitter {
  readonly CONNECTING = 0;
  readonly OPEN = 1;
  readonly CLOSING = 2;
  readonly CLOSED = 3;
  readyState = 1;
  readonly sent: Record<string, unknown>[] = [];

  send(data: Uint8Array): void {
    if (this.readyState === this.OPEN) this.sent.push(unpack(data) as Record<string, unknown>);
  }

  /** As ws's: "fragments" hands each message over as the list of its fragments. */
  binaryType = "nodebuffer";

  /** The peer's frame arrives, in one fragment. */
  deliver(frame: Uint8Array): void {
    const data = Buffer.from(frame.buffer, frame.byteOffset, frame.byteLength);
    if (this.readyState === this.OPEN) this.emit("message", this.binaryType === "fragments" ? [data] : data, true);
  }

  close(): void {
    if (this.readyState === this.CLOSED) return;
    this.readyState = this.CLOSED;
    this.emit("close", 1000, Buffer.alloc(0));
  }

  terminate(): void {
    this.close();
  }

  get asWebSocket(): WebSocket {
    return this as unknown as WebSocket;
  }
}

/** The nonce every hello of a made stream carries, so its `auth` proof can be made. */
export const HELLO_NONCE = new Uint8Array(32).fill(9);

/** Plays `frames` into `socket` as a source would, stopping when the destination closes; "auth" is made from the challenge received. */
export function play(socket: MemorySocket, frames: readonly (Uint8Array | "auth")[], token: string): void {
  for (const frame of frames) {
    if (socket.readyState !== socket.OPEN) return;
    if (frame === "auth") {
      const challenge = socket.sent.find((m) => m.t === "challenge");
      const nonce = challenge?.nonce instanceof Uint8Array ? challenge.nonce : new Uint8Array(32);
      socket.deliver(encode({ t: "auth", proof: proof(token, "source", PROTOCOL_VERSION, HELLO_NONCE, nonce) }));
    } else {
      socket.deliver(frame);
    }
  }
}
