// Every command README.md and docs/*.md show is run here, after the build, and must exit as the
// doc says; the docs' links must lead somewhere inside the repository. docs/usage.md lists the
// commands themselves.
//
// The convention the docs follow, which this test parses:
// - A ```sh block holds commands, one per line; a line ending in `\` continues on the next.
//   Each runs with `sh -c`, in order, from a temporary folder that links to every top-level
//   entry of the repository (so `npx blmv …` and relative paths such as `traces/…` work as from
//   the repository root, and files a command writes land in the temporary folder). A command
//   must exit 0, or N when its line ends with a comment starting `# exit N` (`# exit 2, why`);
//   other `# …` comments are ignored. A command repeated in another place runs once. The first `npx blmv …` goes through
//   npx, to check that it finds the command; the others run the same program straight (npx's
//   own start-up would take most of this test's time).
// - A ```text block holds output, a ```ts block code: neither is run.
// - A ```console block shows commands this test does not run, each on a line starting with `$ `
//   (the lines after it are its output). Every such command must be listed in NOT_RUN below with
//   the reason, and every entry of NOT_RUN must still appear in a doc.
// - A fenced block with any other language, or none, fails the test: say what it holds.

import { spawnSync } from "node:child_process";
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, symlinkSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join, relative, resolve } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";

const ROOT = resolve(import.meta.dirname, "..");

const MONITOR_CONTROL = "asks the monitor of a migration running in another terminal (test/monitor.test.ts asks a running one from another process)";

/** Commands shown but not run, with the reason. Keep this short: a shown command should run. */
const NOT_RUN: Record<string, string> = {
  "npm install && npm start": "installs packages and rebuilds; the test runs after a build, and the demo runs below with small sizes",
  "npm test": "the suite this test is part of",
  "npm run bench": "builds, then runs the benchmarks at full size for a minute; `node dist/bench/run.js --quick` runs here",
  "npm run bench -- --quick": "builds first (test/bench.test.ts runs the quick mode)",
  "npm run bench -- --only B1,B5": "builds first, then runs two full-size benchmarks",
  "npm run bench -- --peer qemu": "needs QEMU installed and runs six 1 GiB QEMU migrations beside B2 and B3; test/bench-peer.test.ts checks the option and the QMP client",
  "sudo scripts/netns-migrate.sh": "needs root to create network namespaces",
  "npm pack": "builds the package again (its prepare script); test/package.test.ts packs and installs it",
  "npx blmv migrate listen --port 7000 --once": "waits for a source in another terminal (the demo runs both ends here)",
  "BLMV_TOKEN=Az_hXPSKGErR5iKMdzbg1NYIY8mOqxMH npx blmv migrate send --to ws://127.0.0.1:7000 --memory 16M --workload hot --interrupts pic --duration 2 --verify":
    "needs the listener of the other terminal",
  "traces/qemu-state/record.sh": "boots Linux under QEMU six times (needs qemu-system-x86 and apt); the tests read the streams it recorded",
  "npx blmv demo --http 8080": "serves the page of a migration for a browser to watch, on a fixed port (test/monitor.test.ts and the browser tests serve it on a free one)",
  "export BLMV_TOKEN=$(node -e 'console.log(require(\"crypto\").randomBytes(24).toString(\"base64url\"))')": "sets the shell's token for the two commands that follow, in their terminals",
  "npx blmv migrate listen --port 9000 --http 8081": "waits for a source in another terminal, serving its page",
  "npx blmv migrate send --to ws://127.0.0.1:9000 --http 8080 --verify": "needs the listener of the other terminal",
  "blmv migrate status --http 8080": MONITOR_CONTROL,
  "blmv migrate status --http 8080 --json": MONITOR_CONTROL,
  "blmv migrate set --http 8080 --downtime-limit 100 --bandwidth 1Gbit": MONITOR_CONTROL,
  "blmv migrate postcopy --http 8080": MONITOR_CONTROL,
  "blmv migrate cancel --http 8080": MONITOR_CONTROL,
  "npx blmv compare --memory 256M --workload uniform --dirty-rate 256M --working-set 8M,32M,64M,128M --bandwidth 1Gbit --downtime-limit 100 --duration 8 --migrate-after 1 --svg docs/techniques-compared.svg":
    "16 migrations of a 256 MiB guest, about a minute; a small comparison runs from README.md",
  "npx blmv compare --techniques precopy,postcopy,hybrid --no-throttle --max-rounds 10 --memory 256M --dirty-rate 256M --working-set 32M,128M --bandwidth 1Gbit --downtime-limit 100 --duration 14 --migrate-after 1":
    "6 migrations of a 256 MiB guest with 14 s runs",
};

