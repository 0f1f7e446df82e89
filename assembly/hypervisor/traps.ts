// The I/O trap set: like a VMX I/O bitmap, one read bit and one write bit per port. A port
// whose bit is clear goes straight to the device and costs no exit.

export const TRAP_READ: u8 = 1;
export const TRAP_WRITE: u8 = 2;

export class IoTraps {
  bits: StaticArray<u8> = new StaticArray<u8>(65536);

  set(port: u32, mask: u8, on: bool): void {
    const i = <i32>(port & 0xffff);
    const b = unchecked(this.bits[i]);
    unchecked((this.bits[i] = on ? b | mask : b & ~mask));
  }

  traps(port: u32, mask: u8): bool {
    return (unchecked(this.bits[<i32>(port & 0xffff)]) & mask) != 0;
  }

  clear(): void {
    for (let i = 0; i < 65536; i++) unchecked((this.bits[i] = 0));
  }
}

/**
 * The hidden state of one device, mirrored from the guest accesses the hypervisor traps.
 * Under the `blmvisor` policy the shadow itself says which accesses it must see next.
 */
export abstract class DeviceShadow {
  abstract reset(): void;
  /** A trapped guest write, after it was performed on the device. */
  abstract observeWrite(port: u32, value: u32): void;
  /** A trapped guest read and the value the device returned. */
  abstract observeRead(port: u32, value: u32): void;
  /** Sets exactly the trap bits this device needs now on its own ports (read and write). */
  abstract armTraps(traps: IoTraps): void;
}
