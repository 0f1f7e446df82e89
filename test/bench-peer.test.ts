// The QEMU peer of the benchmarks (`npm run bench -- --peer qemu`) without QEMU: its option
// handling, and its QMP client and migration polling against a fake QMP server on a unix socket
// (bad replies, errors, a failed or stalled migration end in a clear error, never a hang).

import { spawnSync } from "node:child_process";
import { chmodSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { createServer, type Server, type Socket } from "node:net";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { QmpClient, QmpCommandError } from "../bench/qmp.js";
import { awaitMigration, findQemu, QEMU_BINARY } from "../bench/qemu-migration.js";
import { INSTALL_QEMU, parsePeer, peerUnavailable } from "../bench/peer.js";

const dir = mkdtempSync(join(tmpdir(), "blmv-peer-test-"));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

const GREETING = JSON.stringify({ QMP: { version: { qemu: { major: 7, minor: 2, micro: 0 } }, capabilities: [] } });
const QUICK = { connectTimeoutMs: 2000, commandTimeoutMs: 1000 };
let sockets = 0;

interface Command {
  execute: string;
  arguments?: Record<string, unknown>;
  id?: string;
}

/** A QMP server that greets with `greeting` and hands every command to `answer`, which writes what it likes. */
async function fakeQmp(answer: (command: Command, send: (line: string) => void) => void, greeting = GREETING, capabilitiesDelayMs = 0): Promise<{ path: string; received: Command[]; server: Server }> {
  const path = join(dir, `qmp-${sockets++}.sock`);
  const received: Command[] = [];
  const server = createServer((socket: Socket) => {
    const send = (line: string): void => void socket.write(`${line}\r\n`);
    send(greeting);
    let buffered = "";
    socket.setEncoding("utf8");
    socket.on("data", (chunk: string) => {
      buffered += chunk;
      let end: number;
      while ((end = buffered.indexOf("\n")) >= 0) {
        const command = JSON.parse(buffered.slice(0, end)) as Command;
        buffered = buffered.slice(end + 1);
        received.push(command);
        if (command.execute === "qmp_capabilities") setTimeout(() => send(JSON.stringify({ return: {}, id: command.id })), capabilitiesDelayMs);
        else answer(command, send);
      }
    });
    socket.on("error", () => undefined);
  });
  await new Promise<void>((r) => server.listen(path, r));
  return { path, received, server };
}

const reply = (command: Command, value: unknown): string => JSON.stringify({ return: value, id: command.id });

describe("QMP client", () => {
  it("negotiates capabilities, runs commands and passes over events", async () => {
    const { path, received, server } = await fakeQmp((c, send) => {
      send(JSON.stringify({ event: "RESUME", timestamp: { seconds: 1, microseconds: 2 } }));
      send(reply(c, { status: "running", echo: c.arguments }));
    });
    const qmp = await QmpClient.connect(path, QUICK);
    await expect(qmp.execute("query-status", { x: 1 })).resolves.toEqual({ status: "running", echo: { x: 1 } });
    expect(received.map((c) => c.execute)).toEqual(["qmp_capabilities", "query-status"]);
    qmp.close();
    await expect(qmp.execute("query-status")).rejects.toThrow(/connection closed/);
    server.close();
  });

  it("rejects a QMP error reply with its class and description", async () => {
    const { path, server } = await fakeQmp((c, send) => send(JSON.stringify({ error: { class: "GenericError", desc: "Parameter 'uri' is missing" }, id: c.id })));
    const qmp = await QmpClient.connect(path, QUICK);
    const error = await qmp.execute("migrate").catch((e: unknown) => e);
    expect(error).toBeInstanceOf(QmpCommandError);
    expect((error as QmpCommandError).errorClass).toBe("GenericError");
    expect(String(error)).toMatch(/QMP migrate: GenericError: Parameter 'uri' is missing/);
    qmp.close();
    server.close();
  });

  it("fails on a reply that is not JSON, is not an object, or has neither return nor error, and stays failed", async () => {
    for (const [bad, message] of [
      ["{not json", /not JSON: \{not json/],
      ["[1,2]", /expected a JSON object/],
      [JSON.stringify({ id: "c1" }), /neither "return" nor "error"/],
      [JSON.stringify({ return: {}, id: "nobody" }), /a reply to no command sent/],
    ] as const) {
      const { path, server } = await fakeQmp((_c, send) => send(bad));
      const qmp = await QmpClient.connect(path, QUICK);
      await expect(qmp.execute("query-migrate")).rejects.toThrow(message);
      await expect(qmp.execute("query-migrate")).rejects.toThrow(message);
      server.close();
    }
  });

  it("refuses a greeting that is not QMP's", async () => {
    const { path, server } = await fakeQmp(() => undefined, JSON.stringify({ hello: "world" }));
    await expect(QmpClient.connect(path, QUICK)).rejects.toThrow(/expected a greeting with a "QMP" member/);
    server.close();
  });

  it("gives up on a server that never greets or never replies, within the deadline", async () => {
    const { path, server } = await fakeQmp(() => undefined);
    const qmp = await QmpClient.connect(path, { connectTimeoutMs: 2000, commandTimeoutMs: 150 });
    const started = Date.now();
    await expect(qmp.execute("query-migrate")).rejects.toThrow(/QMP query-migrate: no reply within 150 ms/);
    expect(Date.now() - started).toBeLessThan(1000);
    server.close();
    const silent = join(dir, "silent.sock");
    const mute = createServer(() => undefined);
    await new Promise<void>((r) => mute.listen(silent, r));
    await expect(QmpClient.connect(silent, { connectTimeoutMs: 150, commandTimeoutMs: 150 })).rejects.toThrow(/no greeting within/);
    mute.close();
  });

  it("waits for the capabilities answer as long as the start may take, not one command's deadline", async () => {
    // QEMU answers only once its machine is built (a large file to load, a loaded host).
    const { path, server } = await fakeQmp((c, send) => send(reply(c, {})), GREETING, 300);
    const qmp = await QmpClient.connect(path, { connectTimeoutMs: 3000, commandTimeoutMs: 100 });
    await expect(qmp.execute("query-status")).resolves.toEqual({});
    qmp.close();
    await expect(QmpClient.connect(path, { connectTimeoutMs: 150, commandTimeoutMs: 100 })).rejects.toThrow(/QMP qmp_capabilities: no reply within/);
    server.close();
  });

  it("fails the waiting command when QEMU closes the connection", async () => {
    const path = join(dir, "closing.sock");
    const server = createServer((socket) => {
      socket.write(`${GREETING}\n`);
      socket.on("data", (chunk) => {
        if (String(chunk).includes("qmp_capabilities")) socket.write(`${JSON.stringify({ return: {}, id: "c0" })}\n`);
        else socket.destroy();
      });
    });
    await new Promise<void>((r) => server.listen(path, r));
    const qmp = await QmpClient.connect(path, QUICK);
    await expect(qmp.execute("migrate")).rejects.toThrow(/QEMU closed the connection/);
    server.close();
  });

  it("retries while nothing listens, then says so; a signal stops the retries at once", async () => {
    const path = join(dir, "absent.sock");
    await expect(QmpClient.connect(path, { connectTimeoutMs: 100, commandTimeoutMs: 100 })).rejects.toThrow(/nothing listening there/);
    const abort = new AbortController();
    setTimeout(() => abort.abort(new Error("QEMU exited")), 50);
    const started = Date.now();
    await expect(QmpClient.connect(path, { connectTimeoutMs: 10_000, commandTimeoutMs: 100, signal: abort.signal })).rejects.toThrow(/QEMU exited/);
    expect(Date.now() - started).toBeLessThan(2000);
  });
});

describe("QEMU migration polling", () => {
  const deadlines = { migrationMs: 2000, stallMs: 200, pollMs: 5 };

  /** A QMP server whose query-migrate answers come from `states` in turn, the last one repeated. */
  async function migrating(states: object[]): Promise<{ qmp: QmpClient; server: Server }> {
    let next = 0;
    const { path, server } = await fakeQmp((c, send) => send(reply(c, states[Math.min(next++, states.length - 1)])));
    return { qmp: await QmpClient.connect(path, QUICK), server };
  }

  it("returns the completed migration's figures", async () => {
    const done = { status: "completed", "total-time": 56, downtime: 1, "setup-time": 2, ram: { transferred: 3000, "normal-bytes": 4096 } };
    const { qmp, server } = await migrating([{ status: "setup" }, { status: "active", ram: { transferred: 100 } }, done]);
    await expect(awaitMigration(qmp, deadlines)).resolves.toEqual(done);
    qmp.close();
    server.close();
  });

  it("reports a failed or cancelled migration with QEMU's reason", async () => {
    const failed = await migrating([{ status: "active", ram: { transferred: 1 } }, { status: "failed", "error-desc": "Unable to write to socket: Broken pipe" }]);
    await expect(awaitMigration(failed.qmp, deadlines)).rejects.toThrow(/source QEMU: migration failed: Unable to write to socket: Broken pipe/);
    const cancelled = await migrating([{ status: "cancelled" }]);
    await expect(awaitMigration(cancelled.qmp, deadlines, "destination")).rejects.toThrow(/destination QEMU: migration cancelled/);
    for (const m of [failed, cancelled]) {
      m.qmp.close();
      m.server.close();
    }
  });

  it("calls a migration that moves nothing a stall, and one that never ends late", async () => {
    const stalled = await migrating([{ status: "active", ram: { transferred: 4096 } }]);
    const started = Date.now();
    await expect(awaitMigration(stalled.qmp, deadlines)).rejects.toThrow(/migration stalled \(status active, 4096 bytes sent, none for 200 ms\)/);
    expect(Date.now() - started).toBeLessThan(1500);
    let sent = 0;
    const { path, server } = await fakeQmp((c, send) => send(reply(c, { status: "active", ram: { transferred: (sent += 4096) } })));
    const crawling = await QmpClient.connect(path, QUICK);
    await expect(awaitMigration(crawling, { ...deadlines, migrationMs: 150 })).rejects.toThrow(/migration not completed within 150 ms \(status active\)/);
    for (const q of [stalled.qmp, crawling]) q.close();
    stalled.server.close();
    server.close();
  });

  it("rejects a query-migrate answer that is not an object", async () => {
    const { qmp, server } = await migrating([null as unknown as object]);
    await expect(awaitMigration(qmp, deadlines)).rejects.toThrow(/source query-migrate: expected an object, got null/);
    qmp.close();
    server.close();
  });
});

describe("npm run bench -- --peer", () => {
  const RUN = resolve("dist/bench/run.js");
  const bench = (args: string[], env: NodeJS.ProcessEnv = process.env) => spawnSync(process.execPath, [RUN, ...args], { encoding: "utf8", timeout: 30_000, env });

  it("knows the qemu peer and nothing else", () => {
    expect(parsePeer(undefined)).toBeUndefined();
    expect(parsePeer("qemu")).toBe("qemu");
    expect(() => parsePeer("vmware")).toThrow(/--peer: unknown peer "vmware" \(known: qemu\)/);
  });

  it("finds QEMU on PATH only where an executable of its name is", () => {
    const bin = join(dir, "bin");
    const empty = join(dir, "empty");
    for (const d of [bin, empty]) rmSync(d, { recursive: true, force: true });
    for (const d of [bin, empty]) mkdirSync(d, { recursive: true });
    const fake = join(bin, QEMU_BINARY);
    writeFileSync(fake, "#!/bin/sh\n");
    chmodSync(fake, 0o644);
    expect(findQemu(`${empty}:${bin}`)).toBeUndefined();
    expect(peerUnavailable("qemu", empty)).toBe(INSTALL_QEMU);
    chmodSync(fake, 0o755);
    expect(findQemu(`${empty}:${bin}`)).toBe(fake);
    expect(peerUnavailable("qemu", `${empty}:${bin}`)).toBeUndefined();
  });

  it("exits 2 with the usage on an unknown peer, and with how to install QEMU when it is missing", () => {
    const unknown = bench(["--peer", "xen"]);
    expect(unknown.status).toBe(2);
    expect(unknown.stderr).toMatch(/bench: --peer: unknown peer "xen" \(known: qemu\)\nusage: npm run bench .*--peer qemu/);
    const empty = join(dir, "no-qemu");
    mkdirSync(empty, { recursive: true });
    const missing = bench(["--peer", "qemu", "--json", join(dir, "never.json")], { ...process.env, PATH: empty });
    expect(missing.status).toBe(2);
    expect(missing.stderr).toMatch(/--peer qemu needs qemu-system-x86_64 on PATH: install QEMU \(Debian and Ubuntu: apt-get install qemu-system-x86\)/);
    expect(missing.stdout).toBe("");
  });
});
