// B6's vitest setup file: counts the fast-check cases each test checks (every fc.assert and
// fc.check, through a global plugin) and leaves the count in the test's meta, which vitest's
// JSON report carries to bench/devices.ts. See docs/performance.md (B6).

import fc from "fast-check";
import { afterEach, beforeEach } from "vitest";

declare module "vitest" {
  interface TaskMeta {
    /** fast-check cases this test ran to completion (skipped ones by fc.pre not counted). */
    propertyCases?: number;
  }
}

let cases = 0;

fc.installGlobalPlugin(() => ({
  onAllRunsComplete(details) {
    cases += details.numRuns;
  },
}));

beforeEach(() => {
  cases = 0;
});

afterEach((context) => {
  context.task.meta.propertyCases = cases;
});
