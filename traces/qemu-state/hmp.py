#!/usr/bin/env python3
"""Drives one recording for record.sh through QEMU's human monitor (HMP) on a unix socket:
waits for a console marker (or half a second; "reset": QEMU was started stopped), stops the VM, saves `info pic` and `info lapic N` for every CPU
into OUT.info.txt (after the console's last lines), then migrates to OUT.qemu with x-ignore-shared and quits QEMU.

usage: hmp.py RUNDIR CPUS MARKER OUT"""
import os, re, socket, sys, time

rundir, cpus, marker, out = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
PROMPT = b"(qemu) "
ESCAPES = re.compile(rb"\x1b\[[0-9;?]*[A-Za-z]|\x1b[^\[]")


def wait_for(test, what, seconds=120):
    end = time.time() + seconds
    while not test():
        if time.time() > end:
            sys.exit(f"hmp.py: timed out waiting for {what}")
        time.sleep(0.05)


def console():
    try:
        with open(os.path.join(rundir, "console"), "rb") as f:
            return f.read().decode("latin-1")
    except FileNotFoundError:
        return ""


wait_for(lambda: os.path.exists(os.path.join(rundir, "hmp")), "the monitor socket")
mon = socket.socket(socket.AF_UNIX)
mon.connect(os.path.join(rundir, "hmp"))


def read_to_prompt():
    data = b""
    while not data.endswith(PROMPT):
        chunk = mon.recv(65536)
        if not chunk:
            sys.exit("hmp.py: the monitor closed")
        data += chunk
    return data


def command(line):
    """Sends one HMP command and returns its output without the echo, escapes and prompt."""
    mon.sendall(line.encode() + b"\n")
    text = ESCAPES.sub(b"", read_to_prompt()[: -len(PROMPT)]).decode("latin-1").replace("\r", "")
    lines = text.split("\n")
    # The monitor echoes the command as it is typed: drop everything up to the echoed line.
    for i, l in enumerate(lines):
        if l.strip().endswith(line):
            lines = lines[i + 1 :]
            break
    return "\n".join(lines).strip("\n") + "\n"


read_to_prompt()
if marker == "reset":
    pass  # started with -S: nothing has run
elif marker:
    wait_for(lambda: marker in console(), repr(marker))
    if "INIT IDLE" in marker:
        time.sleep(2)  # let the idle loop run a few timer periods
else:
    time.sleep(0.5)
command("stop")
with open(out + ".info.txt", "w") as f:
    f.write(f"# QEMU 7.2 HMP at the stop that made {os.path.basename(out)}.qemu.gz\n")
    text = ESCAPES.sub(b"", console().encode("latin-1")).decode("latin-1")
    lines = ("".join(ch for ch in l if ch.isprintable()) for l in text.replace("\r", "").split("\n"))
    tail = [l for l in lines if l.strip()][-3:]
    f.write("".join(f"# console: {l}\n" for l in tail) or "# console: (nothing yet)\n")
    for line in ["info pic"] + [f"info lapic {k}" for k in range(cpus)]:
        f.write(f"## {line}\n{command(line)}")
command("migrate_set_capability x-ignore-shared on")
command(f'migrate "exec:cat > {out}.qemu"')
wait_for(lambda: "Migration status: completed" in command("info migrate"), "the migration")
mon.sendall(b"quit\n")
