// QEMU's vmstate layouts and the one walker that reads a section's fields by them. A layout
// has the shape of the JSON VM description QEMU writes after the stream (field name, type,
// size as written, array_len, nested structs, subsections), so the stream's own description
// and the built-in layouts of layouts.ts are read the same way. docs/qemu-state.md.

import { Cursor } from "./cursor.js";

export interface VmField {
  name: string;
  /** QEMU's type name: uint8 … int64, bool, timer, struct, tmp, buffer, unused_buffer, … */
  type: string;
  /** Bytes one element takes in the stream. */
  size: number;
  /** Elements written one after another under this one description (QEMU's compressed arrays). */
  array_len?: number;
  /** The element layout of a "struct" field. */
  struct?: VmLayout;
  /** The inline fields of a "tmp" field. */
  fields?: VmField[];
}

export interface VmLayout {
  vmsd_name: string;
  version: number;
  fields: VmField[];
  /** Written after the fields, each behind a subsection marker and its name. */
  subsections?: VmLayout[];
}

/** A section as the JSON description lists it. */
export interface DescribedSection extends VmLayout {
  name: string;
  instance_id: number;
  /** Listed without fields (an old-style save handler's section). */
  undescribed?: boolean;
}

export type VmValue = number | bigint | Uint8Array | VmValue[] | VmRecord;
export interface VmRecord {
  [field: string]: VmValue;
}

/** The marker before each subsection. */
export const SUBSECTION_MARKER = 0x05;

/** How the walker treats subsections: exactly those listed, or any listed ones that appear. */
export type SubsectionRule = "exact" | "optional";

type ScalarReader = (c: Cursor, what: string) => number | bigint;
const u8: ScalarReader = (c, w) => c.u8(w);
const SCALARS: Record<string, [size: number, read: ScalarReader]> = {
  bool: [1, u8],
  uint8: [1, u8],
  "uint8 equal": [1, u8],
  int8: [1, (c, w) => (c.u8(w) << 24) >> 24],
  uint16: [2, (c, w) => c.u16(w)],
  "uint16 equal": [2, (c, w) => c.u16(w)],
  int16: [2, (c, w) => (c.u16(w) << 16) >> 16],
  uint32: [4, (c, w) => c.u32(w)],
  "uint32 equal": [4, (c, w) => c.u32(w)],
  int32: [4, (c, w) => c.i32(w)],
  "int32 equal": [4, (c, w) => c.i32(w)],
  "int32 le": [4, (c, w) => c.i32(w)],
  uint64: [8, (c, w) => c.u64(w)],
  int64: [8, (c, w) => c.i64(w)],
  timer: [8, (c, w) => c.i64(w)],
};

/**
 * Reads one vmstate (a section's body, a struct element or a subsection) by `layout`: scalars
 * as numbers (64-bit ones as bigint), unknown types as their bytes, subsections under their
 * names. A field whose bytes disagree with its stated size is an error at its offset.
 */
export function readVmState(c: Cursor, layout: VmLayout, rule: SubsectionRule, where: string): VmRecord {
  const record: VmRecord = {};
  for (const field of layout.fields) {
    const count = field.array_len ?? 1;
    const values: VmValue[] = [];
    for (let i = 0; i < count; i++) values.push(readField(c, field, rule, `${where}.${field.name}${count > 1 ? `[${i}]` : ""}`));
    record[field.name] = field.array_len === undefined ? values[0]! : values;
  }
  if (rule === "exact") {
    for (const sub of layout.subsections ?? []) {
      const at = c.offset;
      c.expect(SUBSECTION_MARKER, `the subsection marker of ${sub.vmsd_name}`);
      const name = c.name(`${where}'s subsection name`);
      if (name !== sub.vmsd_name) c.fail(`${where}: subsection ${JSON.stringify(name)} where the description lists ${JSON.stringify(sub.vmsd_name)}`, at);
      readSubsectionVersion(c, sub, name, where, at);
      record[name] = readVmState(c, sub, rule, `${where}/${name}`);
    }
    return record;
  }
  while (c.peek() === SUBSECTION_MARKER) {
    const at = c.offset;
    const name = peekName(c);
    // QEMU's own loader stops at a subsection whose name is not under this vmstate's.
    if (name === undefined || !name.startsWith(layout.vmsd_name)) break;
    const sub = layout.subsections?.find((s) => s.vmsd_name === name);
    if (!sub) c.fail(`${where}: subsection ${JSON.stringify(name)} is not one this reader knows, and without the stream's JSON description its end cannot be found`, at);
    c.skip(1, "subsection marker");
    c.name("subsection name");
    readSubsectionVersion(c, sub, name, where, at);
    record[name] = readVmState(c, sub, rule, `${where}/${name}`);
  }
  return record;
}

function readSubsectionVersion(c: Cursor, sub: VmLayout, name: string, where: string, at: number): void {
  const version = c.u32(`${where}/${name}'s version`);
  if (version !== sub.version) c.fail(`${where}: subsection ${name} has version ${version}, its layout is version ${sub.version}`, at);
}

function peekName(c: Cursor): string | undefined {
  const length = c.peek(1);
  if (length < 0 || c.offset + 2 + length > c.length) return undefined;
  return String.fromCharCode(...c.bytes.subarray(c.offset + 2, c.offset + 2 + length));
}

function readField(c: Cursor, field: VmField, rule: SubsectionRule, what: string): VmValue {
  const start = c.offset;
  let value: VmValue;
  if (field.type === "struct" && field.struct) value = readVmState(c, field.struct, rule, what);
  else if (field.type === "tmp" && field.fields) value = readVmState(c, { vmsd_name: field.name, version: 0, fields: field.fields }, rule, what);
  else {
    const scalar = SCALARS[field.type];
    value = scalar && scalar[0] === field.size ? scalar[1](c, what) : c.bytesOf(field.size, what);
  }
  if (c.offset - start !== field.size) c.fail(`${what}: its layout read ${c.offset - start} bytes where ${field.size} are stated`, start);
  return value;
}
