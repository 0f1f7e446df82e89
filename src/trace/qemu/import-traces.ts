// `npm run import-traces`: regenerates traces/qemu/ from the QEMU logs (raw/<run>.log.gz and
// timed/<run>.timed.log.gz under $BLMV_QEMU_LOGS, by default traces/qemu/logs) and writes every
// import summary to traces/qemu/import-summary.json. docs/traces.md describes the import.

import { mkdir, readdir, stat, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { formatImportSummary, importQemuLog, type ImportSummary } from "./import.js";

const LOGS = process.env["BLMV_QEMU_LOGS"] ?? join("traces", "qemu", "logs");
const OUT = join("traces", "qemu");

/** Input and output of every log found: raw/<run>.log.gz and timed/<run>.timed.log.gz. */
async function jobs(): Promise<{ input: string; output: string }[]> {
  const found: { input: string; output: string }[] = [];
  for (const kind of ["raw", "timed"]) {
    const names = await readdir(join(LOGS, kind)).catch(() => [] as string[]);
    for (const name of names.sort()) {
      if (!name.endsWith(".log.gz")) continue;
      found.push({ input: join(LOGS, kind, name), output: join(OUT, name.replace(/\.log\.gz$/, ".trace.gz")) });
    }
  }
  return found;
}

async function main(): Promise<number> {
  const todo = await jobs();
  if (todo.length === 0) {
    console.error(`import-traces: no raw/*.log.gz or timed/*.log.gz under ${LOGS} (set BLMV_QEMU_LOGS)`);
    return 2;
  }
  await mkdir(OUT, { recursive: true });
  const summaries: Record<string, ImportSummary & { bytes: number }> = {};
  let failed = 0;
  for (const { input, output } of todo) {
    try {
      const summary = await importQemuLog(input, output);
      summaries[output] = { ...summary, bytes: (await stat(output)).size };
      console.log(formatImportSummary(summary) + "\n");
    } catch (err) {
      failed++;
      console.error(`${input}: failed: ${(err as Error).message}\n`);
    }
  }
  await writeFile(join(OUT, "import-summary.json"), JSON.stringify(summaries, null, 2) + "\n");
  return failed === 0 ? 0 : 1;
}

process.exitCode = await main();
