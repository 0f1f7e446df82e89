// KVM structs that no machine can hold, and containers that are damaged, are refused with a
// message naming struct (or file), field and value — before any machine is built — and the CLI
// exits 2. Values a real KVM or the 82C54 can hold (mode 6 and 7, KVM's reset mode 0xff, vectors
// below 16 on a QEMU-mode board) are taken.

import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, it, vi } from "vitest";
import { Machine } from "../src/core/machine.js";
import { KvmContainerError, readKvmDirectory, writeKvmDirectory } from "../src/interchange/kvm/container.js";
import { kvmStateFromRecord } from "../src/interchange/kvm/from-capture.js";
import { KvmLayoutError } from "../src/interchange/kvm/layout.js";
import { KvmStateError, type DeviceRecordBody, type KvmState } from "../src/interchange/kvm/state.js";
import { machineFromKvm } from "../src/interchange/kvm/to-machine.js";
import { runCli } from "./migrate-harness.js";

const dir = mkdtempSync(join(tmpdir(), "blmv-kvm-"));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

/** A fresh board's state as KVM structs, to spoil one field of. */
function freshState(options: { compatQemu?: boolean; cpus?: number } = {}): KvmState {
  const m = Machine.create(options);
  try {
    return kvmStateFromRecord(m.capture() as unknown as DeviceRecordBody);
  } finally {
    m.release();
  }
}

/** `machineFromKvm` must throw `message` and create no machine on the way. */
function refused(s: KvmState, message: RegExp): void {
  const create = vi.spyOn(Machine, "create");
  try {
    expect(() => machineFromKvm(s)).toThrow(KvmStateError);
    expect(() => machineFromKvm(s)).toThrow(message);
    expect(create).not.toHaveBeenCalled();
  } finally {
    create.mockRestore();
  }
}

function taken(s: KvmState): void {
  const { machine } = machineFromKvm(s);
  machine.release();
}

describe("impossible KVM structs", () => {
  it("a vector below 16 in a local APIC's ISR, IRR or TMR (datasheet board)", () => {
    const s = freshState({ cpus: 2 });
    s.cpus[1].lapic.isr[0] = 1 << 3;
    refused(s, /^kvm_lapic_state\(cpu 1\)\.isr = vector 3: vectors 0–15 are reserved and can never be in service$/);
    s.cpus[1].lapic.isr[0] = 0;
    s.cpus[0].lapic.irr[0] = 1 << 15;
    refused(s, /^kvm_lapic_state\(cpu 0\)\.irr = vector 15/);
    s.cpus[0].lapic.irr[0] = 1 << 16;
    taken(s);
  });

  it("takes a vector below 16 on a QEMU-mode board, whose APIC accepts it into IRR", () => {
    const s = freshState({ compatQemu: true });
    s.cpus[0].lapic.irr[0] = 1;
    taken(s);
  });

  it("a PIT mode above 7; 6 and 7 (82C54 aliases of 2 and 3) and KVM's reset mode 0xff are taken", () => {
    const s = freshState();
    s.pit.channels[1] = { ...s.pit.channels[1], mode: 8, rwMode: 3, readState: 3, writeState: 3 };
    refused(s, /^kvm_pit_state2\.channels\[1\]\.mode = 8: expected 0\.\.7$/);
    s.pit.channels[1].mode = 7;
    taken(s);
    s.pit.channels[1].mode = 0xff;
    refused(s, /^kvm_pit_state2\.channels\[1\]\.mode = 255: expected 0\.\.7$/);
    s.pit.channels[1] = { ...s.pit.channels[1], rwMode: 0, readState: 0, writeState: 0 };
    const { exceptions, machine } = machineFromKvm(s);
    machine.release();
    expect(exceptions.map((e) => e.field)).toContain("kvm_pit_state2.channels[1].mode");
  });

  it("other PIT fields out of their range", () => {
    const s = freshState();
    s.pit.channels[0].count = 0x10001;
    refused(s, /^kvm_pit_state2\.channels\[0\]\.count = 65537: expected 1\.\.65536/);
    s.pit.channels[0] = { ...s.pit.channels[0], count: 0x10000, rwMode: 1, readState: 4, writeState: 1 };
    refused(s, /^kvm_pit_state2\.channels\[0\]\.readState = 4: expected rwMode \(1\)$/);
    s.pit.channels[0].readState = 1;
    s.pit.flags = 0x80;
    refused(s, /^kvm_pit_state2\.flags = 0x80: unknown flag bits$/);
    s.pit.flags = 0;
    s.pit.channels[2].countLoadTime = s.clock.kvmNowNs + 1n;
    refused(s, /^kvm_pit_state2\.channels\[2\]\.countLoadTime = 1: after the capture/);
  });

  it("an I/O APIC entry with a reserved delivery mode (011 or 110)", () => {
    const s = freshState();
    s.ioapic.redirtbl[5] = 0x10000n | (3n << 8n) | 0x31n;
    refused(s, /^kvm_ioapic_state\.redirtbl\[5\]\.deliveryMode = 3: reserved/);
    s.ioapic.redirtbl[5] = 0x10000n | (6n << 8n);
    refused(s, /redirtbl\[5\]\.deliveryMode = 6/);
    s.ioapic.redirtbl[5] = 0x10000n | (7n << 8n);
    taken(s);
  });

  it("PIC fields that no 8259A holds", () => {
    const s = freshState();
    s.picSlave.irqBase = 0x29;
    refused(s, /^kvm_pic_state\(slave\)\.irqBase = 0x29: ICW2 gives the vector base in bits 7\.\.3/);
    s.picSlave.irqBase = 0x28;
    s.picMaster.poll = 2;
    refused(s, /^kvm_pic_state\(master\)\.poll = 2: expected 0 or 1$/);
    s.picMaster.poll = 0;
    s.picMaster.elcr = 0x01;
    refused(s, /^kvm_pic_state\(master\)\.elcr = 0x1: sets bits outside elcrMask 0xf8$/);
  });

  it("CPU state: reserved APIC base bits, an activity state the model lacks, a wrong vCPU count", () => {
    const s = freshState();
    s.cpus[0].sregs.apicBase |= 0x200n;
    refused(s, /^kvm_sregs\(cpu 0\)\.apic_base = 0xfee00b00: sets reserved bits$/);
    s.cpus[0].sregs.apicBase &= ~0x200n;
    s.cpus[0].mpState.mpState = 7;
    refused(s, /^kvm_mp_state\(cpu 0\)\.mp_state = 7: not an x86 activity state the model has/);
    s.cpus[0].mpState.mpState = 0;
    s.board = { ...s.board, cpus: 2 };
    refused(s, /^board\.cpus = 2: the state holds 1 vCPUs$/);
  });
});

