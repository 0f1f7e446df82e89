// The I/O trap set: like a VMX I/O bitmap, one read bit and one write bit per port. A port
// whose bit is clear goes straight to the device and costs no exit.

export const TRAP_READ: u8 = 1;
export const TRAP_WRITE: u8 = 2;

const PORTS: usize = 65536;
/** Static memory, zero in a fresh instance without being touched. (One trap set per instance.) */
const TRAP_BITS: usize = memory.data(<i32>PORTS, 16);

export class IoTraps {
  private bits: usize = TRAP_BITS;
  /** The ports a bit may be set on since the last clear (none when low > high): all clear() wipes. */
  private low: usize = PORTS;
  private high: usize = 0;

  /** Sets both of a port's bits at once (its device's shadow owns them). */
  @inline
  put(port: u32, bits: u8): void {
    const p = <usize>(port & 0xffff);
    store<u8>(this.bits + p, bits);
    if (bits != 0) {
      if (p < this.low) this.low = p;
      if (p > this.high) this.high = p;
    }
  }

  @inline
  traps(port: u32, mask: u8): bool {
    return (load<u8>(this.bits + <usize>(port & 0xffff)) & mask) != 0;
  }

  /** Sets `mask` on every port at once. */
  setAll(mask: u8): void {
    memory.fill(this.bits, mask, PORTS);
    this.low = 0;
    this.high = PORTS - 1;
  }

  clear(): void {
    if (this.low <= this.high) memory.fill(this.bits + this.low, 0, this.high - this.low + 1);
    this.low = PORTS;
    this.high = 0;
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
