// `blmv compare`: runs the comparison of migration techniques against a destination process
// and prints its table (or JSON), optionally with the SVG chart. docs/usage.md.

import { writeFileSync } from "node:fs";
import { comparisonChartSvg } from "../migrate/report/compare-chart.js";
import { compareTechniques, formatComparison, type CompareSetting } from "../migrate/run/compare.js";
import { formatBytes, parseSize } from "../migrate/report/units.js";
import { startDestinationProcess } from "./destination-process.js";
import { TECHNIQUES, type Technique } from "../migrate/source/techniques.js";
import { adjust, defineCommand, without, type OptionTable, type OptionValues, type Parsed } from "./command.js";
import { GUEST_OPTIONS, MIGRATION_OPTIONS, parseGuestAndLink } from "./migrate-options.js";
import { EXIT_FAILED, EXIT_OK, UsageError } from "./usage.js";

/** The settings that may take a comma-separated list of values, varied one run after another. */
const VARIED = ["memory", "dirty-rate", "working-set", "bandwidth", "latency"] as const;
type Varied = (typeof VARIED)[number];

const LIST = " (a list: one run per value)";

const COMPARE_OPTIONS = {
  techniques: { type: "string", value: "LIST", default: TECHNIQUES.join(","), group: "the migration", help: `comma-separated, of ${TECHNIQUES.join(", ")}` },
  ...adjust(GUEST_OPTIONS, {
    memory: { help: GUEST_OPTIONS.memory.help + LIST },
    "dirty-rate": { help: GUEST_OPTIONS["dirty-rate"].help + LIST },
    "working-set": { help: GUEST_OPTIONS["working-set"].help + LIST },
  }),
  ...adjust(without(MIGRATION_OPTIONS, "technique"), {
    bandwidth: { help: MIGRATION_OPTIONS.bandwidth.help + LIST },
    latency: { help: MIGRATION_OPTIONS.latency.help + LIST },
  }),
  svg: {
    type: "string",
    value: "FILE",
    group: "output",
    help: "write the chart as SVG: total migration time and downtime of each technique against the first setting given as a list, with the downtime limit",
  },
  json: { type: "boolean", group: "output", help: "print the rows as JSON" },
} as const satisfies OptionTable;

export const compare = defineCommand({
  name: "compare",
  synopsis: "[--techniques LIST] [options]",
  summary: "migrate the same guest with each technique under each setting and compare",
  about:
    "Migrates the same deterministic guest with each technique, under each combination of the\n" +
    "settings given as comma-separated lists (--memory, --dirty-rate, --working-set, --bandwidth,\n" +
    "--latency), one run after another, to a destination in a second process. Every run is checked:\n" +
    "the guest must finish on the destination with the digest of a run that was never migrated.\n" +
    "Prints total migration time, downtime, data on the wire, rounds, post-copy faults and the\n" +
    "model's prediction for each run. Choose --duration long enough for the slowest migration to\n" +
    "end before the guest's run does.",
  options: COMPARE_OPTIONS,
  run: runCompare,
});

async function runCompare({ values }: Parsed<typeof COMPARE_OPTIONS>): Promise<number> {
  const command = "compare";
  const techniques = values.techniques.split(",").map((t) => t.trim()) as Technique[];
  for (const t of techniques) if (!TECHNIQUES.includes(t)) throw new UsageError(`${command}: --techniques: unknown technique ${JSON.stringify(t)} (known: ${TECHNIQUES.join(", ")})`);
  const { settings, xLabel, xText, fixed, downtimeLimitMs } = settingsOf(command, values);
  const json = values.json;

  const destination = await startDestinationProcess(false);
  try {
    if (!json) console.log(`destination process ${destination.child.pid} listens on ${destination.url}; ${plural(techniques.length, "technique")} × ${plural(settings.length, "setting")}\n`);
    const rows = await compareTechniques(destination, techniques, settings, (row) => {
      if (!json) console.error(`  ${row.setting || "run"} ${row.technique}: ${row.status}${row.digestEqual ? ", digest equal" : ""}`);
    });
    if (values.svg) writeFileSync(values.svg, comparisonChartSvg(rows, { xLabel, formatX: (x) => xText[x] ?? String(x), fixed, downtimeLimitMs }));
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

type Values = OptionValues<typeof COMPARE_OPTIONS>;

/**
 * Every combination of the listed values, each checked as `migrate send` checks one (so a
 * working set that does not fit the guest is refused before anything starts); the chart's x
 * axis (the first list) and the settings that stay fixed, for its title.
 */
function settingsOf(command: string, values: Values) {
  const lists = VARIED.map((k): [Varied, (string | undefined)[]] => [k, values[k] === undefined ? [undefined] : String(values[k]).split(",").map((t) => t.trim())]);
  const varied = lists.filter(([, list]) => list.length > 1);
  let combos: Values[] = [{ ...values }];
  for (const [k, list] of lists) combos = combos.flatMap((c) => list.map((item) => ({ ...c, [k]: item })));
  if (combos.length > 100) throw new UsageError(`${command}: ${combos.length} settings are too many (at most 100)`);
  const [xKey, xList] = varied[0] ?? ["memory", [values.memory]];
  const xText = xList.map((t) => readable(xKey, String(t)));
  const settings: CompareSetting[] = combos.map((c) => {
    const { spec, link } = parseGuestAndLink(command, c);
    const label = varied.map(([k]) => `${k}=${String(c[k])}`).join(" ");
    return { label, x: xList.indexOf(c[xKey]), spec, link };
  });
  const first = settings[0];
  const fixedParts = [
    ...lists.filter(([k, list]) => list.length === 1 && list[0] !== undefined && k !== xKey).map(([k, list]) => `${k} ${readable(k, list[0]!)}`),
    xKey !== "memory" && !varied.some(([k]) => k === "memory") ? `${formatBytes(first.spec.memoryBytes)} guest` : "",
    `${first.spec.workload} workload`,
    `${first.spec.interrupts} interrupts`,
    first.spec.cpus !== undefined && first.spec.cpus > 1 ? `${first.spec.cpus} CPUs` : "",
    values.bandwidth === undefined ? "unlimited link" : "",
  ].filter((p) => p !== "");
  return { settings, xLabel: xKey, xText, fixed: fixedParts.join(", "), downtimeLimitMs: first.link.downtimeLimitMs ?? 0 };
}

/** A value of a setting as the chart shows it: sizes in binary units, latencies in ms, rates as typed. */
function readable(key: Varied, text: string): string {
  if (key === "memory" || key === "working-set") return formatBytes(parseSize(text) ?? 0);
  if (key === "latency") return `${text} ms`;
  return text;
}

const plural = (n: number, noun: string) => `${n} ${noun}${n === 1 ? "" : "s"}`;
