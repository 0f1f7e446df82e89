// `npm start` / `blmv demo`: a destination in a second process, a guest booted here, a live
// migration while the guest runs, the rest of its run on the destination, and the proof: its
// final digest equals that of a run that was never migrated.

import { writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { GUEST_OPTIONS, MIGRATION_OPTIONS, REPORT_OPTIONS, parseGuestAndLink, progressMode } from "./migrate-options.js";
import { adjust, defineCommand, type Parsed } from "./command.js";
import { EXIT_FAILED, EXIT_INTERRUPTED, EXIT_OK, checkWritable } from "./usage.js";
import { cancelOnInterrupt } from "./interrupt.js";
import { progressReporter } from "../migrate/report/progress.js";
import { HTTP_OPTIONS, httpOption, serveMonitor } from "./monitor.js";
import { SourceMonitor } from "../monitor/source-status.js";
import { startDestinationProcess } from "./destination-process.js";
import { referenceDigest } from "../migrate/run/guest-run.js";
import { formatReport, roundChartSvg } from "../migrate/report/report.js";
import { bootAndMigrate } from "../migrate/run/run.js";
import { formatBytes, formatRate } from "../migrate/report/units.js";

const DEMO_OPTIONS = adjust(
  { ...GUEST_OPTIONS, ...MIGRATION_OPTIONS, ...REPORT_OPTIONS, ...HTTP_OPTIONS },
  {
    // A slower link and a tighter limit than \`migrate send\`'s, so that pre-copy takes a few rounds.
    bandwidth: { default: "1Gbit", defaultText: undefined },
    "downtime-limit": { default: "50" },
    // Two CPUs, so that the demo moves IPIs, start-up state and a local APIC per CPU.
    cpus: { default: "2" },
    svg: { defaultText: "a file in the temporary folder, printed" },
  },
);

export const demo = defineCommand({
  name: "demo",
  synopsis: "[options]",
  summary: "migrate a guest live to a destination process and verify it (npm start)",
  about:
    "Starts a destination process, boots a guest here, migrates it live, lets it finish on the\n" +
    "destination and checks its final digest against a run that was never migrated. Its link is\n" +
    "slower and its downtime limit tighter than migrate send's, so that pre-copy takes a few rounds,\n" +
    "and its guest has two CPUs.",
  options: DEMO_OPTIONS,
  run: runDemo,
});

async function runDemo({ values }: Parsed<typeof DEMO_OPTIONS>): Promise<number> {
  const { spec, link } = parseGuestAndLink("demo", values);
  const progress = progressReporter(progressMode("demo", values.progress));
  const { svg, json } = values;
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
      `source: booting a ${spec.workload} guest (${formatBytes(spec.memoryBytes)}, ${spec.cpus} ${spec.cpus === 1 ? "CPU" : "CPUs"}, ${spec.interrupts} interrupts) in this process ${process.pid}; ` +
        `it runs in real time and migrates at ${link.migrateAtNs / 1e9} s over a ${link.bandwidth ? formatRate(link.bandwidth) : "unlimited"} link`,
    );
    const interrupt = cancelOnInterrupt(progress);
    const result = await bootAndMigrate(spec, { ...link, url, token, progress, signal: interrupt.signal, stopGuest: interrupt.signal, control: monitor?.control }).finally(() =>
      interrupt.dispose(),
    );
    const final = result.report.destination?.digest;
    monitor?.finish(result.report, { final: final ?? (result.source?.finished ? result.source.digest : undefined), reference });
    if (interrupt.signal.aborted) {
      if (!json) console.log(formatReport(result.report));
      return EXIT_INTERRUPTED;
    }
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
