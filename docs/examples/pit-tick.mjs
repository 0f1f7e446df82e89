// An example script for `blmv record` (docs/traces.md): programs the PIC pair and PIT channel 0
// for a 1 ms periodic tick, takes three ticks with their EOIs, and latches and reads the count.

export default function run(m) {
  m.outb(0x20, 0x11); m.outb(0x21, 0x20); m.outb(0x21, 0x04); m.outb(0x21, 0x01); // master: ICW1-ICW4, base 0x20
  m.outb(0xa0, 0x11); m.outb(0xa1, 0x28); m.outb(0xa1, 0x02); m.outb(0xa1, 0x01); // slave: base 0x28, cascade on IR2
  m.outb(0x21, 0xfe); // unmask IRQ 0 only
  m.outb(0x43, 0x34); m.outb(0x40, 0xa9); m.outb(0x40, 0x04); // channel 0, mode 2, count 1193 (1 ms)
  for (let tick = 1; tick <= 3; tick++) {
    m.advanceTo(tick * 1_000_000 + 10_000);
    m.inta(); // the PIT's IRQ 0: vector 0x20
    m.outb(0x20, 0x20); // non-specific EOI
  }
  m.mark("after-three-ticks");
  m.migrate();
  m.outb(0x43, 0x00); // latch channel 0
  m.inb(0x40); m.inb(0x40); // the latched count, LSB then MSB
}
