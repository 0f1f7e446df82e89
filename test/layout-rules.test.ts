// The import rules of .dependency-cruiser.cjs bite: a fixture tree breaking each rule once is
// reported rule by rule, imports the layers allow pass, and the real tree breaks none.
// docs/architecture.md describes the layers.

import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { cruise, type ICruiseOptions, type ICruiseResult } from "dependency-cruiser";
import extractDepcruiseOptions from "dependency-cruiser/config-utl/extract-depcruise-options";
import extractTSConfig from "dependency-cruiser/config-utl/extract-ts-config";
import { afterAll, beforeAll, describe, expect, it } from "vitest";

const root = resolve(dirname(fileURLToPath(import.meta.url)), "..");
let options: ICruiseOptions;

interface Violation {
  rule: string;
  /** The importing and imported module, or for a cycle every module on it (sorted). */
  modules: string[];
}

async function violations(baseDir: string, folders: string[], tsConfig?: string): Promise<Violation[]> {
  const { output } = await cruise(
    folders,
    { ...options, baseDir, validate: true },
    undefined,
    tsConfig ? { tsConfig: extractTSConfig(join(baseDir, tsConfig)) } : {},
  );
  return (output as ICruiseResult).summary.violations.map((v) => ({
    rule: v.rule.name,
    modules: v.cycle ? v.cycle.map((step) => step.name).sort() : [v.from, v.to],
  }));
}

/** Each file's imports; the comments say which rule an import breaks. */
const FIXTURE: Record<string, string[]> = {
  "assembly/common/fields.ts": [],
  "assembly/registers/pic.ts": ["../common/fields"],
  "assembly/hypervisor/bus.ts": [],
  // Allowed: a shadow reads the programming model and the hardware bus.
  "assembly/hypervisor/pic/shadow.ts": ["../../registers/pic", "../bus"],
  // honest-capture-and-rebuild: reconstruction reaching into a chip model.
  "assembly/hypervisor/pic/probe.ts": ["../../devices/pic"],
  // honest-capture-and-rebuild: capture reaching into the board.
  "assembly/hypervisor/apic/record.ts": ["../../board/board"],
  // devices-below-hypervisor: a chip model reaching up into the hypervisor.
  "assembly/devices/pic.ts": ["../registers/pic", "../hypervisor/bus"],
  // core-interface-is-the-top: the board importing the wasm interface (codes.ts is allowed).
  "assembly/board/board.ts": ["../devices/pic", "../abi/codes", "../abi/instance"],
  "assembly/abi/codes.ts": [],
  "assembly/abi/instance.ts": ["./codes"],
  // no-cycles: two host modules importing each other (one of them for a type only).
  "src/trace/event.ts": ["./parse.js"],
  "src/trace/parse.ts": ["type:./event.js"],
  // library-below-cli: the library importing the command line.
  "src/migrate/run/run.ts": ["../../cli/usage.js"],
  "src/cli/usage.ts": [],
  // Allowed: the command line drives the library.
  "src/cli/main.ts": ["./usage.js", "../migrate/run/run.js"],
  // no-tests-in-the-product: product code importing a test helper.
  "src/core/machine.ts": ["../../test/helper.js"],
  "test/helper.ts": [],
  // Allowed: tests import the product.
  "test/machine.test.ts": ["./helper.js", "../src/core/machine.js"],
};

function writeFixture(dir: string): void {
  for (const [path, imports] of Object.entries(FIXTURE)) {
    const lines = imports.map((target, i) =>
      target.startsWith("type:") ? `import type { T as T${i} } from "${target.slice(5)}";` : `import { x as x${i} } from "${target}";`,
    );
    lines.push("export type T = number;", "export const x = 1;");
    mkdirSync(dirname(join(dir, path)), { recursive: true });
    writeFileSync(join(dir, path), lines.join("\n") + "\n");
  }
}

describe("the layout rules", () => {
  let fixture: string;
  beforeAll(async () => {
    options = await extractDepcruiseOptions(join(root, ".dependency-cruiser.cjs"));
    fixture = mkdtempSync(join(tmpdir(), "blmv-layout-"));
    writeFixture(fixture);
  });
  afterAll(() => rmSync(fixture, { recursive: true, force: true }));

  it("report every broken rule by name, at the import that breaks it, and nothing the layers allow", async () => {
    const found = await violations(fixture, ["assembly", "src", "test"]);
    const order = (a: Violation, b: Violation) => `${a.rule} ${a.modules}`.localeCompare(`${b.rule} ${b.modules}`);
    expect(found.sort(order)).toEqual(
      [
        { rule: "honest-capture-and-rebuild", modules: ["assembly/hypervisor/pic/probe.ts", "assembly/devices/pic.ts"] },
        { rule: "honest-capture-and-rebuild", modules: ["assembly/hypervisor/apic/record.ts", "assembly/board/board.ts"] },
        { rule: "devices-below-hypervisor", modules: ["assembly/devices/pic.ts", "assembly/hypervisor/bus.ts"] },
        { rule: "core-interface-is-the-top", modules: ["assembly/board/board.ts", "assembly/abi/instance.ts"] },
        { rule: "no-cycles", modules: ["src/trace/event.ts", "src/trace/parse.ts"] },
        { rule: "library-below-cli", modules: ["src/migrate/run/run.ts", "src/cli/usage.ts"] },
        { rule: "no-tests-in-the-product", modules: ["src/core/machine.ts", "test/helper.ts"] },
      ].sort(order),
    );
  });

  it("hold on the real tree", async () => {
    expect(await violations(root, ["assembly", "src", "bench", "test"], "tsconfig.json")).toEqual([]);
  });
});
