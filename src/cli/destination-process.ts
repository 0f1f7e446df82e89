// A destination in a second process (`blmv migrate listen --port 0 --json`), as the demo and
// the comparison run it: started with a fresh token, its URL read from its first JSON event.

import { spawn, type ChildProcess } from "node:child_process";
import { createInterface } from "node:readline";
import { fileURLToPath } from "node:url";
import { TOKEN_ENV, generateToken } from "../migrate/transport/auth.js";

const CLI = fileURLToPath(new URL("./main.js", import.meta.url));
const STARTUP_TIMEOUT_MS = 15_000;

export interface DestinationProcess {
  child: ChildProcess;
  url: string;
  token: string;
  /** Waits for it to exit, telling it to stop after `graceMs` (at once by default). */
  stop(graceMs?: number): Promise<void>;
}

/** Starts a destination process; `once` makes it exit after the first guest finished there. */
export async function startDestinationProcess(once: boolean): Promise<DestinationProcess> {
  const token = generateToken();
  const child = spawn(process.execPath, [CLI, "migrate", "listen", "--port", "0", ...(once ? ["--once"] : []), "--json"], {
    env: { ...process.env, [TOKEN_ENV]: token },
    stdio: ["ignore", "pipe", "inherit"],
  });
  const stop = (graceMs = 0): Promise<void> => stopChild(child, graceMs);
  try {
    return { child, url: await destinationUrl(child), token, stop };
  } catch (e) {
    await stop();
    throw e;
  }
}

/** Reads the destination's "listening" line from its JSON output. */
function destinationUrl(child: ChildProcess): Promise<string> {
  return new Promise((resolve, reject) => {
    const lines = createInterface({ input: child.stdout! });
    const timer = setTimeout(() => reject(new Error("the destination process did not start listening in time")), STARTUP_TIMEOUT_MS);
    child.once("exit", (code) => reject(new Error(`the destination process exited (code ${code}) before listening`)));
    lines.on("line", (line) => {
      try {
        const e = JSON.parse(line) as { event?: string; url?: string };
        if (e.event === "listening" && e.url) {
          clearTimeout(timer);
          resolve(e.url);
        }
      } catch {
        // Not one of its JSON events: ignore.
      }
    });
  });
}

async function stopChild(child: ChildProcess, graceMs: number): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise<void>((r) => child.once("exit", () => r()));
  const timer = setTimeout(() => child.kill("SIGTERM"), graceMs);
  await exited;
  clearTimeout(timer);
}
