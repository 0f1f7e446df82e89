// The test configuration B6 runs the property tests with: the project's own, plus the setup
// file that counts each test's fast-check cases (bench/property-cases.ts; docs/performance.md).

import { defineConfig, mergeConfig } from "vitest/config";
import base from "../vitest.config.js";

export default mergeConfig(base, defineConfig({ test: { setupFiles: ["bench/property-cases.ts"] } }));
