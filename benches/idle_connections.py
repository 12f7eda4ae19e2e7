#!/usr/bin/env python3
"""Hold N idle WebSocket connections to a running wshub and report the server's
RSS, thread count, fds and memory mappings per connection, and its CPU time
(utime + stime) per handshake over the burst, read from /proc.

    cargo build --release
    ./target/release/wshub --echo --bind 127.0.0.1:9001 --max-handshakes-per-ip 1024 &
    python3 benches/idle_connections.py --pid $! --url ws://127.0.0.1:9001/ws -n 1000

Needs `pip install websockets`. Prints a readable summary and one JSON line.
"""
import argparse, asyncio, json, time

import websockets


def proc_stats(pid):
    rss_kb = 0
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                rss_kb = int(line.split()[1])
    import os
    threads = len(os.listdir(f"/proc/{pid}/task"))
    fds = len(os.listdir(f"/proc/{pid}/fd"))
    with open(f"/proc/{pid}/maps") as f:
        maps = sum(1 for _ in f)
    return {"rss_kb": rss_kb, "threads": threads, "fds": fds, "maps": maps}


def cpu_seconds(pid):
    """The process's utime + stime (fields 14 and 15 of /proc/PID/stat)."""
    import os
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--pid", type=int, required=True, help="the server's pid")
    ap.add_argument("--url", default="ws://127.0.0.1:9001/ws")
    ap.add_argument("-n", type=int, default=1000, help="connections to hold")
    ap.add_argument("--batch", type=int, default=200, help="handshakes in flight at once")
    args = ap.parse_args()

    before = proc_stats(args.pid)
    cpu_before = cpu_seconds(args.pid)
    conns = []
    started = time.monotonic()
    for i in range(0, args.n, args.batch):
        batch = min(args.batch, args.n - i)
        conns += await asyncio.gather(*(
            websockets.connect(args.url, ping_interval=None, max_queue=None, open_timeout=30)
            for _ in range(batch)))
    elapsed = time.monotonic() - started
    cpu_us = (cpu_seconds(args.pid) - cpu_before) * 1e6 / args.n
    await asyncio.sleep(1.0)  # let the server's threads settle after the burst
    held = proc_stats(args.pid)
    n = args.n
    per_conn = {k: (held[k] - before[k]) / n for k in held}
    print(f"connections held: {n} (opened in {elapsed:.2f}s, {n / elapsed:.0f}/s, "
          f"server CPU {cpu_us:.0f} µs per handshake)")
    print(f"server before: {before}")
    print(f"server holding: {held}")
    print(f"per connection: RSS {per_conn['rss_kb']:.1f} KiB, threads {per_conn['threads']:.2f}, "
          f"fds {per_conn['fds']:.2f}, mappings {per_conn['maps']:.2f}")
    print(json.dumps({"scenario": "idle", "connections": n, "handshakes_per_s": round(n / elapsed),
                      "server_cpu_us_per_handshake": round(cpu_us, 1),
                      "before": before, "holding": held,
                      "rss_kb_per_conn": round(per_conn["rss_kb"], 2),
                      "maps_per_conn": round(per_conn["maps"], 2)}))
    await asyncio.gather(*(c.close() for c in conns))


asyncio.run(main())
