// The command line as a user meets it: --version, each command's own help, usage errors that
// name the option (exit 2, before anything starts), record scripts blamed at their line,
// progress without a terminal, Ctrl-C on a running migration. docs/usage.md.

import { spawn } from "node:child_process";
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createInterface } from "node:readline";
import { LINE_INTERVAL_MS } from "../src/migrate/report/progress.js";

const ROOT = resolve(import.meta.dirname, "..");
const CLI = join(ROOT, "dist/src/cli/main.js");
const VERSION = (JSON.parse(readFileSync(join(ROOT, "package.json"), "utf8")) as { version: string }).version;
const EXIT_BAD_INPUT = 2;
const EXIT_INTERRUPTED = 130;

interface Run {
  status: number | null;
  stdout: string;
  stderr: string;
  ms: number;
}

/** Runs blmv to its end (the tests run side by side: the commands wait on nothing but themselves). */
async function blmv(args: string[], env: NodeJS.ProcessEnv = {}, cwd = ROOT): Promise<Run> {
  const start = Date.now();
  const child = spawn(process.execPath, [CLI, ...args], { cwd, env: { ...process.env, ...env }, stdio: ["ignore", "pipe", "pipe"] });
  let stdout = "";
  let stderr = "";
  child.stdout.on("data", (d: Buffer) => (stdout += d.toString()));
  child.stderr.on("data", (d: Buffer) => (stderr += d.toString()));
  const status = await new Promise<number | null>((resolve) => child.once("close", (code) => resolve(code)));
  return { status, stdout, stderr, ms: Date.now() - start };
}

/** A usage error: exit 2, one clean line naming `what`, no stack, nothing on stdout. */
function expectUsageError(r: Run, what: string | RegExp): void {
  expect(r.status, r.stderr).toBe(EXIT_BAD_INPUT);
  expect(r.stderr).toMatch(typeof what === "string" ? new RegExp(what.replace(/[.*+?^${}()|[\]\\]/g, "\\$&")) : what);
  expect(r.stderr).not.toMatch(/internal error|\n\s+at /);
  expect(r.stdout).toBe("");
}

describe.concurrent("blmv --version", () => {
  it.each([["--version"], ["-V"], ["version"]])("%s prints the package's version", async (flag) => {
    const r = await blmv([flag]);
    expect(r.status).toBe(0);
    expect(r.stdout.trim()).toBe(VERSION);
  });
});

describe.concurrent("help", () => {
  it("migrate listen and migrate send each print their own options", async () => {
    const listen = await blmv(["migrate", "listen", "--help"]);
    const send = await blmv(["migrate", "send", "--help"]);
    expect(listen.status).toBe(0);
    expect(send.status).toBe(0);
    expect(listen.stdout).toMatch(/^usage: blmv migrate listen /);
    expect(send.stdout).toMatch(/^usage: blmv migrate send /);
    expect(listen.stdout).toMatch(/--max-memory SIZE/);
    expect(listen.stdout).not.toMatch(/--to URL|--workload/);
    expect(send.stdout).toMatch(/--to URL/);
    expect(send.stdout).not.toMatch(/--max-memory|--port/);
  });

  it("demo states one default downtime limit, its own", async () => {
    const r = await blmv(["demo", "--help"]);
    expect(r.status).toBe(0);
    const limits = [...r.stdout.matchAll(/(\d+) ms downtime limit|downtime-limit MS[^\n]*(?:\n {24}[^\n]*)*\(default (\d+)\)/g)];
    expect(limits).toHaveLength(1);
    expect(limits[0][2]).toBe("50");
    expect(r.stdout).not.toMatch(/300/);
  });

  it("compare lists no refused option and describes its own chart", async () => {
    const r = await blmv(["compare", "--help"]);
    expect(r.status).toBe(0);
    expect(r.stdout).not.toMatch(/--technique\b(?!s)/);
    expect(r.stdout).toMatch(/--techniques LIST/);
    expect(r.stdout.replace(/\s+/g, " ")).toMatch(/--svg FILE write the chart as SVG: total migration time and downtime of each technique/);
    expect(r.stdout).not.toMatch(/per-round/);
  });

  it("the command list names every command with a line of its own", async () => {
    const r = await blmv(["--help"]);
    for (const command of ["demo", "replay", "compile", "import-qemu", "record", "migrate listen", "migrate send", "migrate status", "migrate set", "migrate postcopy", "migrate cancel", "compare"]) {
      expect(r.stdout).toMatch(new RegExp(`blmv ${command} +\\S`));
    }
  });

  it("the monitor's commands print their own options; --http is in the table of send, listen and demo", async () => {
    const [set, status, send, listen, demo] = await Promise.all([["migrate", "set"], ["migrate", "status"], ["migrate", "send"], ["migrate", "listen"], ["demo"]].map((c) => blmv([...c, "--help"])));
    for (const r of [set, status, send, listen, demo]) expect(r.status).toBe(0);
    expect(set.stdout).toMatch(/^usage: blmv migrate set /);
    expect(set.stdout).toMatch(/--downtime-limit MS/);
    expect(set.stdout).not.toMatch(/--json/);
    expect(status.stdout).toMatch(/--json/);
    expect(status.stdout).not.toMatch(/--bandwidth/);
    for (const r of [send, listen, demo]) expect(r.stdout).toMatch(/the monitor:\n {2}--http \[HOST:\]PORT/);
    expect(send.stdout).toMatch(/--cert F +with --http: serve the monitor over HTTPS/);
    expect(demo.stdout).not.toMatch(/--cert/);
  });
});

