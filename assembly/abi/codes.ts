// The numbers that cross the core's WebAssembly boundary, each named once. This file is plain
// TypeScript that AssemblyScript compiles too: the core (assembly/) and the host (src/) both
// import it, so neither side keeps a copy. docs/architecture.md describes the boundary.

/** The hypervisor's intercept policy (init's `policy`). */
export const enum Policy {
  /** No hypervisor: nothing is trapped, so nothing can be captured. */
  None = 0,
  /** Trap only what carries write-only state (BLMVisor's policy). */
  Blmvisor = 1,
  /** Trap every device access and every interrupt acknowledge. */
  Full = 2,
}

/** Rows of the exit counters (exitsByReason). */
export const enum ExitReason {
  IoIn = 0,
  IoOut = 1,
  MmioRead = 2,
  MmioWrite = 3,
  MsrRead = 4,
  MsrWrite = 5,
  ExternalInterrupt = 6,
  /** An INIT signal to a CPU running a guest (VMX exits on every one). */
  InitSignal = 7,
  /** A start-up IPI to a CPU waiting for one. */
  Sipi = 8,
  Count = 9,
}

/** MMIO regions of the per-register exit counters (exitsByMmioRegister), 256 registers each. */
export const enum MmioRegion {
  LocalApic = 0,
  IoApic = 1,
  Other = 2,
  Count = 3,
}

/** MSRs with a counter of their own (exitsByMsr); every other MSR counts as Other. */
export const enum MsrSlot {
  Tsc = 0,
  ApicBase = 1,
  TscDeadline = 2,
  /** The x2APIC registers, MSRs 0x800–0x8ff. */
  X2Apic = 3,
  Other = 4,
  Count = 5,
}

/** What inta answers besides a vector 0–255. */
export const enum InterruptAnswer {
  /** Nothing is deliverable (`inta = none`). */
  None = -1,
  /** A non-maskable interrupt is taken (`inta = nmi`). */
  Nmi = 256,
}

/** A CPU's start-up (sipiState): these, or the vector of the start-up IPI it started on. */
export const enum SipiState {
  /** Running since reset (the bootstrap processor), never sent to wait for a start-up IPI. */
  Reset = -2,
  /** Waiting for a start-up IPI (`sipi = none`). */
  Waiting = -1,
}

/** What captureState, reconstructState and applyTimerPhase answer. */
export const enum StateResult {
  Ok = 0,
  /** The policy kept no shadows of the write-only state (policy None). */
  NoShadows = 1,
  /** A field out of its register's range, a wrong field count, or a moment already past. */
  BadRecord = 2,
  /** The record describes another board (devices, clocks, compatibility mode). */
  ConfigMismatch = 3,
}

/** Why replayRecords returned. */
export const enum ReplayStop {
  End = 0,
  Mismatch = 1,
  Migrate = 2,
  Mark = 3,
  /** A port, MMIO or MSR event performed by a CPU that waits for a start-up IPI (a mismatch). */
  CpuWaiting = 4,
}

/** What replayStatus(which) reports. */
export const enum ReplayCounter {
  Reads = 0,
  Checked = 1,
  Interrupts = 2,
  /** A ReplayStop. */
  StopReason = 3,
  /** The value the stopping record got (a mismatch), low and high 32 bits. */
  ActualLow = 4,
  ActualHigh = 5,
}

/** A compiled trace record's operation (docs/traces.md, the .btrace layout). */
export const enum TraceOp {
  Outb = 1,
  Outw = 2,
  Outl = 3,
  Inb = 4,
  Inw = 5,
  Inl = 6,
  Writel = 7,
  Readl = 8,
  Wrmsr = 9,
  Rdmsr = 10,
  Irq = 11,
  Gsi = 12,
  Inta = 13,
  Mark = 14,
  Migrate = 15,
  /** `cpu K`: the CPU-relative events that follow are CPU K's. */
  Cpu = 16,
  /** `sipi`: checks the current CPU's start-up. */
  Sipi = 17,
}

/** What a record's expectation asks for. */
export const enum TraceCheck {
  /** No expectation: a read is executed and its value is not compared. */
  None = 0,
  /** `= V` or `= V/M`: (result & mask) must equal (value & mask). */
  Value = 1,
  /** `= none`: `inta` — no interrupt may be deliverable; `sipi` — the CPU still waits for a start-up IPI. */
  NoInterrupt = 2,
  /** `inta = nmi`: a non-maskable interrupt must be taken. */
  Nmi = 3,
}

/** Byte offsets of a compiled trace record's fields. */
export const enum RecordField {
  Op = 0,
  Check = 1,
  Reserved = 2,
  Line = 4,
  A = 8,
  B = 12,
  High = 16,
  Value = 20,
  Mask = 24,
  MaskHigh = 28,
  Time = 32,
  /** The record's size. */
  Size = 40,
}

/**
 * The rule table checkRecords applies (recordRules): one row of RecordRule.Size u32 words per
 * op code below RECORD_RULE_ROWS, written by the host from the trace format's operand table.
 */
export const enum RecordRule {
  /** The largest operand a (unless the row's flags name the label table or the CPUs). */
  AMax = 0,
  /** The largest operand b. */
  BMax = 1,
  /** The largest expected value and mask of a value check. */
  Width = 2,
  /** RuleFlag bits. */
  Flags = 3,
  Size = 4,
}

/** Op codes the rule table has rows for (every other code is unknown). */
export const RECORD_RULE_ROWS = 32;

/** Bits of a rule row's flags. Bit n below CheckBits allows TraceCheck n. */
export const enum RuleFlag {
  CheckBits = 4,
  /** a indexes the label table (mark). */
  ALabel = 1 << 4,
  /** a names a CPU of the board (cpu). */
  ACpu = 1 << 5,
  /** The high word is an operand (wrmsr's value bits 63..32). */
  HighOperand = 1 << 6,
  /** A value check may use the high words (rdmsr). */
  HighExpected = 1 << 7,
}

/** The most CPUs a board can have (the trace format's limit too). */
export const MAX_CPUS = 64;
