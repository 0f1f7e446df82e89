// Text a peer or a file chose reaches a terminal or a log only escaped and cut: an `error`
// message with escape sequences and line breaks from a peer without the token, and a trace
// whose bad token is a megabyte of escape bytes.

import { spawn } from "node:child_process";
import { createInterface } from "node:readline";
import { Readable } from "node:stream";
import { afterEach, describe, expect, it } from "vitest";
import { printable } from "../src/common/printable.js";
import { readTraceFile } from "../src/trace/reader.js";
import { BareClient, CLI, killChildren, testToken } from "./migrate-harness.js";

afterEach(killChildren);

describe("printable", () => {
  it("escapes control characters and cuts long text", () => {
    expect(printable("a\x1b[2J\nb\tc\x7f\u009b\u202e")).toBe("a\\e[2J\\nb\\tc\\u{7f}\\u{9b}\\u{202e}");
    expect(printable("x".repeat(1000), 10)).toBe("xxxxxxxxxx… (990 more characters)");
  });

  it("a trace error does not echo a megabyte of escape bytes", async () => {
    const text = `blmv-trace 1\n0 outb 0x20 ${"\x1b[31m".repeat(200_000)}\n`;
    const error = await readTraceFile(Readable.from([Buffer.from(text)]), { name: "evil.trace" }).then(() => undefined, (e: Error) => e);
    expect(error?.message).toMatch(/^evil\.trace:2: bad number '\\e\[31m\\e\[31m/);
    expect(error!.message.length).toBeLessThan(400);
    expect(error!.message).not.toMatch(/[\x00-\x1f]/);
  });

  it("the listener's log escapes what a peer without the token says", async () => {
    const child = spawn(process.execPath, [CLI, "migrate", "listen", "--port", "0"], { env: { ...process.env, BLMV_TOKEN: testToken("log") }, stdio: ["ignore", "pipe", "inherit"] });
    const lines: string[] = [];
    try {
      const url = await new Promise<string>((resolve) => createInterface({ input: child.stdout! }).on("line", (l) => (lines.push(l), l.startsWith("listening on ") && resolve(l.split(" ")[2]))));
      const c = await BareClient.connect(url);
      c.send({ t: "error", code: "internal", message: "\x1b[2J\n12:00:00.000 forged: the guest is lost\x07" });
      await c.waitClosed();
      const deadline = Date.now() + 5000;
      while (!lines.some((l) => l.includes("aborted")) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
      const aborted = lines.find((l) => l.includes("aborted"))!;
      expect(aborted).toContain("\\e[2J\\n12:00:00.000 forged: the guest is lost\\u{7}");
      expect(lines.join("\n")).not.toMatch(/\x1b|\x07/);
      expect(lines.some((l) => l.startsWith("12:00:00.000 forged"))).toBe(false);
    } finally {
      // The listener would outlive the test and keep the runner from exiting.
      child.kill("SIGKILL");
    }
  });
});
