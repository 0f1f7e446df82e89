import { describe, expect, it } from "vitest";
import { QemuStreamError } from "../src/interchange/qemu/cursor.js";
import { readQemuStream } from "../src/interchange/qemu/stream.js";
import { DEVICE_SECTIONS, FIXTURES, assemble, fixtureBytes, fixtureParts, type Part } from "./qemu-stream-fixture.js";

const errorOf = (bytes: Uint8Array): QemuStreamError => {
  try {
    readQemuStream(bytes);
  } catch (e) {
    if (e instanceof QemuStreamError) return e;
    throw e;
  }
  throw new Error("the stream was accepted");
};

describe("QEMU 7.2 migration streams recorded by traces/qemu-state/record.sh", () => {
  it.each(FIXTURES)("%s: every section is delimited, RAM skipped, and the device sections match the built-in layouts", (name) => {
    const s = readQemuStream(fixtureBytes(name));
    expect(s.machine).toBe("pc-i440fx-7.2");
    expect(s.capabilities).toEqual(["x-ignore-shared"]);
    // The shared guest memory is left out; the firmware's ROM blocks still travel.
    expect(s.ram.blocks.map((b) => b.name)).toContain("pc.bios");
    expect(s.ram.pages + s.ram.zeroPages).toBeGreaterThan(0);
    const cpus = Number(name[3]);
    const names = s.sections.filter((x) => x.kind === "full").map((x) => `${x.name}/${x.instance}`);
    for (const wanted of ["timer/0", "i8259/0", "i8259/1", "i8254/0", "ioapic/0", ...Array.from({ length: cpus }, (_, k) => [`apic/${k}`, `cpu/${k}`, `cpu_common/${k}`]).flat()]) {
      expect(names).toContain(wanted);
    }
    expect(names.filter((n) => n.startsWith("apic/"))).toHaveLength(cpus);
    expect(s.sections.every((x) => x.kind !== "full" || x.read === "description")).toBe(true);
    expect(s.layoutNotes).toEqual([]);
  });

  it("reads the same fields by the built-in layouts when the stream has no description", () => {
    const { head, sections } = fixtureParts("cpu2-idle");
    const parts = [...DEVICE_SECTIONS, "apic/1", "cpu_common/1"].map((k) => sections.get(k)!);
    const withDescription = readQemuStream(assemble(head, parts));
    const without = readQemuStream(assemble(head, parts, false));
    expect(without.descriptionOffset).toBeUndefined();
    expect(without.sections.map((x) => x.read)).toEqual(parts.map(() => "built-in"));
    expect(without.states).toEqual(withDescription.states);
  });

  it("reads the wait-for-SIPI subsection of an AP at reset", () => {
    const s = readQemuStream(fixtureBytes("cpu2-reset"));
    const ap = s.states.find((x) => x.name === "apic" && x.instance === 1)!;
    expect(ap.fields.apic_sipi).toEqual({ sipi_vector: 0, wait_for_sipi: 1 });
  });
});

describe("bad streams", () => {
  const { head, sections } = fixtureParts("cpu1-idle");
  const parts = DEVICE_SECTIONS.map((k) => sections.get(k)!);
  const small = assemble(head, parts);

  it("a stream cut at any byte is an error naming where it ends, never a crash", () => {
    expect(small.length).toBeLessThan(8000);
    // Cut right after EOF it is a whole stream written without its JSON description.
    const eof = head.length + parts.reduce((n, p) => n + p.bytes.length, 0) + 1;
    expect(readQemuStream(small.subarray(0, eof)).descriptionOffset).toBeUndefined();
    for (let n = 0; n < small.length; n++) {
      if (n === eof) continue;
      const e = errorOf(small.subarray(0, n));
      expect(e.message, `cut at ${n}`).toMatch(new RegExp(`\\b${n}\\b`));
    }
  });

  it("a real stream cut among its device sections names where it ends", () => {
    const whole = fixtureBytes("cpu2-idle");
    const cpu = readQemuStream(whole).sections.find((x) => x.name === "cpu")!;
    expect(errorOf(whole.subarray(0, cpu.end + 50)).message).toMatch(new RegExp(`^byte ${cpu.offset} .*section cpu \\(instance 0, version 12\\): no layout`));
    for (const n of [cpu.offset + 1, cpu.end + 50, whole.length - 1]) {
      expect(errorOf(whole.subarray(0, n)).message).toMatch(new RegExp(`(ends|ending) at byte ${n}\\b`));
    }
  });

  it("names the offset of a wrong magic, version or marker", () => {
    const wrong = (at: number, value: number) => {
      const b = Uint8Array.from(small);
      b[at] = value;
      return b;
    };
    expect(errorOf(wrong(0, 0x50)).message).toMatch(/^byte 0 .*not a QEMU migration stream/);
    expect(errorOf(wrong(7, 2)).message).toMatch(/^byte 4 .*stream version 2/);
    expect(errorOf(wrong(head.length, 0x09)).message).toMatch(new RegExp(`^byte ${head.length} .*0x9 is not a section marker`));
  });

  it("a section whose bytes do not fit its layout is named", () => {
    // The i8254 section one byte short: its footer is read one byte early.
    const i8254 = parts.findIndex((p) => p === sections.get("i8254/0"));
    const short: Part = { ...parts[i8254]!, bytes: Buffer.concat([parts[i8254]!.bytes.subarray(0, 40), parts[i8254]!.bytes.subarray(41)]) };
    const e = errorOf(assemble(head, parts.map((p, i) => (i === i8254 ? short : p))));
    expect(e.message).toMatch(/expected the footer of section i8254 \(instance 0, version 3\) \(0x7e\), found 0x0/);
    // A description that does not match the stream's sections.
    const swapped = assemble(head, [parts[1]!, parts[0]!, ...parts.slice(2)]);
    const bytes = Buffer.from(swapped);
    const json = bytes.indexOf("{");
    bytes.set(Buffer.from(JSON.stringify({ page_size: 4096, devices: parts.map((p) => p.described) })), json);
    expect(errorOf(bytes).message).toMatch(/section cpu_common \(instance 0, version 1\): the JSON description lists section timer/);
  });

  it("an unknown section is walked by the description, and without one it is an error naming it", () => {
    const widget: Part = {
      bytes: Buffer.concat([Buffer.from([4, 0, 0, 0, 99, 5]), Buffer.from("gizmo"), Buffer.from([0, 0, 0, 0, 0, 0, 0, 2, 0xab, 0xcd, 0xef, 0x01, 0x7e, 0, 0, 0, 99])]),
      described: { name: "gizmo", instance_id: 0, vmsd_name: "gizmo", version: 2, fields: [{ name: "knob", type: "uint32", size: 4 }] },
    };
    const s = readQemuStream(assemble(head, [...parts, widget]));
    expect(s.states.at(-1)).toMatchObject({ name: "gizmo", version: 2, fields: { knob: 0xabcdef01 } });
    const e = errorOf(assemble(head, [...parts, widget], false));
    expect(e.offset).toBe(head.length + parts.reduce((n, p) => n + p.bytes.length, 0));
    expect(e.message).toMatch(/section gizmo \(instance 0, version 2\): no layout for this section/);
  });
});
