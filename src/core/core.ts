// Loading the WebAssembly core. The module is compiled once per process; every machine is a
// fresh instance of it (its own memory, its own devices).

import { existsSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { instantiateSync, type ASUtil } from "@assemblyscript/loader";
import type { Policy, ReplayCounter, StateResult } from "../../assembly/abi/codes.js";
import { packageInfo } from "./package.js";

/** The core's exports (assembly/abi/index.ts), as the host calls them; their codes are in assembly/abi/codes.ts. */
export interface CoreExports extends ASUtil {
  memory: WebAssembly.Memory;
  init(
    pic: number, pit: number, lapic: number, ioapic: number, cpus: number, pitIrq0: number, compatQemu: number,
    apicBusHz: number, tscHz: number, policy: Policy, start: number,
  ): void;
  outb(port: number, value: number): void;
  outw(port: number, value: number): void;
  outl(port: number, value: number): void;
  inb(port: number): number;
  inw(port: number): number;
  inl(port: number): number;
  readl(addr: number): number;
  writel(addr: number, value: number): void;
  rdmsr(msr: number): number;
  rdmsrHigh(): number;
  wrmsr(msr: number, low: number, high: number): void;
  selectCpu(cpu: number): number;
  currentCpu(): number;
  cpuCount(): number;
  sipiState(): number;
  setIrq(line: number, level: number): void;
  setGsi(pin: number, level: number): void;
  inta(): number;
  advanceTo(t: number): void;
  now(): number;
  nextTimerEvent(): number;
  fieldBuffer(): number;
  fieldCount(): number;
  fieldError(): number;
  recordSchema(): number;
  captureState(): StateResult;
  reconstructState(count: number): StateResult;
  probeTimerPhases(): void;
  timerPhase(cpu: number): number;
  applyTimerPhase(cpu: number, phase: number): StateResult;
  inspectSchema(): number;
  inspectState(): void;
  shadowSchema(): number;
  shadowState(): void;
  exitsByReason(): number;
  exitsByPort(): number;
  exitPortsUsed(): number;
  exitPortList(): number;
  exitsByMmioRegister(): number;
  exitsByMsr(): number;
  exitsByCpu(): number;
  reconstructWindow(): number;
  fixupActive(): number;
  replayScratch(bytes: number): number;
  replayRecords(from: number, to: number): number;
  decodeRecords(from: number, to: number): number;
  checkRecords(count: number, labelCount: number, cpus: number, lastTime: number): number;
  recordRules(): number;
  replayStatus(which: ReplayCounter): number;
  MAX_TIMER_PHASE: WebAssembly.Global;
}

let compiled: WebAssembly.Module | undefined;

/** build/core.wasm in the package's root. */
function corePath(): string {
  const path = join(packageInfo().root, "build", "core.wasm");
  if (!existsSync(path)) throw new Error(`${path} not found: run \`npm run build\` first`);
  return path;
}

export function instantiateCore(): CoreExports {
  compiled ??= new WebAssembly.Module(readFileSync(corePath()));
  return instantiateSync<Record<string, unknown>>(compiled, {}).exports as unknown as CoreExports;
}
