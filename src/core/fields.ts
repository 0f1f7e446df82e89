// Conversion between the core's flat field buffers (u32 values in schema order, see
// assembly/common/fields.ts) and plain nested objects. Dotted names nest; groups whose keys are all
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

/**
 * The record's shape, worked out once per schema: a leaf is a buffer index, a wide value a pair
 * of them, and a group its children by key (an array when the keys are 0..n-1).
 */
type Plan =
  | { kind: "leaf"; index: number }
  | { kind: "wide"; lo: number; hi: number }
  | { kind: "group"; array: boolean; keys: string[]; children: Map<string, Plan> };

/** A schema prepared once: its field names and the plan of the objects it reads and writes. */
export interface Schema {
  readonly names: readonly string[];
  readonly plan: Plan;
}

export function prepareSchema(names: readonly string[]): Schema {
  type Draft = Map<string, Draft | number>;
  const root: Draft = new Map();
  names.forEach((name, index) => {
    const path = name.split(".");
    let node = root;
    for (const key of path.slice(0, -1)) {
      let next = node.get(key);
      if (next === undefined) node.set(key, (next = new Map()));
      node = next as Draft;
    }
    node.set(path[path.length - 1], index);
  });
  const finish = (d: Draft | number): Plan => {
    if (typeof d === "number") return { kind: "leaf", index: d };
    const lo = d.get("lo");
    const hi = d.get("hi");
    if (d.size === 2 && typeof lo === "number" && typeof hi === "number") return { kind: "wide", lo, hi };
    // Integer keys come first and in order among an object's own keys, as the array test expects.
    const keys = [...d.keys()];
    const array = keys.length > 0 && keys.every((k) => /^(0|[1-9]\d*)$/.test(k)) && keys.map(Number).sort((a, b) => a - b).every((k, i) => k === i);
    const ordered = array ? keys.map(Number).sort((a, b) => a - b).map(String) : keys;
    return { kind: "group", array, keys: ordered, children: new Map(ordered.map((k) => [k, finish(d.get(k)!)])) };
  };
  return { names, plan: finish(root) };
}

/** The plain object the values describe, in the schema's shape. */
export function fieldsToObject(schema: Schema, values: Uint32Array): FieldObject {
  return build(schema.plan, values) as FieldObject;
}

function build(plan: Plan, values: Uint32Array): FieldValue {
  switch (plan.kind) {
    case "leaf":
      return values[plan.index];
    case "wide": {
      const lo = values[plan.lo];
      const hi = values[plan.hi];
      return hi < 0x200000 ? hi * TWO_32 + lo : (BigInt(hi) << 32n) | BigInt(lo);
    }
    default: {
      if (plan.array) return plan.keys.map((k) => build(plan.children.get(k)!, values));
      const node: FieldObject = {};
      for (const k of plan.keys) node[k] = build(plan.children.get(k)!, values);
      return node;
    }
  }
}

/**
 * Flattens `obj` into `out` in schema order. Every schema field must be present and every
 * field of `obj` must be in the schema; values must be integers in range.
 */
export function objectToFields(schema: Schema, obj: unknown, out: Uint32Array, root = "record"): number {
  const path: string[] = [];
  fill(schema.plan, obj, out, path, root);
  rejectUnknown(schema.plan, obj, path, root);
  return schema.names.length;
}

/** Where a field sits, for messages: built only when there is something to say. */
function at(root: string, path: readonly string[]): string {
  return path.length === 0 ? root : `${root}.${path.join(".")}`;
}

function fill(plan: Plan, node: unknown, out: Uint32Array, path: string[], root: string): void {
  if (plan.kind === "leaf") {
    out[plan.index] = u32(node, path, root);
  } else if (plan.kind === "wide") {
    const [lo, hi] = splitWide(node, path, root);
    out[plan.lo] = lo;
    out[plan.hi] = hi;
  } else {
    if (typeof node !== "object" || node === null) throw new FieldError(at(root, path), "expected an object or array");
    for (const k of plan.keys) {
      path.push(k);
      const v = (node as Record<string, unknown>)[k];
      if (v === undefined) throw new FieldError(at(root, path), "missing");
      fill(plan.children.get(k)!, v, out, path, root);
      path.pop();
    }
  }
}

function rejectUnknown(plan: Plan, node: unknown, path: string[], root: string): void {
  if (plan.kind !== "group" || typeof node !== "object" || node === null) return;
  for (const key of Object.keys(node)) {
    const child = plan.children.get(key);
    path.push(key);
    if (child === undefined) throw new FieldError(at(root, path), "unknown field");
    rejectUnknown(child, (node as Record<string, unknown>)[key], path, root);
    path.pop();
  }
}

function u32(v: unknown, path: readonly string[], root: string): number {
  if (typeof v !== "number" || !Number.isInteger(v) || v < 0 || v >= TWO_32) {
    throw new FieldError(at(root, path), `expected an unsigned 32-bit integer, got ${describeValue(v)}`);
  }
  return v;
}

function splitWide(v: unknown, path: readonly string[], root: string): [number, number] {
  if (typeof v === "number" && Number.isSafeInteger(v) && v >= 0) return [v % TWO_32, Math.floor(v / TWO_32)];
  if (typeof v === "bigint" && v >= 0n && v < 1n << 64n) return [Number(v & 0xffffffffn), Number(v >> 32n)];
  throw new FieldError(at(root, path), `expected an unsigned 64-bit integer, got ${describeValue(v)}`);
}

/** A value from a record, shown in an error message (bigints and all). */
export function describeValue(v: unknown): string {
  if (v === null) return "null";
  if (typeof v === "number" || typeof v === "bigint") return String(v);
  if (typeof v === "string") return JSON.stringify(v.length > 40 ? v.slice(0, 40) + "…" : v);
  return Array.isArray(v) ? "an array" : typeof v;
}
