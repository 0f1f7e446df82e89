// Walks a QEMU migration stream (migration/savevm.c's format, version 3): the header, the
// configuration, every section with its footer, EOF and the JSON VM description after it.
// Device sections are read into named fields by the description or by a built-in layout; RAM
// is skipped. docs/qemu-state.md.

import { Cursor, QemuStreamError } from "./cursor.js";
import { BUILT_IN_LAYOUTS, layoutDifferences } from "./layouts.js";
import { skipRamRecords, type RamSkip } from "./ram.js";
import { readVmState, type DescribedSection, type VmField, type VmLayout, type VmRecord } from "./vmstate.js";

export const QEMU_FILE_MAGIC = 0x5145564d; // "QEVM"
export const QEMU_FILE_VERSION = 3;

const enum Marker {
  Eof = 0x00,
  SectionStart = 0x01,
  SectionPart = 0x02,
  SectionEnd = 0x03,
  SectionFull = 0x04,
  Description = 0x06,
  Configuration = 0x07,
  Command = 0x08,
  Footer = 0x7e,
}
const SECTION_KIND: Record<number, SectionKind> = {
  [Marker.SectionStart]: "start",
  [Marker.SectionPart]: "part",
  [Marker.SectionEnd]: "end",
  [Marker.SectionFull]: "full",
};
type SectionKind = "start" | "part" | "end" | "full";

/** One section record of the stream, where it lies and how its payload was read. */
export interface SectionRecord {
  offset: number;
  end: number;
  kind: SectionKind;
  id: number;
  name: string;
  instance: number;
  version: number;
  /** "description": by the stream's JSON description; "built-in": by layouts.ts; "ram": skipped as RAM. */
  read: "description" | "built-in" | "ram";
}

/** A device section's fields. */
export interface SectionState {
  name: string;
  instance: number;
  version: number;
  offset: number;
  fields: VmRecord;
}

export interface QemuStream {
  /** The machine type from the configuration section ("pc-i440fx-7.2"). */
  machine?: string;
  capabilities: string[];
  sections: SectionRecord[];
  states: SectionState[];
  ram: RamSkip;
  /** Commands (QEMU_VM_COMMAND) met, by number. */
  commands: number[];
  /** Whether the JSON VM description was present, and where it starts. */
  descriptionOffset?: number;
  /** Places where the description and the built-in layouts disagree. */
  layoutNotes: string[];
}

const MAX_DESCRIPTION_SEARCH = 16 << 20;