describe.concurrent("usage errors name the option and exit 2", () => {
  it.each([
    [["replay", "--bogus", "x.trace"], "unknown option --bogus"],
    [["migrate", "send", "--memmory", "64M"], "unknown option --memmory; did you mean --memory?"],
    [["compare", "--technique", "precopy"], "unknown option --technique; did you mean --techniques?"],
    [["replay", "x.trace", "--policy"], "--policy needs a value"],
    [["replay", "x.trace", "--json=yes"], "--json takes no value"],
    [["replay", "a.trace", "b.trace"], 'unexpected argument "b.trace"'],
    [["migrate", "status", "--http", "8080", "--bandwidth", "1G"], "migrate status: unknown option --bandwidth"],
  ])("blmv %j", async (args, message) => {
    const r = await blmv(args);
    expectUsageError(r, message);
    // One line, its quotes balanced: none of the parser's own wording.
    expect(r.stderr.trim().split("\n")).toHaveLength(1);
    expect((r.stderr.match(/"/g) ?? []).length % 2).toBe(0);
    expect(r.stderr).not.toMatch(/'/);
  });

  it("migrate send --memory 999T", async () => {
    expectUsageError(await blmv(["migrate", "send", "--to", "ws://127.0.0.1:9", "--memory", "999T"], { BLMV_TOKEN: "t" }), /migrate send: --memory .*"999T"/);
  });

  it("demo --memory 999T, before a destination is started", async () => {
    const r = await blmv(["demo", "--memory", "999T"]);
    expectUsageError(r, /demo: --memory .*"999T"/);
    expect(r.stderr).not.toMatch(/destination/);
  });

  it.each([
    [["migrate", "send", "--to", "ws://127.0.0.1:9", "--xbzrle-cache", "9T"], "--xbzrle-cache"],
    [["migrate", "send", "--to", "ws://127.0.0.1:9", "--bandwidth", "fast"], "--bandwidth"],
    [["migrate", "send", "--to", "ws://127.0.0.1:9", "--progress", "loud"], "--progress"],
    [["migrate", "listen", "--port", "0", "--max-memory", "lots"], "--max-memory"],
  ])("blmv %j names %s", async (args, option) => {
    expectUsageError(await blmv(args, { BLMV_TOKEN: "t" }), option);
  });

  it("compare refuses a working set larger than the guest, naming the option and the guest's size", async () => {
    const r = await blmv(["compare", "--working-set", "8M,32M,128M"]);
    expectUsageError(r, /--working-set 128M does not fit in a guest of 64\.0 MiB \(--memory 64M\)/);
  });
});

describe.concurrent("record blames the script's line", () => {
  const dir = mkdtempSync(join(tmpdir(), "blmv-record-"));
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  it.each([
    ["throws", 'export default function (m) {\n  m.outb(0x20, 0x11);\n  throw new Error("no such device");\n}\n', /throws\.mjs:3: no such device/],
    ["bad-port", "export default function (m) {\n  m.outb(0x20, 0x11);\n  m.outb(0x10000, 1);\n}\n", /bad-port\.mjs:3: outb: port 0x10000 is too large/],
    ["bad-msr", "export default function (m) {\n\n  m.wrmsr(0x1b, -1n);\n}\n", /bad-msr\.mjs:3: wrmsr: value -1 is not a 64-bit bigint/],
    ["syntax", "export default function (m) {\n  m.outb(0x20,, 1);\n}\n", /cannot load syntax\.mjs:2: /],
  ])("a script that %s: exit 2, the line, nothing written", async (name, text, message) => {
    const script = join(dir, `${name}.mjs`);
    const output = join(dir, `${name}.trace`);
    writeFileSync(script, text);
    const r = await blmv(["record", `${name}.mjs`, "-o", output], {}, dir);
    expect(r.status, r.stderr).toBe(EXIT_BAD_INPUT);
    expect(r.stderr).toMatch(message);
    expect(r.stderr).not.toMatch(/internal error|\.trace:\d/);
    expect(existsSync(output)).toBe(false);
  });
});

describe("migrate send against a listener", () => {
  // A listener with the default limits (4 GiB guests at most), as `migrate listen` starts it.
  const destination = { url: "", token: "cli-manners-Q7vK2pX9mR4tW8zB3nL6yD1f" };
  const listener = spawn(process.execPath, [CLI, "migrate", "listen", "--port", "0", "--json"], {
    env: { ...process.env, BLMV_TOKEN: destination.token },
    stdio: ["ignore", "pipe", "inherit"],
  });
  beforeAll(async () => {
    for await (const line of createInterface({ input: listener.stdout })) {
      const e = JSON.parse(line) as { event: string; url?: string };
      if (e.event === "listening") {
        destination.url = e.url!;
        break;
      }
    }
  });
  afterAll(() => {
    listener.kill();
  });
  const send = (args: string[]) => ["migrate", "send", "--to", destination.url, "--migrate-after", "0.1", ...args];

  it("--memory 8G against a 4 GiB listener: human sizes, its --max-memory, exit 2", async () => {
    const r = await blmv(send(["--memory", "8G", "--duration", "0.3", "--progress", "none"]), { BLMV_TOKEN: destination.token });
    expect(r.status, r.stdout + r.stderr).toBe(EXIT_BAD_INPUT);
    expect(r.stdout).toMatch(/8\.00 GiB exceeds this destination's limit of 4\.00 GiB \(the listener's --max-memory\)/);
    expect(r.stdout).not.toMatch(/8589934592/);
  });

  it("without a terminal, progress goes to stderr as lines, and a downtime over the limit is flagged", async () => {
    const r = await blmv(send(["--memory", "16M", "--duration", "2", "--bandwidth", "8M", "--downtime-limit", "1", "--max-rounds", "2"]), { BLMV_TOKEN: destination.token });
    expect(r.status, r.stderr).toBe(0);
    const lines = r.stderr.trimEnd().split("\n");
    expect(lines.length).toBeGreaterThanOrEqual(3);
    for (const line of lines) expect(line).toMatch(/^ +\d+\.\d s {2}(round \d+|setup|stop-and-copy|commit|finishing|post-copy) {2}sent /);
    // At most one line per interval within a phase: a round of pre-copy repeats only after LINE_INTERVAL_MS.
    expect(lines.filter((l) => / round 0 /.test(l)).length).toBeLessThanOrEqual(1 + Math.ceil(r.ms / LINE_INTERVAL_MS));
    expect(r.stdout).toMatch(/downtime +\S+ ms {2}\(expected [^)]*, limit 1\.00 ms\) {2}OVER THE LIMIT by /);
  });

  it("--progress json writes one JSON object per line on stderr", async () => {
    const r = await blmv(send(["--memory", "16M", "--duration", "1.5", "--progress", "json", "--json"]), { BLMV_TOKEN: destination.token });
    expect(r.status, r.stderr).toBe(0);
    const events = r.stderr.trim().split("\n").map((l) => JSON.parse(l) as { event: string; phase: string; sentBytes: number; elapsedMs: number });
    expect(events.every((e) => e.event === "progress" && typeof e.sentBytes === "number" && typeof e.elapsedMs === "number")).toBe(true);
    expect(events.map((e) => e.phase)).toEqual(expect.arrayContaining(["setup", "stop-and-copy", "finishing"]));
    expect((JSON.parse(r.stdout) as { status: string; downtimeOverLimit: boolean }).status).toBe("completed");
  });

  it.each<[string, string[]]>([
    ["", []],
    [" with the monitor on", ["--http", "0"]],
  ])("Ctrl-C cancels the migration at once%s: a clear message, exit 130, no wait for the guest's run", async (_, monitor) => {
    // A slow link and a long run: the migration would take many seconds, the guest's run 60.
    const child = spawn(process.execPath, [CLI, ...send(["--memory", "64M", "--bandwidth", "2M", "--duration", "60", "--progress", "json", ...monitor])], {
      env: { ...process.env, BLMV_TOKEN: destination.token },
      stdio: ["ignore", "pipe", "pipe"],
    });
    let stdout = "";
    let stderr = "";
    child.stdout.on("data", (d: Buffer) => (stdout += d.toString()));
    const precopy = new Promise<void>((resolve) =>
      child.stderr.on("data", (d: Buffer) => {
        stderr += d.toString();
        if (/"phase":"pre-copy"/.test(stderr)) resolve();
      }),
    );
    const exited = new Promise<number | null>((resolve) => child.once("exit", (code) => resolve(code)));
    await precopy;
    const sent = Date.now();
    child.kill("SIGINT");
    const code = await exited;
    const ms = Date.now() - sent;
    expect(code, stderr).toBe(EXIT_INTERRUPTED);
    expect(ms).toBeLessThan(10_000);
    expect(stderr).toMatch(/Ctrl-C: cancelling the migration/);
    expect(stdout).toMatch(/cancelled before the commit: the guest keeps running on the source, unchanged/);
    expect(stdout).toMatch(/the guest was running, untouched, at \d+\.\d+ s virtual of 60\.000 s when blmv stopped/);
    if (monitor.length > 0) expect(stderr).toMatch(/^monitor: http:\/\/127\.0\.0\.1:\d+\//m);
  }, 60_000);
});
