#!/usr/bin/env python3
"""How deep a connection's reader thread reaches on its stack, by phase, and
how many stack pages an idle reader keeps. A diagnostic for the reader's
stack geometry (docs/performance.md, "Where a handshake's CPU and an idle
connection's memory go"), not a benchmark.

    cargo build --release
    python3 benches/stack_peak.py target/release/wshub
    python3 benches/stack_peak.py target/release/wshub --fallback   # glibc stacks

It starts the binary on 127.0.0.1:0 and attaches gdb (needs the binary's
symbols: release builds keep them, `debug = 1`). For one connection, gdb
fills the stack below the reader's SP with a pattern at the entry of
`reader::run`, `reader::serve` and `reader::read_loop`, and at the next of
those finds the lowest byte written since: the peak of the handshake (with
`on_upgrade`) and of `on_connect` (up to `release_unused_stack`, where a
build calls it). Then, with gdb gone, it opens three more connections and reads each idle reader's SP while it waits in `recvfrom`
(`/proc/PID/task/TID/syscall`) and which of its stack pages are resident
(`/proc/PID/pagemap`). Run as root (gdb attach, pagemap). Depths are bytes
below `run`'s SP (after its prologue); pages are 4 KiB.
"""
import argparse, base64, os, socket, struct, subprocess, sys, tempfile, time

PAGE = 4096

GDB_SCRIPT = r'''
import gdb
SPAN = 16384
state = {}
def sp():
    return int(gdb.parse_and_eval("$sp"))
def fill():
    # Leave the current frame's red zone alone.
    start = sp() - 256
    gdb.selected_inferior().write_memory(start - SPAN, b"\xa5" * SPAN)
    state["filled"] = start
def lowest_written():
    start = state["filled"]
    mem = bytes(gdb.selected_inferior().read_memory(start - SPAN, SPAN))
    return start - SPAN + next(i for i in range(SPAN) if mem[i] != 0xA5)
def stop_at(*symbols):
    gdb.execute("delete")
    for symbol in symbols:
        try:
            gdb.execute("break " + symbol)
        except gdb.error:
            pass  # not in this build
    gdb.execute("continue")
gdb.execute("set pagination off")
stop_at("wshub::connection::reader::run")
run_sp = sp()
print("STACK run_sp %d" % run_sp)
fill()
stop_at("wshub::connection::reader::serve")
print("STACK handshake_peak %d" % (run_sp - lowest_written()))
fill()
# Before the stack release, where a build has one: it zeroes what it frees.
stop_at("wshub::sys::pthread::release_unused_stack", "wshub::connection::reader::read_loop")
print("STACK on_connect_peak %d" % (run_sp - lowest_written()))
if "read_loop" not in (gdb.selected_frame().name() or ""):
    stop_at("wshub::connection::reader::read_loop")
print("STACK read_loop_entry %d" % (run_sp - sp()))
gdb.execute("delete")
gdb.execute("detach")
'''


def connect(addr):
    s = socket.create_connection(addr)
    key = base64.b64encode(os.urandom(16)).decode()
    s.sendall(
        f"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n".encode()
    )
    head = b""
    deadline = time.monotonic() + 30
    while b"\r\n\r\n" not in head and time.monotonic() < deadline:
        chunk = s.recv(4096)
        if not chunk:
            break
        head += chunk
    if not head.startswith(b"HTTP/1.1 101"):
        sys.exit(f"no 101: {head[:80]!r}")
    return s


def resident(pid, page):
    with open(f"/proc/{pid}/pagemap", "rb") as f:
        f.seek(page // PAGE * 8)
        return struct.unpack("<Q", f.read(8))[0] >> 63 == 1


def idle_readers(pid):
    """(name, SP) of every reader blocked in recvfrom."""
    out = []
    for tid in os.listdir(f"/proc/{pid}/task"):
        name = open(f"/proc/{pid}/task/{tid}/comm").read().strip()
        if not (name.startswith("wshub-r") and name[7:].isdigit()):
            continue
        fields = open(f"/proc/{pid}/task/{tid}/syscall").read().split()
        if len(fields) == 9 and fields[0] == "45":  # recvfrom (x86_64)
            out.append((name, int(fields[7], 16)))
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("binary")
    ap.add_argument("--fallback", action="store_true", help="WSHUB_KERNEL_FALLBACK=1 (glibc stacks)")
    args = ap.parse_args()
    env = {k: v for k, v in os.environ.items() if k != "WSHUB_KERNEL_FALLBACK"}
    if args.fallback:
        env["WSHUB_KERNEL_FALLBACK"] = "1"
    server = subprocess.Popen(
        [args.binary, "--bind", "127.0.0.1:0"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env
    )
    try:
        host, port = server.stdout.readline().decode().split()[-1].rsplit(":", 1)
        addr = (host, int(port))
        with tempfile.NamedTemporaryFile("w", suffix=".py") as script:
            script.write(GDB_SCRIPT)
            script.flush()
            gdb = subprocess.Popen(
                ["gdb", "-q", "-batch", "-p", str(server.pid), "-x", script.name],
                stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
            )
            time.sleep(3)  # gdb attached and its breakpoint set
            probe = connect(addr)
            out, _ = gdb.communicate(timeout=120)
        figures = dict(
            (line.split()[1], int(line.split()[2])) for line in out.splitlines() if line.startswith("STACK ")
        )
        if len(figures) != 4:
            sys.exit(f"gdb did not report every phase:\n{out}")
        run_sp = figures.pop("run_sp")
        room = run_sp - (run_sp & ~(PAGE - 1))
        print(f"run's SP sits {room} bytes above its page's floor")
        for what, depth in figures.items():
            print(f"{what:>16}: {depth:5} bytes below run's SP ({depth - room:+} past that floor)")
        # The probe's stack holds the pattern: its reader is left out (and
        # kept, so that no new reader gets its stack).
        deadline = time.monotonic() + 30
        while not idle_readers(server.pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        probed = {name for name, _ in idle_readers(server.pid)}
        clients = [connect(addr) for _ in range(3)]
        while len(idle_readers(server.pid)) < 4 and time.monotonic() < deadline:
            time.sleep(0.05)
        for name, sp in idle_readers(server.pid):
            if name in probed:
                continue
            page = sp & ~(PAGE - 1)
            # Pooled stacks lie side by side: only the pages below the wait
            # are this reader's alone (within a stack's usual size).
            below = [k for k in range(1, 16) if resident(server.pid, page - k * PAGE)]
            print(f"{name}: waits {sp - page} bytes above its page's floor; resident pages below it: {below or 'none'}")
        del clients, probe
    finally:
        server.kill()
        server.wait()


if __name__ == "__main__":
    main()