/** Reads a whole stream; a truncated or corrupt one throws QemuStreamError naming the byte. */
export function readQemuStream(bytes: Uint8Array): QemuStream {
  const c = new Cursor(bytes);
  const description = findDescription(bytes);
  const described = description ? [...description.sections] : [];
  const out: QemuStream = { capabilities: [], sections: [], states: [], ram: { blocks: [], pages: 0, zeroPages: 0 }, commands: [], layoutNotes: [] };
  if (description) out.descriptionOffset = description.offset;

  const magicAt = c.offset;
  if (c.u32("the file magic") !== QEMU_FILE_MAGIC) c.fail('not a QEMU migration stream: the file does not start with "QEVM"', magicAt);
  const version = c.u32("the stream version");
  if (version !== QEMU_FILE_VERSION) c.fail(`stream version ${version}: this reader reads version ${QEMU_FILE_VERSION}`, magicAt + 4);

  const open = new Map<number, SectionRecord>();
  // Machine types from 2.4 on end every section with a footer, older ones none: the first section tells.
  let footers: boolean | undefined;
  const pageSize = description?.pageSize ?? 4096;
  for (;;) {
    const at = c.offset;
    const marker = c.u8("a section marker");
    if (marker === Marker.Eof) break;
    if (marker === Marker.Configuration) {
      readConfiguration(c, out);
      continue;
    }
    if (marker === Marker.Command) {
      out.commands.push(c.u16("a command's number"));
      c.skip(c.u16("a command's length"), "a command's data");
      continue;
    }
    const kind = SECTION_KIND[marker];
    if (!kind) c.fail(`0x${marker.toString(16)} is not a section marker`, at);
    const id = c.u32("the section id");
    let section: SectionRecord;
    if (kind === "start" || kind === "full") {
      const name = c.name("the section name");
      const instance = c.u32(`section ${name}'s instance id`);
      const version = c.u32(`section ${name}'s version`);
      section = { offset: at, end: at, kind, id, name, instance, version, read: "ram" };
      if (kind === "start") open.set(id, section);
    } else {
      const started = open.get(id) ?? c.fail(`a ${kind} record of section id ${id}, which no start record opened`, at);
      section = { ...started, offset: at, end: at, kind };
      if (kind === "end") open.delete(id);
    }
    const where = `section ${section.name} (instance ${section.instance}, version ${section.version})`;
    if (kind === "full") {
      const layout = layoutFor(c, section, described, out.layoutNotes, where);
      section.read = layout.source;
      const fields = readVmState(c, layout.layout, layout.source === "description" ? "exact" : "optional", section.name);
      out.states.push({ name: section.name, instance: section.instance, version: section.version, offset: at, fields });
    } else if (section.name === "ram") {
      skipRamRecords(c, { ignoreShared: out.capabilities.includes("x-ignore-shared"), pageSize }, out.ram);
    } else {
      c.fail(`${where}: an iterative section other than ram, whose records cannot be delimited`, at);
    }
    footers ??= c.peek() === Marker.Footer;
    if (footers) readFooter(c, id, where);
    section.end = c.offset;
    out.sections.push(section);
  }
  if (description) {
    if (c.offset !== description.offset) c.fail(`the stream ends its sections at byte ${c.offset}, but the JSON description found at the end starts at byte ${description.offset}`);
    if (described.length > 0) c.fail(`the JSON description lists section ${described[0]!.name} (instance ${described[0]!.instance_id}), which the stream does not have`, description.offset);
  } else if (!c.atEnd) {
    c.fail(`${c.length - c.offset} bytes after the end of the stream (which ends at byte ${c.length}) that are not a JSON description`);
  }
  return out;
}

function readFooter(c: Cursor, id: number, where: string): void {
  const at = c.offset;
  c.expect(Marker.Footer, `the footer of ${where}`);
  const footerId = c.u32("the section footer's id");
  if (footerId !== id) c.fail(`${where}: its footer names section id ${footerId}, not ${id}: the section's payload is not what its layout says`, at);
}

/** The configuration: the machine type and the subsections QEMU 7.2 may add. */
function readConfiguration(c: Cursor, out: QemuStream): void {
  out.machine = String.fromCharCode(...c.bytesOf(c.u32("the machine type's length"), "the machine type"));
  while (c.peek() === 0x05) {
    const at = c.offset;
    c.skip(1, "subsection marker");
    const name = c.name("a configuration subsection's name");
    c.u32(`${name}'s version`);
    if (name === "configuration/capabilities") {
      const count = c.u32("the capability count");
      for (let i = 0; i < count; i++) out.capabilities.push(c.name(`capability ${i}`));
    } else if (name === "configuration/target-page-bits") {
      c.u32("the target page bits");
    } else if (name === "configuration/uuid") {
      c.skip(16, "the VM's UUID");
    } else {
      c.fail(`configuration subsection ${JSON.stringify(name)} is not one this reader knows`, at);
    }
  }
}

/** The layout to read a FULL section by: the stream's description, else the built-in one. */
function layoutFor(
  c: Cursor,
  section: SectionRecord,
  described: DescribedSection[],
  notes: string[],
  where: string,
): { layout: VmLayout; source: "description" | "built-in" } {
  const known = BUILT_IN_LAYOUTS.get(section.name);
  if (described.length > 0) {
    const d = described.shift()!;
    if (d.name !== section.name || d.instance_id !== section.instance) {
      c.fail(`${where}: the JSON description lists section ${d.name} (instance ${d.instance_id}) here`, section.offset);
    }
    if (d.version !== section.version) c.fail(`${where}: the JSON description gives version ${d.version}`, section.offset);
    if (d.undescribed) c.fail(`${where}: written by an old-style save handler, whose fields the JSON description does not list: its end cannot be found`, section.offset);
    if (known && known.version === section.version) notes.push(...layoutDifferences(known, d).map((l) => `instance ${section.instance}: ${l}`));
    return { layout: d, source: "description" };
  }
  const noDescription = `the stream (ending at byte ${c.length}) has no JSON description: it is truncated, or was written without one`;
  if (!known) c.fail(`${where}: no layout for this section: ${noDescription}, and this reader knows no such section`, section.offset);
  if (known.version !== section.version) c.fail(`${where}: ${noDescription}, and this reader knows version ${known.version} of the section`, section.offset);
  return { layout: known, source: "built-in" };
}

