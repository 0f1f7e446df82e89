// Every command refuses a file it cannot use — missing, a directory, in a folder that does not
// exist — before doing anything, with a message naming the file and exit code 2.

import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { runCli, testToken } from "./migrate-harness.js";

const dir = mkdtempSync(join(tmpdir(), "blmv-files-"));
afterAll(() => rmSync(dir, { recursive: true, force: true }));
const trace = "traces/scenarios/pit-modes.trace";
const missing = join(dir, "missing");
const noFolder = join(dir, "no-folder", "out");
writeFileSync(join(dir, "token"), "   \n", { mode: 0o600 });

describe("files the CLI cannot use", () => {
  it("give a message naming the file and exit code 2", async () => {
    const cases: [string[], RegExp][] = [
      [["replay", missing], /^blmv: replay: cannot read .*missing: no such file or directory$/m],
      [["replay", dir], /^blmv: replay: cannot read .*: is a directory$/m],
      [["compile", dir, "-o", join(dir, "x.btrace")], /^blmv: compile: cannot read .*: is a directory$/m],
      [["compile", trace, "-o", noFolder], /^blmv: compile: cannot write .*no-folder\/out: no such file or directory$/m],
      [["compile", trace, "-o", dir], /^blmv: compile: cannot write .*: is a directory$/m],
      [["import-qemu", dir, "-o", join(dir, "x.trace")], /^blmv: import-qemu: cannot read .*: is a directory$/m],
      [["import-qemu", "test/fixtures/linux-pc-noapic.timed.head.log.gz", "-o", noFolder], /^blmv: import-qemu: cannot write .*no-folder\/out: no such file or directory$/m],
      [["record", missing, "-o", join(dir, "r.trace")], /^blmv: record: cannot read .*missing: no such file or directory$/m],
      [["migrate", "listen", "--port", "0", "--token-file", dir], /^blmv: migrate listen: token file .*: is a directory$/m],
      [["migrate", "listen", "--port", "0", "--token-file", join(dir, "token")], /^blmv: migrate listen: token file .*token is empty$/m],
      [["migrate", "send", "--to", "ws://127.0.0.1:1", "--svg", noFolder], /^blmv: migrate send: cannot write .*no-folder\/out: no such file or directory$/m],
      [["demo", "--svg", noFolder], /^blmv: demo: cannot write .*no-folder\/out: no such file or directory$/m],
    ];
    const runs = await Promise.all(cases.map(([args]) => runCli(args, { BLMV_TOKEN: testToken("t") })));
    runs.forEach((run, i) => {
      expect({ args: cases[i][0], code: run.code }).toEqual({ args: cases[i][0], code: 2 });
      expect(run.stderr).toMatch(cases[i][1]);
    });
  });
});
