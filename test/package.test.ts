// The npm package as a user gets it: `npm pack` of the built tree, installed offline into an
// empty project, then `npx blmv --version`, a replay of a scenario trace, and an import of the
// package's API. docs/usage.md describes the package.

import { execFile } from "node:child_process";
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { promisify } from "node:util";
import { afterAll, beforeAll, describe, expect, it } from "vitest";

const run = promisify(execFile);
const ROOT = resolve(import.meta.dirname, "..");
const PACKAGE = JSON.parse(readFileSync(join(ROOT, "package.json"), "utf8")) as { name: string; version: string; license: string; dependencies: Record<string, string>; bin: Record<string, string>; engines: Record<string, string> };
const TRACE = join(ROOT, "traces/scenarios/pic-priority.trace");

interface LockEntry {
  dev?: boolean;
  devOptional?: boolean;
  optional?: boolean;
  [field: string]: unknown;
}

/**
 * The empty project's package.json and lock file: the tarball, and the package's run-time
 * dependencies at the versions this repository's lock pins. With them npm installs from the
 * cache by integrity alone, as `npm ci` left it, without asking the registry for any metadata.
 */
function writeProject(dir: string, tarball: string): void {
  const spec = `file:${tarball}`;
  const lock = JSON.parse(readFileSync(join(ROOT, "package-lock.json"), "utf8")) as { packages: Record<string, LockEntry> };
  const packages: Record<string, unknown> = {
    "": { name: "empty-project", version: "1.0.0", dependencies: { [PACKAGE.name]: spec } },
    [`node_modules/${PACKAGE.name}`]: { version: PACKAGE.version, resolved: spec, license: PACKAGE.license, dependencies: PACKAGE.dependencies, bin: PACKAGE.bin, engines: PACKAGE.engines },
  };
  for (const [path, entry] of Object.entries(lock.packages)) {
    if (!path.startsWith("node_modules/") || entry.dev) continue;
    // Dev-or-optional: optional for a project without this one's dev dependencies.
    const { devOptional, ...rest } = entry;
    packages[path] = devOptional ? { ...rest, optional: true } : rest;
  }
  writeFileSync(join(dir, "package.json"), JSON.stringify({ name: "empty-project", version: "1.0.0", private: true, dependencies: { [PACKAGE.name]: spec } }, null, 2));
  writeFileSync(join(dir, "package-lock.json"), JSON.stringify({ name: "empty-project", version: "1.0.0", lockfileVersion: 3, requires: true, packages }, null, 2));
}

describe("the npm package", () => {
  const packDir = mkdtempSync(join(tmpdir(), "blmv-pack-"));
  const project = mkdtempSync(join(tmpdir(), "blmv-project-"));
  const env = { ...process.env, npm_config_audit: "false", npm_config_fund: "false", npm_config_update_notifier: "false" };
  let installed = "";

  beforeAll(async () => {
    // The tree is built (npm test builds first); packing it again would only repeat the build.
    const { stdout } = await run("npm", ["pack", "--ignore-scripts", "--json", "--pack-destination", packDir], { cwd: ROOT, env });
    const tarball = join(packDir, (JSON.parse(stdout) as { filename: string }[])[0].filename);
    writeProject(project, tarball);
    await run("npm", ["install", "--offline", "--no-audit", "--no-fund"], { cwd: project, env });
    installed = join(project, "node_modules", PACKAGE.name);
  }, 170_000);

  afterAll(() => {
    rmSync(packDir, { recursive: true, force: true });
    rmSync(project, { recursive: true, force: true });
  });

  it("holds what runs: the JS, its declarations, the core and the monitor's page", () => {
    for (const file of ["dist/src/index.js", "dist/src/index.d.ts", "dist/src/cli/main.js", "dist/assembly/abi/codes.js", "build/core.wasm", "web/monitor/index.html", "web/monitor/app.js"]) {
      expect(existsSync(join(installed, file)), file).toBe(true);
    }
    expect(existsSync(join(installed, "src")), "TypeScript sources stay out").toBe(false);
    expect(existsSync(join(installed, "test")), "tests stay out").toBe(false);
  });

  it("npx blmv --version prints the package's version", async () => {
    const { stdout } = await run("npx", ["--offline", "blmv", "--version"], { cwd: project, env });
    expect(stdout.trim()).toBe(PACKAGE.version);
  }, 60_000);

  it("npx blmv replay replays a scenario trace without a mismatch", async () => {
    const { stdout } = await run("npx", ["--offline", "blmv", "replay", TRACE, "--json"], { cwd: project, env });
    const report = JSON.parse(stdout) as { events: number; mismatchCount: number };
    expect(report.events).toBeGreaterThan(0);
    expect(report.mismatchCount).toBe(0);
  }, 60_000);

  it("import() of the package gives its API with types", async () => {
    const script = `import("${PACKAGE.name}").then(async (m) => {
      const machine = m.Machine.create();
      const { header, events } = await m.readTraceFile(${JSON.stringify(TRACE)});
      const report = await m.replayEvents(header, events, {});
      console.log(JSON.stringify({ machine: typeof machine.outb, mismatches: report.mismatchCount, events: report.events, size: m.formatBytes(1 << 20), listen: typeof m.listen, migrate: typeof m.bootAndMigrate }));
    });`;
    const { stdout } = await run(process.execPath, ["-e", script], { cwd: project, env });
    expect(JSON.parse(stdout)).toEqual({ machine: "function", mismatches: 0, events: expect.any(Number), size: "1.00 MiB", listen: "function", migrate: "function" });
    const types = readFileSync(join(installed, "dist/src/index.d.ts"), "utf8");
    expect(types).toMatch(/export \{[^}]*\bMachine\b/);
    const manifest = JSON.parse(readFileSync(join(installed, "package.json"), "utf8")) as { exports: { ".": { types: string } } };
    expect(existsSync(join(installed, manifest.exports["."].types))).toBe(true);
  }, 60_000);
});
