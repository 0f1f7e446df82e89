// The captured state of the local APIC and the I/O APIC: register values as software reads
// them. Neither chip has write-only state, so there is no shadow; what software cannot write
// (ISR, TMR, IRR, current count, remote IRR) is in here as read and rebuilt by driving the chips.

import { FieldIO, FieldMode } from "../../common/fields";
import { APIC_BASE_ADDRESS, APIC_BASE_BSP, APIC_BASE_ENABLE, APIC_BASE_RESET, APIC_BASE_X2APIC, LVT_COUNT, LVT_MASKED } from "../../registers/lapic";
import { MAX_CPUS } from "../../board/config";
import { ENTRY_MASKED, IOAPIC_ID_BITS, IOAPIC_PIN_COUNT } from "../../registers/ioapic";

const INDEX_NAMES: StaticArray<string> = ["0", "1", "2", "3", "4", "5", "6", "7"];
const APIC_BASE_LEGAL: u64 = APIC_BASE_ADDRESS | APIC_BASE_ENABLE | APIC_BASE_BSP | APIC_BASE_X2APIC;

export class LocalApicRecord {
  /** The register page was readable at capture (the APIC was globally enabled). */
  pageCaptured: bool = false;
  apicBase: u64 = APIC_BASE_RESET;
  tscDeadline: u64 = 0;
  id: u32 = 0;
  tpr: u32 = 0;
  ldr: u32 = 0;
  dfr: u32 = 0xffff_ffff;
  svr: u32 = 0xff;
  isr: StaticArray<u32> = new StaticArray<u32>(8);
  tmr: StaticArray<u32> = new StaticArray<u32>(8);
  irr: StaticArray<u32> = new StaticArray<u32>(8);
  /** ESR as software reads it (what the last ESR write latched). */
  esr: u32 = 0;
  icrLow: u32 = 0;
  icrHigh: u32 = 0;
  lvt: StaticArray<u32> = new StaticArray<u32>(LVT_COUNT);
  initialCount: u32 = 0;
  currentCount: u32 = 0;
  divideConfig: u32 = 0;

  /** Power-on register values: what a page that was not readable is taken to hold. */
  clear(): void {
    this.pageCaptured = false;
    this.apicBase = APIC_BASE_RESET;
    this.tscDeadline = 0;
    this.id = 0;
    this.tpr = 0;
    this.ldr = 0;
    this.dfr = 0xffff_ffff;
    this.svr = 0xff;
    for (let i = 0; i < 8; i++) {
      unchecked((this.isr[i] = 0));
      unchecked((this.tmr[i] = 0));
      unchecked((this.irr[i] = 0));
    }
    this.esr = 0;
    this.icrLow = 0;
    this.icrHigh = 0;
    for (let i = 0; i < LVT_COUNT; i++) unchecked((this.lvt[i] = LVT_MASKED));
    this.initialCount = 0;
    this.currentCount = 0;
    this.divideConfig = 0;
  }

  describe(io: FieldIO): void {
    this.pageCaptured = io.flag("pageCaptured", this.pageCaptured);
    this.apicBase = io.wide("apicBase", this.apicBase);
    if (io.mode == FieldMode.Read && (this.apicBase & ~APIC_BASE_LEGAL) != 0) rejectLast(io);
    this.tscDeadline = io.wide("tscDeadline", this.tscDeadline);
    this.id = io.bits("id", this.id, 0xff00_0000);
    this.tpr = io.field("tpr", this.tpr, 0xff);
    this.ldr = io.bits("ldr", this.ldr, 0xff00_0000);
    this.dfr = io.field("dfr", this.dfr);
    this.svr = io.bits("svr", this.svr, 0x3ff);
    describeWords(io, "isr", this.isr);
    describeWords(io, "tmr", this.tmr);
    describeWords(io, "irr", this.irr);
    this.esr = io.bits("esr", this.esr, 0xe0);
    this.icrLow = io.field("icrLow", this.icrLow);
    this.icrHigh = io.field("icrHigh", this.icrHigh);
    describeWords(io, "lvt", this.lvt);
    this.initialCount = io.field("initialCount", this.initialCount);
    this.currentCount = io.field("currentCount", this.currentCount);
    this.divideConfig = io.bits("divideConfig", this.divideConfig, 0xb);
  }
}

export class IoApicRecord {
  ioregsel: u32 = 0;
  id: u32 = 0;
  low: StaticArray<u32> = new StaticArray<u32>(IOAPIC_PIN_COUNT);
  high: StaticArray<u32> = new StaticArray<u32>(IOAPIC_PIN_COUNT);

  clear(): void {
    this.ioregsel = 0;
    this.id = 0;
    for (let pin = 0; pin < IOAPIC_PIN_COUNT; pin++) {
      unchecked((this.low[pin] = ENTRY_MASKED));
      unchecked((this.high[pin] = 0));
    }
  }

  describe(io: FieldIO): void {
    this.ioregsel = io.field("ioregsel", this.ioregsel, 0xff);
    this.id = io.bits("id", this.id, IOAPIC_ID_BITS);
    io.begin("entries");
    for (let pin = 0; pin < IOAPIC_PIN_COUNT; pin++) {
      io.beginIndex(pin);
      unchecked((this.low[pin] = io.field("low", unchecked(this.low[pin]))));
      unchecked((this.high[pin] = io.field("high", unchecked(this.high[pin]))));
      io.end();
    }
    io.end();
  }
}

export class ApicRecord {
  /** The CPUs' local APICs, made as a record first needs them; the first `count` are described. */
  lapics: Array<LocalApicRecord> = new Array<LocalApicRecord>();
  private cpus: i32 = 1;
  ioapic: IoApicRecord = new IoApicRecord();

  constructor() {
    this.count = 1;
    this.ioapic.clear();
  }

  get count(): i32 {
    return this.cpus;
  }

  set count(cpus: i32) {
    this.cpus = min(max(cpus, 1), MAX_CPUS);
    while (this.lapics.length < this.cpus) {
      const rec = new LocalApicRecord();
      rec.clear();
      this.lapics.push(rec);
    }
  }

  /** CPU 0's local APIC. */
  get lapic(): LocalApicRecord {
    return unchecked(this.lapics[0]);
  }

  /** CPU 0's local APIC as `lapic`, the others' as `aps.K`, then the I/O APIC. */
  describe(io: FieldIO): void {
    io.begin("lapic");
    this.lapic.describe(io);
    io.end();
    if (this.count > 1) {
      io.begin("aps");
      for (let k = 1; k < this.count; k++) {
        io.beginIndex(k);
        unchecked(this.lapics[k]).describe(io);
        io.end();
      }
      io.end();
    }
    io.begin("ioapic");
    this.ioapic.describe(io);
    io.end();
  }
}

function describeWords(io: FieldIO, name: string, words: StaticArray<u32>): void {
  io.begin(name);
  for (let i = 0; i < words.length; i++) unchecked((words[i] = io.field(INDEX_NAMES[i], unchecked(words[i]))));
  io.end();
}

/** Marks the field just read as out of range. */
function rejectLast(io: FieldIO): void {
  if (io.error < 0) io.error = io.count - 1;
}
