// `npm start` / `blmv demo`: a destination in a second process, a guest booted here, a live
// migration while the guest runs, the rest of its run on the destination, and the proof: its
// final digest equals that of a run that was never migrated.

import { spawn, type ChildProcess } from "node:child_process";
import { writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createInterface } from "node:readline";
import { fileURLToPath } from "node:url";
import { GUEST_OPTIONS, GUEST_OPTIONS_HELP, parseGuestAndLink } from "../cli/migrate-options.js";
import { EXIT_FAILED, EXIT_OK, checkWritable, parseOptions } from "../cli/usage.js";
import { TOKEN_ENV, generateToken } from "./auth.js";
import { referenceDigest } from "./guest-run.js";
import { formatReport, roundChartSvg } from "./report.js";
import { bootAndMigrate } from "./run.js";
import { formatBytes, formatRate } from "./units.js";

export const DEMO_USAGE = `usage: blmv demo [guest and link options]

Starts a destination process, boots a guest here, migrates it live, lets it finish on the
destination and checks its final digest against a run that was never migrated.
Its own defaults: a 1Gbit link and a 50 ms downtime limit (so that pre-copy takes a few
rounds); 64M of memory, the uniform workload and APIC interrupts as for \`migrate send\`.

${GUEST_OPTIONS_HELP}`;

const CLI = fileURLToPath(new URL("../cli/main.js", import.meta.url));
const STARTUP_TIMEOUT_MS = 15_000;

export async function runDemo(argv: string[]): Promise<number> {
  if (argv.includes("--help") || argv.includes("-h")) {
    console.log(DEMO_USAGE);
    return EXIT_OK;
  }
  const demoDefaults = { ...GUEST_OPTIONS, bandwidth: { type: "string", default: "1Gbit" }, "downtime-limit": { type: "string", default: "50" } } as const;
  const { values } = parseOptions("demo", argv, demoDefaults);
  const { spec, link, svg, json } = parseGuestAndLink("demo", values);
  if (svg) await checkWritable("demo", svg);
  const log = json ? () => undefined : (s: string) => console.log(s);

  const token = generateToken();
  const destination = spawn(process.execPath, [CLI, "migrate", "listen", "--port", "0", "--once", "--json"], {
    env: { ...process.env, [TOKEN_ENV]: token },
    stdio: ["ignore", "pipe", "inherit"],
  });
  let finished = false;
  try {
    const url = await destinationUrl(destination);
    log(`destination process ${destination.pid} listens on ${url}`);
    log(`reference run: the same guest, never migrated, to ${spec.endNs / 1e9} s virtual…`);
    const reference = referenceDigest(spec);
    log(`  digest ${reference}`);
    log(
      `source: booting a ${spec.workload} guest (${formatBytes(spec.memoryBytes)}, ${spec.interrupts} interrupts) in this process ${process.pid}; ` +
        `it runs in real time and migrates at ${link.migrateAtNs / 1e9} s over a ${link.bandwidth ? formatRate(link.bandwidth) : "unlimited"} link`,
    );
    const result = await bootAndMigrate(spec, { ...link, url, token });
    const final = result.report.destination?.digest;
    finished = final !== undefined;
    const identical = final === reference;
    const chart = svg ?? join(tmpdir(), `blmv-migration-${process.pid}.svg`);
    writeFileSync(chart, roundChartSvg(result.report));
    if (json) {
      console.log(JSON.stringify({ ...result.report, guest: spec, verification: { referenceDigest: reference, finalDigest: final, identical }, chart }, null, 2));
    } else {
      console.log(formatReport(result.report));
      console.log(`  chart             ${chart}`);
      console.log(
        identical
          ? `\nVERIFIED: the guest finished on the destination (process ${destination.pid}) with the digest of the run that was never migrated.`
          : `\nNOT VERIFIED: final digest ${final ?? "(none: the guest did not finish on the destination)"} differs from the reference ${reference}.`,
      );
    }
    return result.report.status === "completed" && identical ? EXIT_OK : EXIT_FAILED;
  } finally {
    await stopChild(destination, finished);
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

/**
 * The destination exits by itself once its guest has finished (--once); after a failed
 * migration it would wait for another source, so it is told to stop.
 */
async function stopChild(child: ChildProcess, finished: boolean): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise<void>((r) => child.once("exit", () => r()));
  const timer = setTimeout(() => child.kill("SIGTERM"), finished ? 3000 : 0);
  await exited;
  clearTimeout(timer);
}
