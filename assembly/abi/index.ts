// The core's WebAssembly interface. One instance is one machine: a board with its devices and
// the hypervisor under the guest. Guest operations pass plain numbers and allocate nothing;
// times cross the boundary as f64 nanoseconds (exact up to 2^53 ns, about 104 days).
//
// Memory: the core runs on AssemblyScript's minimal runtime (asconfig.json). The incremental
// one kept a shadow stack of every object reference on every call, which cost the replay more
// than the device models themselves; the minimal one collects only when asked, at a moment no
// reference lives on the wasm stack. Every export that allocates (records, schemas, the replay
// buffer, reconstruction's helpers) therefore collects on entry; guest operations allocate
// nothing but a rebuilt APIC timer's few fixup helpers, collected at the next such call.

import { FieldIO, FieldMode } from "../common/fields";
import { DeviceRecord, captureDevices, reconstructDevices } from "../hypervisor/device-state";
import { RECONSTRUCT_WINDOW_NS } from "../hypervisor/bus";
import { applyTimerPhase as applyPhase, captureApics } from "../hypervisor/apic/state";
import { MAX_TIMER_PHASE_NS } from "../hypervisor/apic/timer-phase";
import { Policy, StateResult } from "./codes";
import { MAX_CPUS } from "./codes";
import { board, hypervisor } from "./instance";
import { resetReplay } from "./replay";

export { replayRecords, decodeRecords, checkRecords, recordRules, replayStatus, replayScratch } from "./replay";

const fields = new FieldIO();
const record = new DeviceRecord();
/** The time of the reconstruction `record` holds, while nothing has moved since; else -1. */
let rebuiltAt: i64 = -1;
let msrHigh: u32 = 0;
/** Where exitPortsUsed() lists ports: static memory, untouched until an exit report asks. */
const PORT_LIST: usize = memory.data(65536 * 4, 16);

/**
 * Power-on, also of an instance that ran a machine before: builds the board, starts the clock
 * at `start` ns under the hypervisor's `policy`.
 */
export function init(
  pic: bool, pit: bool, lapic: bool, ioapic: bool, cpus: i32, pitIrq0: bool, compatQemu: bool,
  apicBusHz: f64, tscHz: f64, policy: Policy, start: f64,
): void {
  __collect();
  const c = board.config;
  c.pic = pic;
  c.pit = pit;
  c.lapic = lapic;
  c.ioapic = ioapic;
  // More than one CPU needs the local APICs (the host checks; this keeps the core safe).
  c.cpus = lapic && cpus > 1 ? min(cpus, MAX_CPUS) : 1;
  c.pitIrq0 = pitIrq0;
  c.compatQemu = compatQemu;
  c.apicBusHz = <i64>apicBusHz;
  c.tscHz = <i64>tscHz;
  board.reset(<i64>start);
  hypervisor.start(policy);
  resetReplay();
  msrHigh = 0;
}

// ---- guest operations ---------------------------------------------------------------------

export function outb(port: u32, value: u32): void {
  hypervisor.portOut(port, value, 1);
}
export function outw(port: u32, value: u32): void {
  hypervisor.portOut(port, value, 2);
}
export function outl(port: u32, value: u32): void {
  hypervisor.portOut(port, value, 4);
}
export function inb(port: u32): u32 {
  return hypervisor.portIn(port, 1);
}
export function inw(port: u32): u32 {
  return hypervisor.portIn(port, 2);
}
export function inl(port: u32): u32 {
  return hypervisor.portIn(port, 4);
}
export function readl(addr: u32): u32 {
  return hypervisor.readl(addr);
}
export function writel(addr: u32, value: u32): void {
  hypervisor.writel(addr, value);
}
/** Low half of the MSR; the high half is left for rdmsrHigh(). */
export function rdmsr(msr: u32): u32 {
  const v = hypervisor.rdmsr(msr);
  msrHigh = <u32>(v >>> 32);
  return <u32>v;
}
export function rdmsrHigh(): u32 {
  return msrHigh;
}
export function wrmsr(msr: u32, low: u32, high: u32): void {
  hypervisor.wrmsr(msr, (<u64>high << 32) | <u64>low);
}
/**
 * Makes CPU `cpu` the current one: the guest operations and inta that follow are its own.
 * Returns false (and changes nothing) if the board has no such CPU.
 */
export function selectCpu(cpu: i32): bool {
  if (cpu < 0 || cpu >= board.cpuCount) return false;
  hypervisor.selectCpu(cpu);
  return true;
}
export function currentCpu(): i32 {
  return board.cpu;
}
export function cpuCount(): i32 {
  return board.cpuCount;
}
/** The current CPU's start-up: a SipiState, or the vector of the start-up IPI it started on. */
export function sipiState(): i32 {
  return board.sipiState(board.cpu);
}
export function setIrq(line: i32, level: i32): void {
  board.setIsaLine(line & 15, level != 0);
}
export function setGsi(pin: i32, level: i32): void {
  if (pin >= 0 && pin < 24) board.setGsiLine(pin, level != 0);
}
export function inta(): i32 {
  return hypervisor.inta();
}
export function advanceTo(t: f64): void {
  hypervisor.advanceTo(<i64>t);
}
export function now(): f64 {
  return <f64>board.now;
}
export function nextTimerEvent(): f64 {
  return <f64>board.nextTimerEvent();
}

// ---- records: capture, reconstruction, inspection ------------------------------------------

/** The shared field buffer (u32 values) through which records cross the boundary. */
export function fieldBuffer(): usize {
  return changetype<usize>(fields.values);
}
export function fieldCount(): i32 {
  return fields.count;
}
export function fieldError(): i32 {
  return fields.error;
}

