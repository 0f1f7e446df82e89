// Ctrl-C during a migration (`migrate send`, `demo`): the first cancels it, a second exits at
// once. docs/usage.md.

import type { ProgressReporter } from "../migrate/report/progress.js";
import { EXIT_INTERRUPTED } from "./usage.js";

/**
 * The first Ctrl-C (or SIGTERM) cancels the migration: before the commit it stops at once and
 * the guest stays on the source; after it, only the wait for the destination's report stops. A
 * second one exits at once.
 */
export function cancelOnInterrupt(progress: ProgressReporter): { signal: AbortSignal; dispose(): void } {
  const controller = new AbortController();
  const onSignal = (signal: NodeJS.Signals): void => {
    progress.clear();
    if (controller.signal.aborted) {
      console.error(`blmv: ${signal} again: exiting now`);
      process.exit(EXIT_INTERRUPTED);
    }
    console.error(`\nblmv: ${signal === "SIGINT" ? "Ctrl-C" : signal}: cancelling the migration: before the commit the guest stays on the source, unchanged; once committed it stays on the destination (Ctrl-C again exits at once)`);
    controller.abort();
  };
  process.on("SIGINT", onSignal).on("SIGTERM", onSignal);
  return {
    signal: controller.signal,
    dispose: () => void process.off("SIGINT", onSignal).off("SIGTERM", onSignal),
  };
}
