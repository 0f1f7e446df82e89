// The package's public API (`import … from "blmvisor-model"`): the machine, traces (read, write,
// compile, replay, record), live migration (source, destination, listener) and its reports.
// docs/usage.md shows it in use.

export { Machine, DeviceStateError, POLICIES, DEFAULT_CONFIG, INTA_NMI, MAX_CPUS } from "./core/machine.js";
export type { Policy, MachineConfig, MachineOptions, DeviceRecord } from "./core/machine.js";
export { FieldError } from "./core/fields.js";

export { TraceError, openTrace, readTraceFile, TraceReader } from "./trace/reader.js";
export type { OpenTraceOptions } from "./trace/reader.js";
export { writeTrace, formatEvent, formatHeader } from "./trace/writer.js";
export { compileTrace, BTRACE_MAGIC } from "./trace/compiled.js";
export { replayEvents, replayCompiled } from "./trace/replay.js";
export type { ReplayOptions, ReplayReport, Mismatch, MigrationStat } from "./trace/replay.js";
export { RecordingMachine } from "./trace/recorder.js";
export { Op, Check, makeEvent, defaultHeader } from "./trace/event.js";
export type { TraceEvent, TraceHeader } from "./trace/event.js";

export { bootGuest, referenceDigest, WORKLOAD_NAMES } from "./migrate/run/guest-run.js";
export type { GuestRunSpec } from "./migrate/run/guest-run.js";
export { LiveGuest } from "./migrate/run/live.js";
export { bootAndMigrate } from "./migrate/run/run.js";
export type { LiveMigrationOptions, LiveMigrationResult } from "./migrate/run/run.js";
export { migrate, DEFAULT_DOWNTIME_LIMIT_MS } from "./migrate/source/source.js";
export type { SourceOptions } from "./migrate/source/source.js";
export type { Progress } from "./migrate/source/progress.js";
export { MigrationControl, ControlError } from "./migrate/source/control.js";
export { TECHNIQUES } from "./migrate/source/techniques.js";
export type { Technique } from "./migrate/source/techniques.js";
export { listen } from "./migrate/destination/listener.js";
export type { Listener, ListenOptions } from "./migrate/destination/listener.js";
export { DestinationSession } from "./migrate/destination/destination.js";
export type { DestinationOptions, DestinationEvent } from "./migrate/destination/destination.js";
export { generateToken, loadToken, TOKEN_ENV } from "./migrate/transport/auth.js";
export { MigrationFailure } from "./migrate/failure.js";
export { compareTechniques, formatComparison } from "./migrate/run/compare.js";
export type { CompareSetting, CompareRow } from "./migrate/run/compare.js";
export { formatReport, roundChartSvg } from "./migrate/report/report.js";
export { comparisonChartSvg } from "./migrate/report/compare-chart.js";
export type { MigrationReport, MigrationStatus, RoundStat } from "./migrate/report/metrics.js";
export { predict } from "./migrate/report/model.js";
export { parseSize, parseRate, formatBytes, formatRate, formatMs } from "./migrate/report/units.js";