/** Names of the device record's fields, comma-separated, in buffer order. */
export function recordSchema(): string {
  __collect();
  // The schema is this board's: as many CPUs as it has.
  record.config.cpus = board.config.cpus;
  fields.start(FieldMode.Schema);
  record.describe(fields);
  return fields.names;
}

/** Captures all device state into the field buffer. */
export function captureState(): StateResult {
  __collect();
  if (!hypervisor.shadowsValid()) return StateResult.NoShadows;
  captureDevices(hypervisor.bus, hypervisor.picShadow, hypervisor.pitShadow, hypervisor.fixups, record);
  rebuiltAt = -1;
  fields.start(FieldMode.Write);
  record.describe(fields);
  return StateResult.Ok;
}

/** Each CPU's timer phase from the last probeTimerPhases(), in ns. */
const timerPhases = new StaticArray<u32>(MAX_CPUS);

/**
 * For a source that will never run the guest again: lets the clock run until each local APIC
 * timer's count changes (at most one divided period) and notes how many ns that took on each
 * CPU, or 0; read them with timerPhase (see hypervisor/apic/timer-phase.ts).
 */
export function probeTimerPhases(): void {
  __collect();
  for (let k = 0; k < MAX_CPUS; k++) unchecked((timerPhases[k] = 0));
  if (!board.config.lapic) return;
  captureApics(hypervisor.bus, record.apic, hypervisor.fixups);
  rebuiltAt = -1;
  hypervisor.probeTimerPhases(record.apic, timerPhases);
}

/** CPU `cpu`'s phase from the last probeTimerPhases() (0 for a CPU the board lacks). */
export function timerPhase(cpu: i32): u32 {
  return cpu >= 0 && cpu < board.cpuCount ? unchecked(timerPhases[cpu]) : 0;
}

export const MAX_TIMER_PHASE: u32 = MAX_TIMER_PHASE_NS;

/**
 * Applies the source's timer phase of CPU `cpu` to the machine just reconstructed, before its
 * clock has moved; StateResult.BadRecord if the CPU or the phase is out of range or the moment
 * has passed.
 */
export function applyTimerPhase(cpu: i32, phase: u32): StateResult {
  __collect();
  if (cpu < 0 || cpu >= board.cpuCount || phase > MAX_TIMER_PHASE_NS || rebuiltAt != board.now) return StateResult.BadRecord;
  applyPhase(hypervisor.bus, record.apic, hypervisor.fixups, cpu, phase);
  hypervisor.fixupsInstalled();
  return StateResult.Ok;
}

/**
 * Checks the `count` record fields in the buffer against what each register can hold and,
 * only if all are legal and describe this board, rebuilds the devices from them.
 */
export function reconstructState(count: i32): StateResult {
  __collect();
  fields.start(FieldMode.Read, count);
  record.describe(fields);
  if (fields.error >= 0 || fields.count != count) return StateResult.BadRecord;
  const c = board.config;
  const r = record.config;
  if (r.pic != c.pic || r.pit != c.pit || r.lapic != c.lapic || r.ioapic != c.ioapic || r.cpus != c.cpus) return StateResult.ConfigMismatch;
  if (r.compatQemu != c.compatQemu || r.apicBusHz != c.apicBusHz || r.tscHz != c.tscHz) return StateResult.ConfigMismatch;
  if (record.time < board.now) return StateResult.BadRecord;
  reconstructDevices(hypervisor.bus, record, hypervisor.picShadow, hypervisor.pitShadow, hypervisor.fixups);
  hypervisor.fixupsInstalled();
  hypervisor.armTraps();
  rebuiltAt = record.time;
  return StateResult.Ok;
}

/** Every device's internal state (tests only). */
export function inspectSchema(): string {
  __collect();
  fields.start(FieldMode.Schema);
  board.inspect(fields);
  return fields.names;
}
export function inspectState(): void {
  __collect();
  fields.start(FieldMode.Write);
  board.inspect(fields);
}

/** The hypervisor's shadows (tests compare them with the hidden state they mirror). */
export function shadowSchema(): string {
  __collect();
  fields.start(FieldMode.Schema);
  describeShadows();
  return fields.names;
}
export function shadowState(): void {
  __collect();
  fields.start(FieldMode.Write);
  describeShadows();
}
function describeShadows(): void {
  fields.begin("pic");
  hypervisor.picShadow.describe(fields);
  fields.end();
  fields.begin("pit");
  hypervisor.pitShadow.describe(fields);
  fields.end();
}

// ---- exit accounting ---------------------------------------------------------------------

export function exitsByReason(): usize {
  return changetype<usize>(hypervisor.exits.byReason);
}
export function exitsByPort(): usize {
  return hypervisor.exits.byPort;
}
/** Ports with at least one exit, listed in exitPortList(): their count. */
export function exitPortsUsed(): i32 {
  return hypervisor.exits.usedPorts(PORT_LIST);
}
export function exitPortList(): usize {
  return PORT_LIST;
}
export function exitsByMmioRegister(): usize {
  return changetype<usize>(hypervisor.exits.byMmioRegister);
}
export function exitsByMsr(): usize {
  return changetype<usize>(hypervisor.exits.byMsr);
}
export function exitsByCpu(): usize {
  return changetype<usize>(hypervisor.exits.byCpu);
}
/** How long before its resume time a destination must start reconstruction. */
export function reconstructWindow(): f64 {
  return <f64>RECONSTRUCT_WINDOW_NS;
}
export function fixupActive(): bool {
  return hypervisor.fixups.count > 0;
}
