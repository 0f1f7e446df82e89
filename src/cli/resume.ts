// `blmv resume <snapshot>`: continue a paused guest that a source saved when it could not know
// who owned it (its commit unconfirmed), and run it to the end of its run. docs/migration.md.

import { openSnapshot } from "./migrate.js";
import { EXIT_OK, UsageError, parseOptions } from "./usage.js";

export const RESUME_USAGE = `usage: blmv resume <snapshot> [--json]

  Continues the guest saved in <snapshot> where it was paused (memory, CPU and devices as the
  destination would have received them) and runs it to the end of its run, then prints its
  digest: the same as if it had never been paused. Resume only a guest whose destination
  does not run it (the source's report says why it was saved); to move it elsewhere instead:
  blmv migrate send --from <snapshot> --to URL.`;

export async function runResume(argv: string[]): Promise<number> {
  const { values, positionals } = parseOptions("resume", argv, { json: { type: "boolean", default: false } }, 1);
  const path = positionals[0];
  if (!path) throw new UsageError(`resume: missing <snapshot>\n${RESUME_USAGE}`);
  const { guest, config } = openSnapshot("resume", path);
  const fromNs = guest.now();
  guest.runUntil(config.endNs);
  const result = { snapshot: path, workload: config.workload, resumedAtNs: fromNs, virtualNs: guest.now(), digest: guest.digest(), ticks: guest.ticks() };
  if (values.json) console.log(JSON.stringify(result));
  else console.log(`${path}: ${config.workload} resumed at ${(fromNs / 1e9).toFixed(3)} s virtual, finished at ${(result.virtualNs / 1e9).toFixed(3)} s, ${result.ticks} timer ticks; digest ${result.digest}`);
  return EXIT_OK;
}
