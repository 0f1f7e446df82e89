// What an import did: the counts the converter and the clock keep, the summary importQemuLog
// returns (plain data, JSON as is) and its text for a terminal.

import type { ClockCounts } from "./clock.js";

export interface ConversionCounts {
  eventsByOp: Record<string, number>;
  /** Port, MMIO and MSR reads. */
  reads: number;
  readsChecked: number;
  readsMasked: number;
  readsUnchecked: number;
  /** Reads compared only on their time-independent bits, by what and why. */
  maskedByReason: Record<string, number>;
  /** Reads left without expectation, by what and why. */
  uncheckedByReason: Record<string, number>;
  /** Accesses to modelled devices that could not become events, by reason. */
  skippedAccesses: Record<string, number>;
  /** Accesses to devices the model does not have, by QEMU region name. */
  otherDevices: Record<string, number>;
  /** Lines ignored on purpose, by kind. */
  ignoredLines: Record<string, number>;
  unknownLines: number;
  /** The first few unknown lines, for the summary. */
  unknownSamples: { line: number; text: string }[];
  msiMessages: number;
  /** CPU exceptions by vector (from `-d int`). */
  exceptions: Record<string, number>;
  /** PIT OUT0 changes on GSI 0 placed at their computed deadline. */
  pitSignalsTimed: number;
  /** GSI 0 changes that were not the PIT's next computed change (or did not fit the clock). */
  irq0Unpredicted: number;
  /** GSI 0 changes at the level the PIT signals next but not at that signal's time: another source re-driving line 0, or a PIT signal off the clock. */
  irq0NotAtPitTime: number;
  /** Computed PIT OUT0 changes the log never showed (each silences the PIT until its next load). */
  pitSignalsMissing: number;
  lapicExpiries: number;
  /** Local APIC timer interrupts the log shows while no expiry was armed. */
  lapicExpiriesUnpredicted: number;
  /** MMIO accesses to modelled devices that no `iotime` line timed (timed logs). */
  mmioUnstamped: number;
}

export function emptyCounts(): ConversionCounts {
  return {
    eventsByOp: {},
    reads: 0,
    readsChecked: 0,
    readsMasked: 0,
    readsUnchecked: 0,
    maskedByReason: {},
    uncheckedByReason: {},
    skippedAccesses: {},
    otherDevices: {},
    ignoredLines: {},
    unknownLines: 0,
    unknownSamples: [],
    msiMessages: 0,
    exceptions: {},
    pitSignalsTimed: 0,
    irq0Unpredicted: 0,
    irq0NotAtPitTime: 0,
    pitSignalsMissing: 0,
    lapicExpiries: 0,
    lapicExpiriesUnpredicted: 0,
    mmioUnstamped: 0,
  };
}

export function bump(counts: Record<string, number>, key: string): void {
  counts[key] = (counts[key] ?? 0) + 1;
}

export function sum(counts: Record<string, number>): number {
  return Object.values(counts).reduce((a, b) => a + b, 0);
}

export interface ImportSummary extends ConversionCounts, ClockCounts {
  input: string;
  output: string;
  timing: "icount" | "synthetic";
  lines: number;
  events: number;
  /** Interrupt acknowledges (`inta`), all with an expected vector. */
  intas: number;
  /** Lines for devices the model does not have (sum of otherDevices). */
  otherDeviceLines: number;
  /** Virtual time of the last event, ns. */
  virtualTimeNs: number;
  /** Set when the input ended early (truncated or corrupt gzip): what the decompressor said. */
  inputTruncated?: string;
}

function table(title: string, counts: Record<string, number>): string[] {
  const keys = Object.keys(counts).sort((a, b) => counts[b]! - counts[a]!);
  if (keys.length === 0) return [];
  return [`${title}:`, ...keys.map((k) => `  ${String(counts[k]).padStart(9)}  ${k}`)];
}

/** The summary as text for a terminal. */
export function formatImportSummary(s: ImportSummary): string {
  const pct = (n: number) => (s.reads === 0 ? "-" : ((100 * n) / s.reads).toFixed(2) + "%");
  const out = [
    `${s.input} -> ${s.output}`,
    `timing: ${s.timing}; ${s.lines} lines; ${s.events} events; virtual time ${(s.virtualTimeNs / 1e9).toFixed(6)} s`,
    `reads: ${s.reads}; checked ${s.readsChecked} (${pct(s.readsChecked)}), masked ${s.readsMasked}, unchecked ${s.readsUnchecked}; inta ${s.intas}`,
    ...table("events by op", s.eventsByOp),
    ...table("masked reads", s.maskedByReason),
    ...table("unchecked reads", s.uncheckedByReason),
    ...table("skipped accesses", s.skippedAccesses),
    `MSI messages (not replayed): ${s.msiMessages}`,
    `local APIC timer expiries: ${s.lapicExpiries} (unarmed: ${s.lapicExpiriesUnpredicted}, off the clock: ${s.offClockSignals})`,
    ...(s.timing === "icount"
      ? [
          `HLTs: ${s.hlts}; resynchronised at a timer deadline: ${s.resyncs}; unexplained wake-ups: ${s.unexplainedWakes}`,
          `PIT OUT0 changes timed: ${s.pitSignalsTimed}; other GSI 0 changes: ${s.irq0Unpredicted} (at the PIT's next level, not its time: ${s.irq0NotAtPitTime}); computed but not logged: ${s.pitSignalsMissing}`,
          `clock conflicts: ${s.conflicts}; page faults corrected: ${s.pageFaults}; MMIO without iotime: ${s.mmioUnstamped}`,
        ]
      : []),
    `lines for other devices: ${s.otherDeviceLines}; unknown lines: ${s.unknownLines}`,
    ...table("other devices", s.otherDevices),
    ...table("ignored lines", s.ignoredLines),
    ...s.unknownSamples.map((u) => `  unknown line ${u.line}: ${u.text}`),
  ];
  if (s.inputTruncated !== undefined) out.push(`input ended early: ${s.inputTruncated}`);
  return out.join("\n");
}
