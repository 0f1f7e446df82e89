// A source whose committed migration the destination dropped takes its guest back: measuring
// the APIC timer's phase for the commit moved its machine's clock, so it resumes on its own
// device record rebuilt at the pause time with that phase (Machine.resume), and the guest ends
// exactly as one never migrated. See docs/protocol.md (the commit rule).

import { describe, expect, it } from "vitest";
import { Machine } from "../src/core/machine.js";
import { bootGuest, referenceDigest, type GuestRunSpec } from "../src/migrate/run/guest-run.js";

const MiB = 2 ** 20;
const MS = 1_000_000;

describe("a dropped guest taken back by its source", () => {
  for (const interrupts of ["apic", "pic"] as const) {
    it(`ends with the digest of a run never migrated (${interrupts} timer)`, () => {
      const spec: GuestRunSpec = { workload: "uniform", interrupts, memoryBytes: 2 * MiB, seed: 5, endNs: 60 * MS };
      const guest = bootGuest(spec);
      guest.runUntil(20 * MS + 123);
      guest.pause();
      const probed = guest.machine;
      const record = probed.capture();
      const phases = probed.probeTimerPhases();
      if (interrupts === "apic") expect(probed.now()).toBeGreaterThan(20 * MS + 123);
      guest.machine = Machine.resume(record, phases, { policy: probed.policy });
      probed.release();
      expect(guest.now()).toBe(20 * MS + 123);
      guest.runUntil(spec.endNs);
      expect(guest.digest()).toBe(referenceDigest(spec));
    });
  }
});