describe("damaged containers", () => {
  const write = (name: string, options = {}) => {
    const path = join(dir, name);
    writeKvmDirectory(path, freshState(options));
    return path;
  };

  it("a struct of the wrong size names the file and both sizes", () => {
    const path = write("short");
    writeFileSync(join(path, "pit2.bin"), readFileSync(join(path, "pit2.bin")).subarray(0, 100));
    expect(() => readKvmDirectory(path)).toThrow(KvmLayoutError);
    expect(() => readKvmDirectory(path)).toThrow(`${join(path, "pit2.bin")}: struct kvm_pit_state2 is 112 bytes, got 100`);
  });

  it("a missing file, a manifest that is not JSON or has a wrong field", () => {
    const path = write("manifest", { cpus: 2 });
    rmSync(join(path, "lapic-cpu1.bin"));
    expect(() => readKvmDirectory(path)).toThrow(new KvmContainerError(`${join(path, "lapic-cpu1.bin")}: missing`));
    const manifest = join(path, "manifest.json");
    const good = readFileSync(manifest, "utf8");
    writeFileSync(manifest, good.slice(0, 20));
    expect(() => readKvmDirectory(path)).toThrow(/manifest\.json: not JSON/);
    writeFileSync(manifest, good.replace('"cpus": 2', '"cpus": 65'));
    expect(() => readKvmDirectory(path)).toThrow(/manifest\.json: board\.cpus: expected 1\.\.64, got 65$/);
    writeFileSync(manifest, good.replace('"x2apicIds": "32-bit"', '"x2apicIds": "wide"'));
    expect(() => readKvmDirectory(path)).toThrow(/manifest\.json: x2apicIds: expected "32-bit" or "legacy", got "wide"$/);
  });

  it("the CLI exits 2 naming what and where; a good directory rebuilds", async () => {
    const good = write("cli-good", { cpus: 2 });
    const bad = write("cli-bad");
    const lapic = readFileSync(join(bad, "lapic-cpu0.bin"));
    lapic[0x100] = 0x04; // ISR bit 2: vector 2 in service
    writeFileSync(join(bad, "lapic-cpu0.bin"), lapic);
    const cases: [string[], RegExp][] = [
      [["state", "import", bad], /^blmv: state import: kvm_lapic_state\(cpu 0\)\.isr = vector 2: vectors 0–15 are reserved/m],
      [["state", "import", join(dir, "none")], /^blmv: state import: .*none\/manifest\.json: missing$/m],
      [["state", "import", good, "--policy", "none"], /^blmv: state import: --policy must be blmvisor or full/m],
      [["state", "export", "-o", join(dir, "x")], /^blmv: state export: missing --format/m],
      [["state", "export", "--format", "qemu", "-o", join(dir, "x")], /^blmv: state export: --format must be one of kvm, got "qemu"$/m],
      [["state", "export", "--format", "kvm", "-o", join(dir, "x"), "--trace", "traces/scenarios/pit-modes.trace"], /--trace and --at go together/m],
      [["state", "export", "--format", "kvm", "-o", join(dir, "x"), "--trace", "traces/scenarios/pit-modes.trace", "--at", "no-such-label"], /never reaches 'mark no-such-label'$/m],
    ];
    const runs = await Promise.all([...cases.map(([args]) => runCli(args)), runCli(["state", "import", good])]);
    cases.forEach(([args, message], i) => {
      expect({ args, code: runs[i].code }).toEqual({ args, code: 2 });
      expect(runs[i].stderr).toMatch(message);
    });
    const ok = runs[cases.length];
    expect(ok.code).toBe(0);
    expect(ok.stdout).toMatch(/^  cpu 1 +waiting for SIPI; apic base 0xfee00800, id 0x01000000/m);
  });
});
