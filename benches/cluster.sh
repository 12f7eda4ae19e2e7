#!/usr/bin/env bash
# Cross-node fan-out over Redis against the same load on one node.
#
#   benches/cluster.sh                       # 1,000 subscribers, 10 s per case
#   SUBSCRIBERS=200 SECS=2 benches/cluster.sh   # a quick smoke run
#   CASES="one-node cross-node" MODES=rate benches/cluster.sh
#
# Cases, each with a fresh redis-server and fresh nodes (children of this
# script, stopped by their PIDs):
#   one-node     wshub alone (no Redis): publisher and every subscriber on it
#   one-node+r   one wshub with --redis: the same, through Redis
#   cross-node   two wshub nodes with --redis: the publisher on node A, the
#                subscribers alternating between A and B (half on each)
# each flat out (--window 64) and at 50 msg/s. Prints delivered/s, loss,
# delivery p50/p99 and publish→ack p50/p99, with the load average before each
# run (the machine may be shared). Results: benches/results/cluster-<stamp>.jsonl.
# Exits 1 when a run lost a message or failed.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BENCHES="$ROOT/benches"
WSHUB="$ROOT/target/release/wshub"
GEN="${WSHUB_BENCH:-$BENCHES/wshub-bench/target/release/wshub-bench}"
SUBSCRIBERS="${SUBSCRIBERS:-1000}"
SECS="${SECS:-10}"

if [[ -z "${NO_BUILD:-}" ]]; then
    (cd "$ROOT" && cargo build --release --bin wshub >&2)
    (cd "$BENCHES/wshub-bench" && cargo build --release >&2)
fi
command -v redis-server >/dev/null || { echo "redis-server is missing (bash .ci/setup)" >&2; exit 1; }

WORK="$(mktemp -d)"
PIDS=()
cleanup() {
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; done
    rm -rf "$WORK"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

start_redis() {
    REDIS_PORT="$(free_port)"
    redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save '' --appendonly no --dir "$WORK" >/dev/null &
    PIDS+=($!)
    for _ in $(seq 100); do redis-cli -p "$REDIS_PORT" PING >/dev/null 2>&1 && return; sleep 0.05; done
    echo "redis-server did not start" >&2; exit 1
}

# start_node NAME [ARGS...]: sets NAME_URL and NAME_PID. Every subscriber
# comes from 127.0.0.1, so the per-address handshake bound is raised past
# what the generator opens at once.
start_node() {
    local name="$1"; shift
    "$WSHUB" --bind 127.0.0.1:0 --log-level warn --rate-limit 0 --frame-rate-limit 0 --max-handshakes-per-ip 1024 "$@" >"$WORK/$name.out" 2>"$WORK/$name.err" &
    local pid=$!
    PIDS+=("$pid")
    for _ in $(seq 200); do
        if grep -q "listening on" "$WORK/$name.out" 2>/dev/null; then break; fi
        sleep 0.05
    done
    local addr; addr="$(sed -n 's/^wshub listening on //p' "$WORK/$name.out")"
    [[ -n "$addr" ]] || { echo "$name did not start:"; cat "$WORK/$name.err"; exit 1; } >&2
    printf -v "${name}_URL" 'ws://%s/ws' "$addr"
    printf -v "${name}_PID" '%s' "$pid"
}

stop_all() {
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; done
    PIDS=()
}

FAILED=0
mkdir -p "$BENCHES/results"
OUT="$BENCHES/results/cluster-$(date -u +%Y%m%dT%H%M%SZ).jsonl"

# The 1-minute load average counts runnable threads, and a case leaves its own
# (2,000 server threads) behind in it: wait up to SETTLE seconds for it to
# fall under twice the CPU count before the next case.
settle() {
    local i
    for i in $(seq "${SETTLE:-90}"); do
        python3 -c "import os, sys; sys.exit(0 if os.getloadavg()[0] < 2 * os.cpu_count() else 1)" && return
        sleep 1
    done
}

run_case() { # case mode(flat|rate)
    local case="$1" mode="$2" extra=()
    settle
    [[ "$mode" == rate ]] && extra=(--rate 50)
    case "$case" in
        one-node) start_node A ;;
        one-node+r) start_redis; start_node A --redis "redis://127.0.0.1:$REDIS_PORT" ;;
        cross-node)
            start_redis
            start_node A --redis "redis://127.0.0.1:$REDIS_PORT"
            start_node B --redis "redis://127.0.0.1:$REDIS_PORT"
            extra+=(--also-url "$B_URL") ;;
    esac
    local load; load="$(cut -d' ' -f1 /proc/loadavg)"
    echo "== $case, $mode (load $load)" >&2
    "$GEN" fanout --url "$A_URL" --pid "$A_PID" --subscribers "$SUBSCRIBERS" --secs "$SECS" "${extra[@]}" \
        >"$WORK/gen.out" 2>"$WORK/gen.err" || { cat "$WORK/gen.err" >&2; FAILED=1; }
    stop_all
    python3 - "$OUT" "$case" "$mode" "$load" "$WORK/gen.out" <<'PY'
import json, sys
out, case, mode, load, gen = sys.argv[1:]
r = None
for l in open(gen, errors="replace"):
    if l.startswith('{"scenario":'):
        r = json.loads(l)
r = r or {"ok": False}
r.update(case=case, mode=mode, loadavg_1m_before=float(load))
open(out, "a").write(json.dumps(r) + "\n")
PY
}

for case in ${CASES:-one-node one-node+r cross-node}; do
    for mode in ${MODES:-flat rate}; do
        run_case "$case" "$mode"
    done
done

python3 - "$OUT" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
print("| case | load | delivered/s | lost | p50 / p99 ms | publish→ack p50 / p99 ms |")
print("|---|---:|---:|---:|---:|---:|")
ms = lambda v: "-" if v is None else f"{v / 1000:.1f}"
for r in rows:
    name = f"{r['case']}, {'flat out' if r['mode'] == 'flat' else '50 msg/s'}"
    dps = r.get("delivered_per_s")
    dps = f"{dps:,.0f}" if isinstance(dps, (int, float)) else "failed: " + str(r.get("error", "?"))[:60]
    print(f"| {name} | {r['loadavg_1m_before']:.1f} | {dps} | {r.get('lost', '-')} | "
          f"{ms(r.get('p50_us'))} / {ms(r.get('p99_us'))} | {ms(r.get('ack_p50_us'))} / {ms(r.get('ack_p99_us'))} |")
PY
echo "results: ${OUT#"$ROOT"/}" >&2
# A lost message or a failed run fails the script (speeds are not judged).
exit "$FAILED"