interface Description {
  offset: number;
  pageSize?: number;
  sections: DescribedSection[];
}

/**
 * The JSON VM description QEMU writes after EOF: found from the end (its marker, a 32-bit
 * length that reaches exactly the end of the file, and JSON of the right shape), so that
 * sections can be read by it as the walk meets them.
 */
function findDescription(bytes: Uint8Array): Description | undefined {
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const floor = Math.max(1, bytes.length - MAX_DESCRIPTION_SEARCH);
  for (let at = bytes.length - 7; at >= floor; at--) {
    if (bytes[at] !== Marker.Description || bytes[at - 1] !== Marker.Eof || view.getUint32(at + 1) !== bytes.length - at - 5) continue;
    let json: unknown;
    try {
      json = JSON.parse(new TextDecoder("utf-8", { fatal: true }).decode(bytes.subarray(at + 5)));
    } catch {
      continue;
    }
    return { offset: at, ...checkDescription(json, at + 5) };
  }
  return undefined;
}

/** The description's sections, checked to be what the walker can trust for sizes and names. */
function checkDescription(json: unknown, offset: number): Omit<Description, "offset"> {
  const fail = (what: string): never => {
    throw new QemuStreamError(offset, `the JSON VM description: ${what}`);
  };
  const obj = (v: unknown, what: string): Record<string, unknown> =>
    typeof v === "object" && v !== null && !Array.isArray(v) ? (v as Record<string, unknown>) : fail(`${what} is not an object`);
  const count = (v: unknown, what: string, min: number): number => (Number.isSafeInteger(v) && (v as number) >= min ? (v as number) : fail(`${what} is not a whole number ≥ ${min}`));
  const text = (v: unknown, what: string): string => (typeof v === "string" ? v : fail(`${what} is not a string`));
  const list = (v: unknown, what: string): unknown[] => (v === undefined ? [] : Array.isArray(v) ? v : fail(`${what} is not a list`));
  const field = (v: unknown, what: string): VmField => {
    const f = obj(v, what);
    const out: VmField = { name: text(f.name, `${what}.name`), type: text(f.type, `${what}.type`), size: count(f.size, `${what}.size`, 0) };
    if (f.array_len !== undefined) out.array_len = count(f.array_len, `${what}.array_len`, 1);
    if (f.struct !== undefined) out.struct = layout(f.struct, `${what}.struct`);
    if (f.type === "tmp") out.fields = list(f.fields, `${what}.fields`).map((x, i) => field(x, `${what}.fields[${i}]`));
    return out;
  };
  const layout = (v: unknown, what: string): VmLayout => {
    const l = obj(v, what);
    return {
      vmsd_name: text(l.vmsd_name, `${what}.vmsd_name`),
      version: count(l.version, `${what}.version`, 0),
      fields: list(l.fields, `${what}.fields`).map((x, i) => field(x, `${what}.fields[${i}]`)),
      subsections: list(l.subsections, `${what}.subsections`).map((x, i) => layout(x, `${what}.subsections[${i}]`)),
    };
  };
  const root = obj(json, "the description");
  const sections = list(root.devices, "devices").map((d, i): DescribedSection => {
    const where = `devices[${i}]`;
    const section = obj(d, where);
    const described = { ...layout(d, where), name: text(section.name, `${where}.name`), instance_id: count(section.instance_id, `${where}.instance_id`, 0) };
    // Sections saved by old-style handlers are listed with no fields: nothing says where they end.
    return section.fields === undefined ? { ...described, undescribed: true } : described;
  });
  return { sections, ...(root.page_size === undefined ? {} : { pageSize: count(root.page_size, "page_size", 1) }) };
}
