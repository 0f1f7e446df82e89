// Parses the HMP text saved beside each stream fixture (QEMU 7.2's `info pic`, which prints the
// I/O APIC and both 8259s, and `info lapic N`): the independent expectation of the import tests.

export interface InfoPic {
  irr: number;
  imr: number;
  isr: number;
  hprio: number;
  irqBase: number;
  rrSel: number;
  elcr: number;
  fnm: number;
}

export interface InfoLapic {
  lvt: Record<"timer" | "thermal" | "perf" | "lint0" | "lint1" | "error", number>;
  dcr: number;
  initialCount: number;
  currentCount: number;
  spiv: number;
  icr: number;
  icr2: number;
  esr: number;
  isr: number[];
  irr: number[];
  /** Vectors the ISR or IRR line marks "(level)": the TMR bits among them. */
  level: number[];
  apr: number;
  tpr: number;
  dfr: number;
  ldr: number;
  ppr: number;
}

export interface Info {
  ioapic: { id: number; sel: number; redir: bigint[] };
  pic: { master: InfoPic; slave: InfoPic };
  lapics: InfoLapic[];
}

const LVT_LABELS = { LVTT: "timer", LVTTHMR: "thermal", LVTPC: "perf", LVT0: "lint0", LVT1: "lint1", LVTERR: "error" } as const;

function must(m: RegExpMatchArray | null, what: string): RegExpMatchArray {
  if (!m) throw new Error(`info text: no ${what}`);
  return m;
}

function vectorList(text: string): { vectors: number[]; level: number[] } {
  const vectors: number[] = [];
  const level: number[] = [];
  if (text.trim() === "(none)") return { vectors, level };
  for (const m of text.matchAll(/(\d+)(\(level\))?/g)) {
    vectors.push(Number(m[1]));
    if (m[2]) level.push(Number(m[1]));
  }
  return { vectors, level };
}

export function parseInfo(text: string): Info {
  const blocks = text.split(/^## /m).slice(1);
  const pic = blocks.find((b) => b.startsWith("info pic"))!;
  const io = must(pic.match(/ioapic0: ver=0x[0-9a-f]+ id=0x([0-9a-f]+) sel=0x([0-9a-f]+)/), "ioapic line");
  const redir = [...pic.matchAll(/^ {2}pin +\d+ +0x([0-9a-f]{16})/gm)].map((m) => BigInt(`0x${m[1]}`));
  const chip = (n: number): InfoPic => {
    const m = must(pic.match(new RegExp(`pic${n}: irr=(\\w+) imr=(\\w+) isr=(\\w+) hprio=(\\d+) irq_base=(\\w+) rr_sel=(\\d+) elcr=(\\w+) fnm=(\\d+)`)), `pic${n} line`);
    const [irr, imr, isr, hprio, irqBase, rrSel, elcr, fnm] = m.slice(1).map((v, i) => parseInt(v!, [3, 5, 7].includes(i) ? 10 : 16));
    return { irr: irr!, imr: imr!, isr: isr!, hprio: hprio!, irqBase: irqBase!, rrSel: rrSel!, elcr: elcr!, fnm: fnm! };
  };
  const lapics = blocks
    .filter((b) => b.startsWith("info lapic"))
    .map((b): InfoLapic => {
      const reg = (label: string) => parseInt(must(b.match(new RegExp(`^${label}\\t 0x([0-9a-f]+)`, "m")), label)[1]!, 16);
      const lvt = Object.fromEntries(Object.entries(LVT_LABELS).map(([label, name]) => [name, reg(label)])) as InfoLapic["lvt"];
      const timer = must(b.match(/DCR=0x([0-9a-f]+) .* initial_count = (\d+) current_count = (\d+)/), "Timer line");
      const isr = vectorList(must(b.match(/^ISR\t (.*)$/m), "ISR line")[1]!);
      const irr = vectorList(must(b.match(/^IRR\t (.*)$/m), "IRR line")[1]!);
      const tail = must(b.match(/APR 0x(\w+) TPR 0x(\w+) DFR 0x(\w+) LDR 0x(\w+) PPR 0x(\w+)/), "APR line").slice(1).map((v) => parseInt(v, 16));
      return {
        lvt,
        dcr: parseInt(timer[1]!, 16),
        initialCount: Number(timer[2]),
        currentCount: Number(timer[3]),
        spiv: reg("SPIV"),
        icr: reg("ICR"),
        icr2: reg("ICR2"),
        esr: reg("ESR"),
        isr: isr.vectors,
        irr: irr.vectors,
        level: [...isr.level, ...irr.level],
        apr: tail[0]!,
        tpr: tail[1]!,
        dfr: tail[2]!,
        ldr: tail[3]!,
        ppr: tail[4]!,
      };
    });
  return { ioapic: { id: parseInt(io[1]!, 16), sel: parseInt(io[2]!, 16), redir }, pic: { master: chip(0), slave: chip(1) }, lapics };
}
