// Where the package is installed: its root (the folder of its package.json) and what that file
// says. The core finds build/core.wasm there, the command line its version. docs/usage.md.

import { existsSync, readFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

export const PACKAGE_NAME = "blmvisor-model";

export interface PackageInfo {
  root: string;
  name: string;
  version: string;
}

let found: PackageInfo | undefined;

/** The nearest package.json above this file named blmvisor-model (src/ in tests, dist/src/ once built). */
export function packageInfo(): PackageInfo {
  if (found) return found;
  for (let dir = dirname(fileURLToPath(import.meta.url)); ; dir = dirname(dir)) {
    const file = join(dir, "package.json");
    if (existsSync(file)) {
      const { name, version } = JSON.parse(readFileSync(file, "utf8")) as { name?: string; version?: string };
      if (name === PACKAGE_NAME && version) return (found = { root: dir, name, version });
    }
    if (dirname(dir) === dir) throw new Error(`the ${PACKAGE_NAME} package.json was not found above ${fileURLToPath(import.meta.url)}`);
  }
}
