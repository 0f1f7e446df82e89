// Helpers for the QEMU migration-stream tests: the recorded fixtures of traces/qemu-state/, and
// small streams re-assembled from a fixture's own sections (with or without a trimmed JSON
// description), so that tests can cut, corrupt or extend a real stream cheaply.

import { readFileSync } from "node:fs";
import { join } from "node:path";
import { gunzipSync } from "node:zlib";
import { readQemuStream } from "../src/interchange/qemu/stream.js";

export const FIXTURE_DIR = join(import.meta.dirname, "..", "traces", "qemu-state");
export const FIXTURES = ["cpu1-early", "cpu1-noapic", "cpu1-idle", "cpu2-reset", "cpu2-smpboot", "cpu2-idle"] as const;

export function fixtureBytes(name: string): Uint8Array {
  return gunzipSync(readFileSync(join(FIXTURE_DIR, `${name}.qemu.gz`)));
}

export function fixtureInfo(name: string): string {
  return readFileSync(join(FIXTURE_DIR, `${name}.info.txt`), "utf8");
}

const be32 = (n: number) => {
  const b = new Uint8Array(4);
  new DataView(b.buffer).setUint32(0, n);
  return b;
};

export interface Part {
  bytes: Uint8Array;
  /** Its entry in the JSON description, if it has one. */
  described?: unknown;
}

/** The fixture's header and configuration, and each FULL section with its description entry. */
export function fixtureParts(name: string): { head: Uint8Array; sections: Map<string, Part> } {
  const bytes = fixtureBytes(name);
  const stream = readQemuStream(bytes);
  const json = JSON.parse(new TextDecoder().decode(bytes.subarray(stream.descriptionOffset! + 5))) as { devices: { name: string; instance_id: number }[] };
  const first = stream.sections[0]!.offset;
  const sections = new Map<string, Part>();
  for (const s of stream.sections.filter((x) => x.kind === "full")) {
    const described = json.devices.find((d) => d.name === s.name && d.instance_id === s.instance);
    sections.set(`${s.name}/${s.instance}`, { bytes: bytes.subarray(s.offset, s.end), described });
  }
  return { head: bytes.subarray(0, first), sections };
}

/** A stream of `head`, the parts in order and EOF, then the parts' description unless left out. */
export function assemble(head: Uint8Array, parts: Part[], description = true): Uint8Array {
  const chunks: Uint8Array[] = [head, ...parts.map((p) => p.bytes), Uint8Array.of(0)];
  if (description) {
    const json = new TextEncoder().encode(JSON.stringify({ page_size: 4096, devices: parts.map((p) => p.described) }));
    chunks.push(Uint8Array.of(6), be32(json.length), json);
  }
  return Buffer.concat(chunks);
}

/** The sections the conversion needs, from a fixture, in stream order. */
export const DEVICE_SECTIONS = ["timer/0", "cpu_common/0", "apic/0", "i8259/0", "i8259/1", "ioapic/0", "i8254/0"];
