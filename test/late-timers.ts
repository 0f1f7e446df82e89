// The one kind of mismatch a multi-CPU trace may show when migrated many times (docs/hypervisor.md):
// a migration carries CPU 0's measured timer phase only, so another CPU's rebuilt timer runs up
// to one divided period late, the lateness adds up over migrations, and its interrupt can miss
// the acknowledge that took it on the source.

import { Op, type TraceEvent } from "../src/trace/event.js";
import type { Mismatch } from "../src/trace/replay.js";

/** The CPU performing each event (`cpu K` events switch it). */
export function cpuOfEvents(events: readonly TraceEvent[]): number[] {
  let cpu = 0;
  return events.map((e) => (e.op === Op.Cpu ? (cpu = e.a) : cpu));
}

/** The mismatches that are not an acknowledge on a CPU other than 0 finding nothing where an interrupt was expected. */
export function beyondLateTimers(events: readonly TraceEvent[], mismatches: readonly Mismatch[]): Mismatch[] {
  const cpuAt = cpuOfEvents(events);
  return mismatches.filter((m) => !(m.op === "inta" && m.actual === "none" && m.expected !== "none" && cpuAt[m.event - 1]! > 0));
}
