// B6's vitest setup file: counts the fast-check cases each test checks (every fc.assert and
// fc.check, through a global plugin) and the CPU time it took, and leaves both in the test's
// meta, which vitest's JSON report carries to bench/devices.ts. See docs/performance.md (B6).

import fc from "fast-check";
import { afterEach, beforeEach } from "vitest";

declare module "vitest" {
  interface TaskMeta {
    /** fast-check cases this test ran to completion (skipped ones by fc.pre not counted). */
    propertyCases?: number;
    /** CPU time of the test's process while it ran (user + system, ms): what load does not blur. */
    cpuMs?: number;
  }
}

let cases = 0;
let cpuAtStart = process.cpuUsage();

fc.installGlobalPlugin(() => ({
  onAllRunsComplete(details) {
    cases += details.numRuns;
  },
}));

beforeEach(() => {
  cases = 0;
  cpuAtStart = process.cpuUsage();
});

afterEach((context) => {
  const cpu = process.cpuUsage(cpuAtStart);
  context.task.meta.propertyCases = cases;
  context.task.meta.cpuMs = (cpu.user + cpu.system) / 1000;
});
