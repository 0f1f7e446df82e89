// `blmv resume <snapshot>`: continue a paused guest that a source saved when it could not know
// who owned it (its commit unconfirmed), and run it to the end of its run. docs/security.md.

import { openSnapshot } from "./migrate.js";
import { defineCommand } from "./command.js";
import { EXIT_OK, UsageError } from "./usage.js";

export const resume = defineCommand({
  name: "resume",
  synopsis: "<snapshot> [--json]",
  summary: "continue a paused guest a source saved when its migration's outcome stayed unknown",
  about:
    "Continues the guest saved in <snapshot> where it was paused (memory, CPUs and devices as the\n" +
    "destination would have received them), runs it to the end of its run and prints its digest:\n" +
    "the same as if it had never been paused. Resume only a guest its destination does not run\n" +
    "(the source's report says why it was saved); to move it instead: blmv migrate send --from.",
  positionals: 1,
  options: {
    json: { type: "boolean", help: "the result as one JSON object" },
  },
  async run({ values, positionals }) {
    const path = positionals[0];
    if (!path) throw new UsageError("resume: missing <snapshot>");
    const { guest, config } = openSnapshot("resume", path);
    const fromNs = guest.now();
    guest.runUntil(config.endNs);
    const result = { snapshot: path, workload: config.workload, cpus: guest.cpus.length, resumedAtNs: fromNs, virtualNs: guest.now(), digest: guest.digest(), ticks: guest.ticks() };
    if (values.json) console.log(JSON.stringify(result));
    else console.log(`${path}: ${config.workload} (${result.cpus} ${result.cpus === 1 ? "CPU" : "CPUs"}) resumed at ${(fromNs / 1e9).toFixed(3)} s virtual, finished at ${(result.virtualNs / 1e9).toFixed(3)} s, ${result.ticks} timer ticks; digest ${result.digest}`);
    return EXIT_OK;
  },
});
