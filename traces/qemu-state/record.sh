#!/bin/bash
# Records the QEMU 7.2 migration-stream fixtures of traces/qemu-state/ (see docs/qemu-state.md):
# Linux boots under TCG on one and two CPUs, stopped at named moments; for each, the stream
# (RAM left out: the guest memory is a shared file and x-ignore-shared is on) and QEMU's own
# `info pic` / `info lapic N` text at the same stop as the independent expectation.
#
# usage: traces/qemu-state/record.sh [OUTDIR] [NAME...]   (default: the folder this script is in,
#        every recording; with NAMEs, only those)
# needs: qemu-system-x86 (Debian 12: 1:7.2+dfsg-7+deb12u18), busybox-static, cpio, gzip,
#        python3, and apt access for the kernel package.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
out=${1:-$here}
shift || true
only=" $* "
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# Boot material: Debian's 6.1 kernel, unpacked (not installed), and a busybox initramfs whose
# /init prints a marker and then idles with a 1 s sleep loop, so the timers keep running.
kernel_pkg=linux-image-6.1.0-56-amd64
(cd "$work" && apt-get download "$kernel_pkg" >/dev/null && dpkg-deb -x "$kernel_pkg"_*.deb root)
kernel=$(ls "$work"/root/boot/vmlinuz-*)
mkdir -p "$work"/initrd/{bin,proc,sys,dev}
cp /bin/busybox "$work"/initrd/bin/busybox
cat > "$work"/initrd/init <<'INIT'
#!/bin/busybox sh
/bin/busybox mount -t proc proc /proc
/bin/busybox echo "=== INIT IDLE ==="
while true; do /bin/busybox sleep 1; done
INIT
chmod +x "$work"/initrd/init
(cd "$work"/initrd && find . | cpio -o -H newc 2>/dev/null | gzip -9 > "$work"/initrd.cpio.gz)

# One recording: name, CPUs, kernel command line extra, and the console text to stop at.
# "" stops 0.5 s after start, in the firmware or the kernel's early setup; "reset" starts QEMU
# stopped (-S), so the state is the one after reset, the APs waiting for a start-up IPI.
record() {
  local name=$1 cpus=$2 extra=$3 marker=$4
  local stopped=()
  [ "$marker" = reset ] && stopped=(-S)
  [ "$only" = "  " ] || [[ "$only" == *" $name "* ]] || return 0
  local dir="$work/$name"
  mkdir -p "$dir"
  qemu-system-x86_64 -accel tcg -smp "$cpus" -m 128M -nographic -no-reboot -nic none -vga none \
    -object memory-backend-file,id=ram,size=128M,mem-path="$dir/ram",share=on \
    -machine pc,hpet=off,memory-backend=ram \
    -rtc base=2024-01-01T00:00:00,clock=vm \
    -kernel "$kernel" -initrd "$work/initrd.cpio.gz" -append "console=ttyS0 panic=-1 $extra" \
    -serial file:"$dir/console" -monitor unix:"$dir/hmp",server=on,wait=off \
    "${stopped[@]}" </dev/null >/dev/null 2>"$dir/stderr" &
  local pid=$!
  python3 "$here/hmp.py" "$dir" "$cpus" "$marker" "$out/$name"
  wait "$pid"
  gzip -9nf "$out/$name.qemu"
  echo "$name: $(stat -c %s "$out/$name.qemu.gz") bytes gzipped"
}

record cpu1-early     1 ""              ""
record cpu1-noapic    1 "noapic nolapic" "=== INIT IDLE ==="
record cpu1-idle      1 ""              "=== INIT IDLE ==="
record cpu2-reset     2 ""              reset
record cpu2-smpboot   2 ""              "smp: Bringing up secondary CPUs"
record cpu2-idle      2 ""              "=== INIT IDLE ==="
