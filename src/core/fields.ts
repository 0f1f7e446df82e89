// Conversion between the core's flat field buffers (u32 values in schema order, see
// assembly/fields.ts) and plain nested objects. Dotted names nest; groups whose keys are all
// numbers become arrays; a group of exactly `lo` and `hi` is one 64-bit value (a number when
// it fits in 2^53, else a bigint).

export type FieldValue = number | bigint | FieldObject | FieldValue[];
export interface FieldObject {
  [key: string]: FieldValue;
}

/** A record field that is missing, of the wrong type or out of range. */
export class FieldError extends Error {
  constructor(
    readonly path: string,
    message: string,
  ) {
    super(`${path}: ${message}`);
    this.name = "FieldError";
  }
}

const TWO_32 = 0x1_0000_0000;

export function fieldsToObject(names: readonly string[], values: Uint32Array): FieldObject {
  const root: FieldObject = {};
  for (let i = 0; i < names.length; i++) {
    const path = names[i].split(".");
    let node = root;
    for (let j = 0; j < path.length - 1; j++) {
      const key = path[j];
      node = (node[key] ??= {}) as FieldObject;
    }
    node[path[path.length - 1]] = values[i];
  }
  return shape(root) as FieldObject;
}

function shape(node: FieldValue): FieldValue {
  if (typeof node !== "object" || Array.isArray(node)) return node;
  const keys = Object.keys(node);
  if (keys.length === 2 && "lo" in node && "hi" in node) {
    const lo = node.lo as number;
    const hi = node.hi as number;
    return hi < 0x200000 ? hi * TWO_32 + lo : (BigInt(hi) << 32n) | BigInt(lo);
  }
  for (const k of keys) node[k] = shape(node[k]);
  if (keys.length > 0 && keys.every((k, i) => k === String(i))) return keys.map((k) => node[k]);
  return node;
}

/** A schema prepared once: each field's path, and which paths are leaves or groups. */
export interface Schema {
  readonly names: readonly string[];
  readonly paths: readonly (readonly string[])[];
  /** Leaf paths as users see them (a wide value's lo/hi halves collapse into one leaf). */
  readonly leaves: ReadonlySet<string>;
  readonly groups: ReadonlySet<string>;
}

export function prepareSchema(names: readonly string[]): Schema {
  const paths = names.map((n) => n.split("."));
  const leaves = new Set<string>();
  const groups = new Set<string>();
  for (const path of paths) {
    const last = path[path.length - 1];
    const leaf = last === "lo" || last === "hi" ? path.slice(0, -1) : path;
    leaves.add(leaf.join("."));
    for (let j = 1; j < leaf.length; j++) groups.add(leaf.slice(0, j).join("."));
  }
  return { names, paths, leaves, groups };
}

/**
 * Flattens `obj` into `out` in schema order. Every schema field must be present and every
 * field of `obj` must be in the schema; values must be integers in range.
 */
export function objectToFields(schema: Schema, obj: unknown, out: Uint32Array, root = "record"): number {
  const { paths } = schema;
  for (let i = 0; i < paths.length; i++) {
    const path = paths[i];
    const last = path[path.length - 1];
    const isHalf = last === "lo" || last === "hi";
    const leaf = isHalf ? path.slice(0, -1) : path;
    let node: unknown = obj;
    for (let j = 0; j < leaf.length; j++) node = child(node, leaf[j], root, leaf.slice(0, j + 1));
    const where = `${root}.${leaf.join(".")}`;
    if (isHalf) out[i] = splitWide(node, where)[last === "lo" ? 0 : 1];
    else out[i] = u32(node, where);
  }
  rejectUnknown(obj, "", schema, root);
  return paths.length;
}

function child(node: unknown, key: string, root: string, path: string[]): unknown {
  if (typeof node !== "object" || node === null) throw new FieldError(`${root}.${path.slice(0, -1).join(".")}`, "expected an object or array");
  const v = (node as Record<string, unknown>)[key];
  if (v === undefined) throw new FieldError(`${root}.${path.join(".")}`, "missing");
  return v;
}

function u32(v: unknown, where: string): number {
  if (typeof v !== "number" || !Number.isInteger(v) || v < 0 || v >= TWO_32) {
    throw new FieldError(where, `expected an unsigned 32-bit integer, got ${describeValue(v)}`);
  }
  return v;
}

function splitWide(v: unknown, where: string): [number, number] {
  if (typeof v === "number" && Number.isSafeInteger(v) && v >= 0) return [v % TWO_32, Math.floor(v / TWO_32)];
  if (typeof v === "bigint" && v >= 0n && v < 1n << 64n) return [Number(v & 0xffffffffn), Number(v >> 32n)];
  throw new FieldError(where, `expected an unsigned 64-bit integer, got ${describeValue(v)}`);
}

function rejectUnknown(node: unknown, prefix: string, schema: Schema, root: string): void {
  if (typeof node !== "object" || node === null) return;
  for (const key of Object.keys(node)) {
    const path = prefix ? `${prefix}.${key}` : key;
    if (schema.leaves.has(path)) continue;
    if (!schema.groups.has(path)) throw new FieldError(`${root}.${path}`, "unknown field");
    rejectUnknown((node as Record<string, unknown>)[key], path, schema, root);
  }
}

/** A value from a record, shown in an error message (bigints and all). */
export function describeValue(v: unknown): string {
  if (v === null) return "null";
  if (typeof v === "number" || typeof v === "bigint") return String(v);
  if (typeof v === "string") return JSON.stringify(v.length > 40 ? v.slice(0, 40) + "…" : v);
  return Array.isArray(v) ? "an array" : typeof v;
}
