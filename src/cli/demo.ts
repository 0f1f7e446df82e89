// `npm start` / `blmv demo`: a destination in a second process, a guest booted here, a live
// migration while the guest runs, the rest of its run on the destination, and the proof: its
// final digest equals that of a run that was never migrated.

import { writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { GUEST_OPTIONS, GUEST_OPTIONS_HELP, parseGuestAndLink } from "./migrate-options.js";
import { EXIT_FAILED, EXIT_OK, checkWritable, parseOptions } from "./usage.js";
import { HTTP_OPTION_HELP, httpOption, serveMonitor } from "./monitor.js";
import { SourceMonitor } from "../monitor/source-status.js";
import { startDestinationProcess } from "./destination-process.js";
import { referenceDigest } from "../migrate/run/guest-run.js";
import { formatReport, roundChartSvg } from "../migrate/report/report.js";
import { bootAndMigrate } from "../migrate/run/run.js";
import { formatBytes, formatRate } from "../migrate/report/units.js";

export const DEMO_USAGE = `usage: blmv demo [guest and link options]

Starts a destination process, boots a guest here, migrates it live, lets it finish on the
destination and checks its final digest against a run that was never migrated.
Its own defaults: a 1Gbit link and a 50 ms downtime limit (so that pre-copy takes a few
rounds); 64M of memory, the uniform workload and APIC interrupts as for \`migrate send\`.

${HTTP_OPTION_HELP}
${GUEST_OPTIONS_HELP}`;

export async function runDemo(argv: string[]): Promise<number> {
  if (argv.includes("--help") || argv.includes("-h")) {
    console.log(DEMO_USAGE);
    return EXIT_OK;
  }
  const demoDefaults = { ...GUEST_OPTIONS, bandwidth: { type: "string", default: "1Gbit" }, "downtime-limit": { type: "string", default: "50" }, http: { type: "string" } } as const;
  const { values } = parseOptions("demo", argv, demoDefaults);
  const { spec, link, svg, json } = parseGuestAndLink("demo", values);
  if (svg) await checkWritable("demo", svg);
  const http = httpOption("demo", values.http);
  const log = json ? () => undefined : (s: string) => console.log(s);

  const { child: destination, url, token, stop } = await startDestinationProcess(true);
  let finished = false;
  const monitor = http ? new SourceMonitor({ ...spec, ...link }) : undefined;
  let server;
  try {
    if (monitor && http) server = await serveMonitor("demo", monitor, http, token);
    log(`destination process ${destination.pid} listens on ${url}`);
    log(`reference run: the same guest, never migrated, to ${spec.endNs / 1e9} s virtual…`);
    const reference = referenceDigest(spec);
    log(`  digest ${reference}`);
    log(
      `source: booting a ${spec.workload} guest (${formatBytes(spec.memoryBytes)}, ${spec.interrupts} interrupts) in this process ${process.pid}; ` +
        `it runs in real time and migrates at ${link.migrateAtNs / 1e9} s over a ${link.bandwidth ? formatRate(link.bandwidth) : "unlimited"} link`,
    );
    const result = await bootAndMigrate(spec, { ...link, url, token, control: monitor?.control });
    const final = result.report.destination?.digest;
    monitor?.finish(result.report, { final: final ?? result.source?.digest, reference });
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
    await server?.close();
    // It exits by itself once its guest has finished (--once); after a failed migration it
    // would wait for another source, so it is told to stop.
    await stop(finished ? 3000 : 0);
  }
}