interface Block {
  file: string;
  line: number;
  language: string;
  lines: string[];
}

interface Command {
  file: string;
  line: number;
  text: string;
  exitCode: number;
}

const DOCS = ["README.md", ...readdirSync(join(ROOT, "docs")).filter((f) => f.endsWith(".md")).sort().map((f) => `docs/${f}`)];

function blocks(file: string): Block[] {
  const found: Block[] = [];
  let open: Block | undefined;
  readFileSync(join(ROOT, file), "utf8")
    .split("\n")
    .forEach((text, i) => {
      const fence = /^\s*```(\S*)\s*$/.exec(text);
      if (fence && !open) open = { file, line: i + 1, language: fence[1]!, lines: [] };
      else if (fence && open) {
        found.push(open);
        open = undefined;
      } else open?.lines.push(text);
    });
  if (open) throw new Error(`${file}:${open.line}: a fenced block is never closed`);
  return found;
}

/** The block's lines with `\` continuations joined, each with its line number. */
function joined(block: Block): { line: number; text: string }[] {
  const out: { line: number; text: string }[] = [];
  let pending: { line: number; text: string } | undefined;
  block.lines.forEach((raw, i) => {
    const line = block.line + 1 + i;
    const text = pending ? `${pending.text} ${raw.trim()}` : raw.trim();
    const start = pending?.line ?? line;
    if (text.endsWith("\\")) pending = { line: start, text: text.slice(0, -1).trim() };
    else {
      pending = undefined;
      out.push({ line: start, text });
    }
  });
  return out;
}

/** The command without its trailing comment, and the exit code a `# exit N` comment asks for. */
function parseCommand(text: string): { command: string; exitCode: number } {
  const comment = /\s+#\s*(.*)$/.exec(text);
  const command = (comment ? text.slice(0, comment.index) : text).trim();
  const expected = comment ? /^exit (\d+)(?:$|[,;:\s])/.exec(comment[1]!.trim()) : null;
  return { command, exitCode: expected ? Number(expected[1]) : 0 };
}

const allBlocks = DOCS.flatMap(blocks);
const runnable: Command[] = [];
const shown = new Map<string, string>(); // console command → where
const badBlocks: string[] = [];
for (const block of allBlocks) {
  const where = `${block.file}:${block.line}`;
  if (block.language === "sh") {
    for (const { line, text } of joined(block)) {
      if (text === "" || text.startsWith("#")) continue;
      const { command, exitCode } = parseCommand(text);
      if (!runnable.some((c) => c.text === command)) runnable.push({ file: block.file, line, text: command, exitCode });
    }
  } else if (block.language === "console") {
    for (const { line, text } of joined(block)) {
      if (text.startsWith("$ ")) shown.set(parseCommand(text.slice(2)).command, `${block.file}:${line}`);
    }
  } else if (block.language !== "text" && block.language !== "ts") {
    badBlocks.push(`${where}: a \`\`\`${block.language} block (use sh, console, text or ts)`);
  }
}

describe("the docs' code blocks", () => {
  it("use the languages this test knows", () => {
    expect(badBlocks).toEqual([]);
  });
  it("show commands that are either run or listed in NOT_RUN with a reason", () => {
    const unlisted = [...shown].filter(([c]) => !(c in NOT_RUN)).map(([c, where]) => `${where}: ${c}`);
    const stale = Object.keys(NOT_RUN).filter((c) => !shown.has(c));
    expect(unlisted).toEqual([]);
    expect(stale).toEqual([]);
    expect(runnable.length).toBeGreaterThan(10);
  });
});

describe("the README", () => {
  const readme = readFileSync(join(ROOT, "README.md"), "utf8");
  it("is at most 200 lines and starts its usage with the two commands", () => {
    expect(readme.trimEnd().split("\n").length).toBeLessThanOrEqual(200);
    expect(readme).toContain("npm install && npm start");
    expect(readme).toContain("npm test");
  });
});

/** GitHub's anchor for a heading: lower case, punctuation dropped, spaces as hyphens. */
function slug(heading: string): string {
  return heading
    .trim()
    .toLowerCase()
    .replace(/[^\p{L}\p{N} _-]/gu, "")
    .replace(/ /g, "-");
}

function anchors(file: string): Set<string> {
  const seen = new Map<string, number>();
  const out = new Set<string>();
  let fenced = false;
  for (const line of readFileSync(file, "utf8").split("\n")) {
    if (/^\s*```/.test(line)) fenced = !fenced;
    const heading = fenced ? null : /^#{1,6}\s+(.*)$/.exec(line);
    if (!heading) continue;
    const base = slug(heading[1]!);
    const n = seen.get(base) ?? 0;
    seen.set(base, n + 1);
    out.add(n === 0 ? base : `${base}-${n}`);
  }
  return out;
}

describe("the docs' links", () => {
  const markdown = [...DOCS, "traces/README.md", "traces/qemu/logs/README.md"];
  it.each(markdown)("in %s stay inside the repository and lead somewhere", (file) => {
    const problems: string[] = [];
    const text = readFileSync(join(ROOT, file), "utf8").replace(/```[\s\S]*?```/g, "");
    for (const [, target] of text.matchAll(/\]\(([^)\s]+)\)/g)) {
      if (/^[a-z]+:/i.test(target!)) continue;
      const [path, anchor] = target!.split("#") as [string, string | undefined];
      const to = path === "" ? join(ROOT, file) : resolve(ROOT, dirname(file), path);
      if (path.includes("../") || relative(ROOT, to).startsWith("..")) problems.push(`${target}: leaves the folder it is in`);
      else if (!existsSync(to)) problems.push(`${target}: no such file`);
      else if (anchor !== undefined && to.endsWith(".md") && !anchors(to).has(anchor)) problems.push(`${target}: no such heading`);
    }
    expect(problems).toEqual([]);
  });
});

describe("every command the docs show", () => {
  let work = "";
  let bin = "";
  beforeAll(() => {
    work = mkdtempSync(join(tmpdir(), "blmv-docs-"));
    for (const entry of readdirSync(ROOT)) {
      if (entry !== ".git" && entry !== "bench-results") symlinkSync(join(ROOT, entry), join(work, entry));
    }
    bin = join(work, ".bin");
    mkdirSync(bin);
    writeFileSync(join(bin, "blmv"), `#!/bin/sh\nexec node "${join(ROOT, "dist", "src", "cli", "main.js")}" "$@"\n`, { mode: 0o755 });
  });
  afterAll(() => rmSync(work, { recursive: true, force: true }));
  const viaNpx = runnable.find((c) => c.text.startsWith("npx blmv "));

  it.each(runnable.map((c) => [`${c.file}:${c.line}`, c] as const))("%s runs", (_where, command) => {
    const text = command === viaNpx ? command.text : command.text.replace(/\bnpx blmv\b/g, "blmv");
    const run = spawnSync("sh", ["-c", text], {
      cwd: work,
      encoding: "utf8",
      env: { ...process.env, TMPDIR: work, PATH: `${bin}:${process.env["PATH"]}` },
      timeout: 170_000,
    });
    const detail = `${command.text}\n--- stdout\n${run.stdout}\n--- stderr\n${run.stderr}`;
    expect(run.error, detail).toBeUndefined();
    expect(run.status, detail).toBe(command.exitCode);
  }, 180_000);
});
