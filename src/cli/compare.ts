// `blmv compare`: runs the comparison of migration techniques against a destination process
// and prints its table (or JSON), optionally with the SVG chart.

import { writeFileSync } from "node:fs";
import { comparisonChartSvg } from "../migrate/report/compare-chart.js";
import { compareTechniques, formatComparison, type CompareSetting } from "../migrate/run/compare.js";
import { startDestinationProcess } from "./destination-process.js";
import { TECHNIQUES, type Technique } from "../migrate/source/techniques.js";
import { GUEST_OPTIONS, GUEST_OPTIONS_HELP, parseGuestAndLink } from "./migrate-options.js";
import { EXIT_FAILED, EXIT_OK, UsageError, parseOptions } from "./usage.js";

/** The settings that may take a comma-separated list of values, varied one run after another. */
const VARIED = ["memory", "dirty-rate", "working-set", "bandwidth", "latency"] as const;

export const COMPARE_USAGE = `usage: blmv compare [--techniques LIST] [guest and link options, lists allowed]

Migrates the same deterministic guest with each technique, under each combination of the
settings given as comma-separated lists (--memory, --dirty-rate, --working-set, --bandwidth,
--latency), one run after another, to a destination in a second process. Every run is checked:
the guest must finish on the destination with the digest of a run that was never migrated.
Prints total migration time, downtime, data on the wire, rounds, post-copy faults and the
model's prediction for each run; --json prints the rows, --svg FILE charts total time and
downtime against the first varied setting. Choose --duration long enough for the slowest
migration to end before the guest's run does.

  --techniques LIST     comma-separated, of ${TECHNIQUES.join(", ")} (default all)
  (--technique is refused here: --techniques names them all)
${GUEST_OPTIONS_HELP}`;

export async function runCompare(argv: string[]): Promise<number> {
  const command = "compare";
  const { values } = parseOptions(command, argv, { ...GUEST_OPTIONS, techniques: { type: "string", default: TECHNIQUES.join(",") } });
  if (argv.some((a) => a === "--technique" || a.startsWith("--technique="))) throw new UsageError(`${command}: use --techniques LIST`);
  const techniques = values.techniques.split(",").map((t) => t.trim()) as Technique[];
  for (const t of techniques) if (!TECHNIQUES.includes(t)) throw new UsageError(`${command}: --techniques: unknown technique ${JSON.stringify(t)} (known: ${TECHNIQUES.join(", ")})`);
  const { settings, xLabel, xText } = settingsOf(command, values);
  const json = values.json;

  const destination = await startDestinationProcess(false);
  try {
    if (!json) console.log(`destination process ${destination.child.pid} listens on ${destination.url}; ${techniques.length} techniques × ${settings.length} settings\n`);
    const rows = await compareTechniques(destination, techniques, settings, (row) => {
      if (!json) console.error(`  ${row.setting || "run"} ${row.technique}: ${row.status}${row.digestEqual ? ", digest equal" : ""}`);
    });
    if (values.svg) writeFileSync(values.svg, comparisonChartSvg(rows, xLabel, (x) => xText[x] ?? String(x)));
    if (json) {
      console.log(JSON.stringify({ techniques, settings: settings.map((s) => ({ label: s.label, guest: s.spec, link: s.link })), rows, chart: values.svg }, null, 2));
    } else {
      console.log(`\n${formatComparison(rows)}`);
      if (values.svg) console.log(`\nchart: ${values.svg}`);
    }
    return rows.every((r) => r.status === "completed" && r.digestEqual) ? EXIT_OK : EXIT_FAILED;
  } finally {
    await destination.stop();
  }
}

type Values = Parameters<typeof parseGuestAndLink>[1];

/** Every combination of the listed values, each checked as `migrate send` checks one. */
function settingsOf(command: string, values: Values): { settings: CompareSetting[]; xLabel: string; xText: string[] } {
  const lists = VARIED.map((k): [(typeof VARIED)[number], (string | undefined)[]] => [k, values[k] === undefined ? [undefined] : String(values[k]).split(",")]);
  const varied = lists.filter(([, list]) => list.length > 1);
  let combos: Values[] = [{ ...values }];
  for (const [k, list] of lists) combos = combos.flatMap((c) => list.map((item) => ({ ...c, [k]: item })));
  if (combos.length > 100) throw new UsageError(`${command}: ${combos.length} settings are too many (at most 100)`);
  const [xKey, xList] = varied[0] ?? ["memory", [String(values.memory)]];
  const xText = xList.map(String);
  const settings = combos.map((c) => {
    const { spec, link } = parseGuestAndLink(command, c);
    const label = varied.map(([k]) => `${k}=${String(c[k])}`).join(" ");
    return { label, x: xText.indexOf(String(c[xKey])), spec, link };
  });
  return { settings, xLabel: xKey, xText };
}
