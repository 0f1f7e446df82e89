// Where the guest keeps its state in guest-physical memory: one reserved kernel data page holding
// its configuration (written at boot, read back on the destination), its counters and a block
// per CPU, and the working set above 1 MiB that its workload dirties.

import type { DirtyPattern, WorkloadConfig } from "./config.js";
import type { InterruptSetup } from "./drivers.js";
import { GuestMemory, PAGE_SIZE } from "./memory.js";
import { MAX_CPUS } from "../../assembly/abi/codes.js";

const DATA_PAGE = 1;
/** Pages below the working set that hold data once the guest has booted: the data page alone (the rest is zero). */
export const BOOT_DATA_PAGES = 1;
/** The working set starts at 1 MiB, above the legacy low-memory area. */
export const WORK_BASE_PAGE = 0x100000 / PAGE_SIZE;

const MAGIC = 0x474d_4c42; // "BLMG"
const LAYOUT_VERSION = 2;
const NAME_BYTES = 32;
const TWO_32 = 0x1_0000_0000;
const SETUPS: readonly InterruptSetup[] = ["pic", "apic"];
const PATTERNS: readonly DirtyPattern[] = ["uniform", "hot", "scan"];

/** Word slots in the data page. */
const Slot = {
  magic: 0,
  layout: 1,
  interrupts: 2,
  pattern: 3,
  rate: 4, // 2 words
  workingSet: 6, // 2 words
  seed: 8,
  timerHz: 9,
  timerCount: 10,
  bootTime: 11, // 2 words
  nameLength: 13,
  cpus: 14,
  name: 16, // NAME_BYTES
  ticks: 32,
  deviceInterrupts: 33,
  unexpectedInterrupts: 34,
} as const;

/** Guest counters that live in the data page. */
export type Counter = "ticks" | "deviceInterrupts" | "unexpectedInterrupts";

export function counterAddress(counter: Counter): number {
  return DATA_PAGE * PAGE_SIZE + 4 * Slot[counter];
}

/** The block each CPU keeps, word by word, like a kernel's per-CPU data. */
const PER_CPU_BASE = 64;
const PER_CPU_WORDS = 8;
const PerCpuSlot = {
  /** 1 once the CPU has come up after its start-up IPI (CPU 0: at boot). */
  online: 0,
  /** Its own local APIC timer's interrupts (CPU 0 counts its timer in `ticks`). */
  timerTicks: 1,
  /** Fixed IPIs taken, and lowest-priority IPIs taken. */
  ipis: 2,
  lowestPriorityIpis: 3,
  /** Hash of what its IPI handler read back from its local APIC. */
  hash: 4,
} as const;

export type PerCpuCounter = keyof typeof PerCpuSlot;

export function perCpuAddress(cpu: number, counter: PerCpuCounter): number {
  return DATA_PAGE * PAGE_SIZE + 4 * (PER_CPU_BASE + cpu * PER_CPU_WORDS + PerCpuSlot[counter]);
}

/** Everything the guest wrote down at boot: what it runs and how it programmed the timer. */
export interface BootRecord extends WorkloadConfig {
  timerCount: number;
  bootTime: number;
}

export function writeBootRecord(memory: GuestMemory, b: BootRecord): void {
  const name = new TextEncoder().encode(b.name);
  if (name.length > NAME_BYTES) throw new RangeError(`workload name ${JSON.stringify(b.name)} is longer than ${NAME_BYTES} bytes`);
  const put = (slot: number, value: number): void => memory.write32(DATA_PAGE * PAGE_SIZE + 4 * slot, value >>> 0);
  const putWide = (slot: number, value: number): void => {
    put(slot, value % TWO_32);
    put(slot + 1, Math.floor(value / TWO_32));
  };
  put(Slot.magic, MAGIC);
  put(Slot.layout, LAYOUT_VERSION);
  put(Slot.interrupts, SETUPS.indexOf(b.interrupts));
  put(Slot.pattern, PATTERNS.indexOf(b.pattern));
  putWide(Slot.rate, b.dirtyBytesPerSecond);
  putWide(Slot.workingSet, b.workingSetBytes);
  put(Slot.seed, b.seed);
  put(Slot.timerHz, b.timerHz);
  put(Slot.timerCount, b.timerCount);
  putWide(Slot.bootTime, b.bootTime);
  put(Slot.nameLength, name.length);
  put(Slot.cpus, b.cpus);
  const padded = new Uint8Array(NAME_BYTES);
  padded.set(name);
  const words = new Uint32Array(padded.buffer);
  for (let i = 0; i < words.length; i++) put(Slot.name + i, words[i]);
}

/** Reads the boot record back, or throws if the data page holds none. */
export function readBootRecord(memory: GuestMemory): BootRecord {
  const get = (slot: number): number => memory.read32(DATA_PAGE * PAGE_SIZE + 4 * slot);
  const getWide = (slot: number): number => get(slot) + get(slot + 1) * TWO_32;
  if (get(Slot.magic) !== MAGIC || get(Slot.layout) !== LAYOUT_VERSION) {
    throw new RangeError("guest memory holds no booted workload (data page magic or layout version is wrong)");
  }
  const interrupts = SETUPS[get(Slot.interrupts)];
  const pattern = PATTERNS[get(Slot.pattern)];
  const nameLength = get(Slot.nameLength);
  const cpus = get(Slot.cpus);
  if (interrupts === undefined || pattern === undefined || nameLength > NAME_BYTES || cpus < 1 || cpus > MAX_CPUS) {
    throw new RangeError("guest data page is corrupt (interrupt setup, dirty pattern, name length or CPU count out of range)");
  }
  const words = new Uint32Array(NAME_BYTES / 4);
  for (let i = 0; i < words.length; i++) words[i] = get(Slot.name + i);
  return {
    name: new TextDecoder().decode(new Uint8Array(words.buffer, 0, nameLength)),
    interrupts,
    dirtyBytesPerSecond: getWide(Slot.rate),
    workingSetBytes: getWide(Slot.workingSet),
    pattern,
    seed: get(Slot.seed),
    timerHz: get(Slot.timerHz),
    cpus,
    timerCount: get(Slot.timerCount),
    bootTime: getWide(Slot.bootTime),
  };
}
