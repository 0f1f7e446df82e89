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
  /** Multi-CPU logs: accepted interrupts by the rule that found their CPU (docs/traces.md). */
  interruptsByRule: Record<string, number>;
  /** IA32_APIC_BASE reads of an application processor in a multi-CPU log (not replayed: QEMU reads it at every reset and INIT too). */
  apicBaseApReads: number;
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
  /** Writes that switched the HPET's legacy replacement route on or off. */
  hpetRouteSwitches: number;
  /** GSI changes an HPET register write made, a route switch's lowering of GSI 0 and 8 among them (at the write's time). */
  hpetWriteLines: number;
  /** GSI 0 and 8 changes of the HPET's timers while the legacy route is on (time not followed). */
  hpetTimerLines: number;
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
    interruptsByRule: {},
    apicBaseApReads: 0,
    exceptions: {},
    pitSignalsTimed: 0,
    irq0Unpredicted: 0,
    irq0NotAtPitTime: 0,
    pitSignalsMissing: 0,
    lapicExpiries: 0,
    lapicExpiriesUnpredicted: 0,
    mmioUnstamped: 0,
    hpetRouteSwitches: 0,
    hpetWriteLines: 0,
    hpetTimerLines: 0,
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
  /** CPUs of the log and the trace (`!cpus`). */
  cpus: number;
  lines: number;
  events: number;
  /** Interrupt acknowledges (`inta`), all with an expected vector. */
  intas: number;
  /** Lines for devices the model does not have (sum of otherDevices). */
  otherDeviceLines: number;
  /** Virtual time of the last event, ns. */
  virtualTimeNs: number;
}

function table(title: string, counts: Record<string, number>): string[] {
  const keys = Object.keys(counts).sort((a, b) => counts[b]! - counts[a]!);
  if (keys.length === 0) return [];
  return [`${title}:`, ...keys.map((k) => `  ${String(counts[k]).padStart(9)}  ${k}`)];
}

/** How many clock conflicts each rule resolved. */
function conflictRules(resolved: ImportSummary["conflictsResolved"]): string {
  const rules = Object.entries(resolved);
  const total = rules.reduce((n, [, k]) => n + k, 0);
  return `resolved by rule: ${total}` + (rules.length === 0 ? "" : ` (${rules.map(([rule, n]) => `${rule}: ${n}`).join(", ")})`);
}

/** The summary as text for a terminal. */
export function formatImportSummary(s: ImportSummary): string {
  const pct = (n: number) => (s.reads === 0 ? "-" : ((100 * n) / s.reads).toFixed(2) + "%");
  return [
    `${s.input} -> ${s.output}`,
    `timing: ${s.timing}; ${s.cpus} CPU${s.cpus === 1 ? "" : "s"}; ${s.lines} lines; ${s.events} events; virtual time ${(s.virtualTimeNs / 1e9).toFixed(6)} s`,
    `reads: ${s.reads}; checked ${s.readsChecked} (${pct(s.readsChecked)}), masked ${s.readsMasked}, unchecked ${s.readsUnchecked}; inta ${s.intas}`,
    ...table("events by op", s.eventsByOp),
    ...table("masked reads", s.maskedByReason),
    ...table("unchecked reads", s.uncheckedByReason),
    ...table("skipped accesses", s.skippedAccesses),
    ...table("accepted interrupts, CPU found by", s.interruptsByRule),
    ...(s.apicBaseApReads > 0 ? [`IA32_APIC_BASE reads of application processors (not replayed): ${s.apicBaseApReads}`] : []),
    `MSI messages (not replayed): ${s.msiMessages}`,
    `local APIC timer expiries: ${s.lapicExpiries} (unarmed: ${s.lapicExpiriesUnpredicted}, off the clock: ${s.offClockSignals})`,
    `clock conflicts: ${s.conflicts} unexplained; ${conflictRules(s.conflictsResolved)}`,
    ...(s.timing === "icount"
      ? [
          `HLTs: ${s.hlts}; resynchronised at a timer deadline: ${s.resyncs}; unexplained wake-ups: ${s.unexplainedWakes}`,
          `PIT OUT0 changes timed: ${s.pitSignalsTimed}; other GSI 0 changes: ${s.irq0Unpredicted} (at the PIT's next level, not its time: ${s.irq0NotAtPitTime}); computed but not logged: ${s.pitSignalsMissing}`,
          `page faults: ${s.pageFaults} on data accesses (one instruction each off the plugin's count), ${s.fetchFaults} on instruction fetches (none); MMIO without iotime: ${s.mmioUnstamped}`,
          `timer signals of unknown time (clock left alone): ${s.untimedSignals}`,
        ]
      : []),
    ...(s.hpetRouteSwitches + s.hpetWriteLines + s.hpetTimerLines > 0
      ? [`HPET legacy route switches: ${s.hpetRouteSwitches}; GSI changes made by HPET writes: ${s.hpetWriteLines}; GSI 0/8 changes from HPET timers (legacy route): ${s.hpetTimerLines}`]
      : []),
    `lines for other devices: ${s.otherDeviceLines}; unknown lines: ${s.unknownLines}`,
    ...table("other devices", s.otherDevices),
    ...table("ignored lines", s.ignoredLines),
    ...s.unknownSamples.map((u) => `  unknown line ${u.line}: ${u.text}`),
  ].join("\n");
}
