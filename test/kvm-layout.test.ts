// The KVM uapi layouts (src/interchange/kvm/layout.ts) against the sizes and offsets of Linux's
// arch/x86/include/uapi/asm/kvm.h, byte for byte, and their decoders' refusal of wrong sizes.

import fc from "fast-check";
import { describe, expect, it } from "vitest";
import {
  KVM_IOAPIC_STATE, KVM_LAPIC_STATE, KVM_MP_STATE, KVM_PIC_STATE, KVM_PIT_CHANNEL_STATE, KVM_PIT_STATE2, KVM_SREGS,
  KVM_VCPU_EVENTS, KvmLayoutError, type StructLayout, decodeIoapicState, decodeLapicState, decodeMsrs, decodePicState,
  decodePitState2, decodeSregs, decodeVcpuEvents, encodeIoapicState, encodeLapicState, encodeMsrs, encodePicState,
  encodePitState2, encodeSregs, encodeVcpuEvents, redirectionFields,
} from "../src/interchange/kvm/layout.js";
import { expectEqual } from "./expect-same.js";

const offsetOf = (layout: StructLayout, name: string): number => {
  const f = layout.fields.find((x) => x.name === name);
  if (!f) throw new Error(`${layout.struct} has no field ${name}`);
  return f.offset;
};

