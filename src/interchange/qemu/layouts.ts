// The vmstate layouts of QEMU 7.2's interrupt/timer sections, known without the stream's JSON
// description (hw/intc/i8259_common.c, hw/timer/i8254_common.c, hw/intc/apic_common.c,
// hw/intc/ioapic_common.c, the CPU's cpu_common, the virtual clock's timer), and the check of a description against them.
// docs/qemu-state.md.

import type { VmField, VmLayout } from "./vmstate.js";

const scalar = (type: "uint8" | "uint16" | "uint32" | "int32" | "uint64" | "int64" | "bool", name: string, array_len?: number): VmField => ({
  name,
  type,
  size: { uint8: 1, bool: 1, uint16: 2, uint32: 4, int32: 4, uint64: 8, int64: 8 }[type],
  ...(array_len === undefined ? {} : { array_len }),
});
const bytes = (names: string): VmField[] => names.split(" ").map((n) => scalar("uint8", n));

const PIC: VmLayout = {
  vmsd_name: "i8259",
  version: 1,
  fields: bytes(
    "last_irr irr imr isr priority_add irq_base read_reg_select poll special_mask init_state auto_eoi rotate_on_auto_eoi special_fully_nested_mode init4 single_mode elcr",
  ),
  // Written by QEMU 8.0 and later when the chip-wide level-trigger bit is set.
  subsections: [{ vmsd_name: "i8259/ltim", version: 1, fields: bytes("ltim") }],
};

const PIT_CHANNEL: VmLayout = {
  vmsd_name: "pit channel",
  version: 2,
  fields: [
    scalar("int32", "count"),
    scalar("uint16", "latched_count"),
    ...bytes("count_latched status_latched status read_state write_state write_latch rw_mode mode bcd gate"),
    scalar("int64", "count_load_time"),
    scalar("int64", "next_transition_time"),
  ],
};

const PIT: VmLayout = {
  vmsd_name: "i8254",
  version: 3,
  fields: [
    scalar("uint32", "channels[0].irq_disabled"),
    { name: "channels", type: "struct", size: 32, array_len: 3, struct: PIT_CHANNEL },
    scalar("int64", "channels[0].next_transition_time"),
  ],
};

const LAPIC: VmLayout = {
  vmsd_name: "apic",
  version: 3,
  fields: [
    scalar("uint32", "apicbase"),
    ...bytes("id arb_id tpr"),
    scalar("uint32", "spurious_vec"),
    ...bytes("log_dest dest_mode"),
    scalar("uint32", "isr", 8),
    scalar("uint32", "tmr", 8),
    scalar("uint32", "irr", 8),
    scalar("uint32", "lvt", 6),
    scalar("uint32", "esr"),
    scalar("uint32", "icr", 2),
    scalar("uint32", "divide_conf"),
    scalar("int32", "count_shift"),
    scalar("uint32", "initial_count"),
    scalar("int64", "initial_count_load_time"),
    scalar("int64", "next_time"),
    scalar("int64", "timer_expiry"),
  ],
  // Written while the CPU waits for a start-up IPI.
  subsections: [{ vmsd_name: "apic_sipi", version: 1, fields: [scalar("int32", "sipi_vector"), scalar("int32", "wait_for_sipi")] }],
};

const IOAPIC: VmLayout = {
  vmsd_name: "ioapic",
  version: 3,
  fields: [...bytes("id ioregsel"), { name: "unused", type: "unused_buffer", size: 8 }, scalar("uint32", "irr"), scalar("uint64", "ioredtbl", 24)],
};

const CPU_COMMON: VmLayout = {
  vmsd_name: "cpu_common",
  version: 1,
  fields: [scalar("uint32", "halted"), scalar("uint32", "interrupt_request")],
  subsections: [
    { vmsd_name: "cpu_common/exception_info", version: 1, fields: [scalar("int32", "exception_index")] },
    { vmsd_name: "cpu_common/crash_occurred", version: 1, fields: [scalar("bool", "crash_occurred")] },
  ],
};

/** The virtual clock's state (softmmu/cpu-timers.c): while stopped, cpu_clock_offset is the clock. */
const TIMERS: VmLayout = {
  vmsd_name: "timer",
  version: 2,
  fields: [scalar("int64", "cpu_ticks_offset"), { name: "unused", type: "unused_buffer", size: 8 }, scalar("int64", "cpu_clock_offset")],
};

/** The built-in layouts by section name; each is the one version it describes. */
export const BUILT_IN_LAYOUTS: ReadonlyMap<string, VmLayout> = new Map([PIC, PIT, LAPIC, IOAPIC, CPU_COMMON, TIMERS].map((l) => [l.vmsd_name, l]));

/**
 * Where the stream's description of a section departs from the built-in layout of the same
 * version: one line per difference, empty when they agree (subsections the stream did not
 * write are not differences).
 */
export function layoutDifferences(known: VmLayout, described: VmLayout, where = known.vmsd_name): string[] {
  const out: string[] = [];
  const n = Math.max(known.fields.length, described.fields.length);
  for (let i = 0; i < n; i++) {
    const k = known.fields[i];
    const d = described.fields[i];
    if (!k || !d) {
      out.push(`${where}: field ${i} is ${d ? `${JSON.stringify(d.name)} in the stream` : `${JSON.stringify(k!.name)} here`} and missing ${d ? "here" : "in the stream"}`);
      continue;
    }
    const shape = (f: VmField) => `${f.name} ${f.type} ${f.size}${f.array_len === undefined ? "" : `×${f.array_len}`}`;
    if (shape(k) !== shape(d)) out.push(`${where}: field ${i} is ${shape(d)} in the stream, ${shape(k)} here`);
    else if (k.struct && d.struct) out.push(...layoutDifferences(k.struct, d.struct, `${where}.${k.name}`));
  }
  for (const sub of described.subsections ?? []) {
    const k = known.subsections?.find((s) => s.vmsd_name === sub.vmsd_name);
    if (!k) out.push(`${where}: subsection ${sub.vmsd_name} is not known here`);
    else if (k.version !== sub.version) out.push(`${where}: subsection ${sub.vmsd_name} is version ${sub.version} in the stream, ${k.version} here`);
    else out.push(...layoutDifferences(k, sub, sub.vmsd_name));
  }
  return out;
}