describe("KVM uapi struct layouts", () => {
  it("have Linux's sizes", () => {
    expect(KVM_PIC_STATE.size).toBe(16);
    expect(KVM_PIT_CHANNEL_STATE.size).toBe(24);
    expect(KVM_PIT_STATE2.size).toBe(112);
    expect(KVM_LAPIC_STATE.size).toBe(1024);
    expect(KVM_IOAPIC_STATE.size).toBe(216);
    expect(KVM_SREGS.size).toBe(312);
    expect(KVM_MP_STATE.size).toBe(4);
    expect(KVM_VCPU_EVENTS.size).toBe(64);
  });

  it("put the fields at Linux's offsets", () => {
    expect(KVM_PIC_STATE.fields.map((f) => f.name)).toEqual([
      "lastIrr", "irr", "imr", "isr", "priorityAdd", "irqBase", "readRegSelect", "poll", "specialMask", "initState",
      "autoEoi", "rotateOnAutoEoi", "specialFullyNested", "init4", "elcr", "elcrMask",
    ]);
    expect(offsetOf(KVM_PIC_STATE, "elcrMask")).toBe(15);
    expect(offsetOf(KVM_PIT_CHANNEL_STATE, "latchedCount")).toBe(4);
    expect(offsetOf(KVM_PIT_CHANNEL_STATE, "countLatched")).toBe(6);
    expect(offsetOf(KVM_PIT_CHANNEL_STATE, "gate")).toBe(15);
    expect(offsetOf(KVM_PIT_CHANNEL_STATE, "countLoadTime")).toBe(16);
    expect(offsetOf(KVM_PIT_STATE2, "flags")).toBe(72);
    expect(offsetOf(KVM_LAPIC_STATE, "id")).toBe(0x20);
    expect(offsetOf(KVM_LAPIC_STATE, "isr.7")).toBe(0x170);
    expect(offsetOf(KVM_LAPIC_STATE, "irr.0")).toBe(0x200);
    expect(offsetOf(KVM_LAPIC_STATE, "currentCount")).toBe(0x390);
    expect(offsetOf(KVM_LAPIC_STATE, "divideConfig")).toBe(0x3e0);
    expect(offsetOf(KVM_IOAPIC_STATE, "ioregsel")).toBe(8);
    expect(offsetOf(KVM_IOAPIC_STATE, "irr")).toBe(16);
    expect(offsetOf(KVM_IOAPIC_STATE, "redirtbl.0")).toBe(24);
    expect(offsetOf(KVM_IOAPIC_STATE, "redirtbl.23")).toBe(208);
    expect(offsetOf(KVM_SREGS, "cr8")).toBe(256);
    expect(offsetOf(KVM_SREGS, "apicBase")).toBe(272);
    expect(offsetOf(KVM_VCPU_EVENTS, "nmiPending")).toBe(13);
    expect(offsetOf(KVM_VCPU_EVENTS, "sipiVector")).toBe(16);
  });

  it("no two fields of a struct overlap, and every field lies inside it", () => {
    const bytes = { u8: 1, u16: 2, u32: 4, u64: 8, s64: 8 };
    for (const layout of [KVM_PIC_STATE, KVM_PIT_CHANNEL_STATE, KVM_PIT_STATE2, KVM_LAPIC_STATE, KVM_IOAPIC_STATE, KVM_SREGS, KVM_MP_STATE, KVM_VCPU_EVENTS]) {
      const used = new Uint8Array(layout.size);
      for (const f of layout.fields) {
        expect(f.offset + bytes[f.type], `${layout.struct}.${f.name}`).toBeLessThanOrEqual(layout.size);
        expect(f.offset % bytes[f.type], `${layout.struct}.${f.name} is naturally aligned`).toBe(0);
        for (let i = 0; i < bytes[f.type]; i++) expect(used[f.offset + i]++, `${layout.struct}.${f.name}`).toBe(0);
      }
    }
  });

  it("encode little-endian at the offsets, and decode what they encode", () => {
    const pit = encodePitState2({
      flags: 1,
      channels: [0, 1, 2].map((i) => ({
        count: 0x10000, latchedCount: 0x1234, countLatched: 3, statusLatched: 1, status: 0x36, readState: 3, writeState: 4,
        writeLatch: 0xab, rwMode: 3, mode: 2, bcd: 0, gate: 1, countLoadTime: -5n - BigInt(i),
      })),
    });
    expect([...pit.subarray(24, 48)]).toEqual([0, 0, 1, 0, 0x34, 0x12, 3, 1, 0x36, 3, 4, 0xab, 3, 2, 0, 1, 0xfa, ...Array(7).fill(0xff)]);
    expect(pit[72]).toBe(1);
    expect(decodePitState2(pit).channels[2].countLoadTime).toBe(-7n);

    const pic = { lastIrr: 1, irr: 2, imr: 3, isr: 4, priorityAdd: 5, irqBase: 0x08, readRegSelect: 1, poll: 0, specialMask: 1, initState: 0, autoEoi: 1, rotateOnAutoEoi: 0, specialFullyNested: 1, init4: 1, elcr: 0x20, elcrMask: 0xf8 };
    expect([...encodePicState(pic)]).toEqual([1, 2, 3, 4, 5, 8, 1, 0, 1, 0, 1, 0, 1, 1, 0x20, 0xf8]);
    expect(decodePicState(encodePicState(pic))).toEqual(pic);

    const sregs = encodeSregs({ cr8: 3n, apicBase: 0xfee00900n });
    expect(new DataView(sregs.buffer).getBigUint64(272, true)).toBe(0xfee00900n);
    expect(decodeSregs(sregs)).toEqual({ cr8: 3n, apicBase: 0xfee00900n });
    expect(decodeVcpuEvents(encodeVcpuEvents({ nmiPending: 1, sipiVector: 0x9a, flags: 3 }))).toEqual({ nmiPending: 1, sipiVector: 0x9a, flags: 3 });
    expect(decodeMsrs(encodeMsrs([{ index: 0x6e0, data: 1n << 40n }]))).toEqual([{ index: 0x6e0, data: 1n << 40n }]);
  });

  it("decode any page and encode it back to the registers it read", () => {
    fc.assert(
      fc.property(fc.uint8Array({ minLength: 1024, maxLength: 1024 }), (page) => {
        const lapic = decodeLapicState(page);
        const again = encodeLapicState(lapic);
        for (const f of KVM_LAPIC_STATE.fields) expectEqual(again.subarray(f.offset, f.offset + 4), page.subarray(f.offset, f.offset + 4), f.name);
      }),
      { numRuns: 200 },
    );
    fc.assert(
      fc.property(fc.uint8Array({ minLength: 216, maxLength: 216 }), (bytes) => {
        bytes.fill(0, 20, 24); // the pad word is not carried
        expectEqual(encodeIoapicState(decodeIoapicState(bytes)), bytes);
      }),
      { numRuns: 200 },
    );
  });

  it("names the redirection entry's fields as KVM's union does", () => {
    expect(redirectionFields(0x0300_0000_0001_e731n)).toEqual({
      vector: 0x31, deliveryMode: 7, destMode: 0, deliveryStatus: 0, polarity: 1, remoteIrr: 1, trigMode: 1, mask: 1, destId: 3,
    });
  });

  it("refuses a buffer of the wrong size, naming the struct, the source and both sizes", () => {
    expect(() => decodePicState(new Uint8Array(15), "pic-master.bin")).toThrow(new KvmLayoutError("pic-master.bin: struct kvm_pic_state is 16 bytes, got 15"));
    expect(() => decodePitState2(new Uint8Array(120))).toThrow(/kvm_pit_state2 is 112 bytes, got 120/);
    expect(() => decodeLapicState(new Uint8Array(4096))).toThrow(/kvm_lapic_state is 1024 bytes, got 4096/);
    expect(() => decodeIoapicState(new Uint8Array(0))).toThrow(/kvm_ioapic_state is 216 bytes, got 0/);
    expect(() => decodeMsrs(new Uint8Array(12), "msrs-cpu0.bin")).toThrow(/msrs-cpu0.bin: struct kvm_msrs/);
  });

  it("refuses a value that does not fit its field", () => {
    const pic = decodePicState(new Uint8Array(16));
    expect(() => encodePicState({ ...pic, irr: 256 })).toThrow(new KvmLayoutError("kvm_pic_state.irr: 256 does not fit u8"));
    expect(() => encodeIoapicState({ baseAddress: 0n, ioregsel: 0, id: 0, irr: 0, redirtbl: [] })).toThrow(/expected 24 entries, got 0/);
  });
});
