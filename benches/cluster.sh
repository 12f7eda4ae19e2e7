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
# run (the machine may be shared).
#   one-shard    two nodes on one Redis; PUBLISHERS (32) publishers, each in a
#                room of its own, alternating between the nodes, WINDOW (16)
#                publishes in flight each (benches/cluster_shards.py)
#   two-shards   the same with two Redis instances (--redis twice): rooms
#                spread over both
# print publishes/s across the cluster and Redis CPU per publish (INFO cpu
# of every instance, before and after; run with MODES=flat: the two modes
# are the same for them).
# Results: benches/results/cluster-<stamp>.jsonl. Exits 1 when a run lost a
# message or failed. WSHUB_BIN runs another wshub binary (with NO_BUILD=1).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BENCHES="$ROOT/benches"
WSHUB="${WSHUB_BIN:-$ROOT/target/release/wshub}"
GEN="${WSHUB_BENCH:-$ROOT/target/release/wshub-bench}"
SUBSCRIBERS="${SUBSCRIBERS:-1000}"
SECS="${SECS:-10}"

if [[ -z "${NO_BUILD:-}" ]]; then
    (cd "$ROOT" && cargo build --release --bin wshub >&2)
    (cd "$BENCHES/wshub-bench" && cargo build --release --target-dir "$ROOT/target" >&2)
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

# start_redis [VAR]: a fresh redis-server; its port in VAR (REDIS_PORT).
start_redis() {
    local var="${1:-REDIS_PORT}" port
    port="$(free_port)"
    printf -v "$var" '%s' "$port"
    redis-server --port "$port" --bind 127.0.0.1 --save '' --appendonly no --dir "$WORK" --dbfilename "$var.rdb" >/dev/null &
    PIDS+=($!)
    for _ in $(seq 100); do redis-cli -p "$port" PING >/dev/null 2>&1 && return; sleep 0.05; done
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

# shards_case N: two nodes on N Redis instances, benches/cluster_shards.py against them.
shards_case() {
    local n="$1" urls=() ports=() i var
    for i in $(seq "$n"); do
        var="REDIS${i}_PORT"
        start_redis "$var"
        ports+=(--redis-port "${!var}")
        urls+=(--redis "redis://127.0.0.1:${!var}")
    done
    start_node A "${urls[@]}"
    start_node B "${urls[@]}"
    python3 "$BENCHES/cluster_shards.py" --url "$A_URL" --url "$B_URL" "${ports[@]}" \
        --publishers "${PUBLISHERS:-32}" --window "${WINDOW:-16}" --secs "$SECS" \
        >"$WORK/gen.out" 2>"$WORK/gen.err" || { cat "$WORK/gen.err" >&2; FAILED=1; }
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
    case "$case" in
        one-shard) shards_case 1 ;;
        two-shards) shards_case 2 ;;
        *) "$GEN" fanout --url "$A_URL" --pid "$A_PID" --subscribers "$SUBSCRIBERS" --secs "$SECS" "${extra[@]}" \
            >"$WORK/gen.out" 2>"$WORK/gen.err" || { cat "$WORK/gen.err" >&2; FAILED=1; } ;;
    esac
    stop_all
    python3 - "$OUT" "$case" "$mode" "$load" "$WORK/gen.out" <<'PY'
import json, sys
out, case, mode, load, gen = sys.argv[1:]
r = None
for l in open(gen, errors="replace"):
    if l.startswith('{"scenario":'):
        r = json.loads(l)
r = r or {"ok": False}
if not r.get("ok"):
    print(f"{case}, {mode}: failed: {r.get('error')}", file=sys.stderr)
r.update(case=case, mode=mode, loadavg_1m_before=float(load))
open(out, "a").write(json.dumps(r) + "\n")
PY
}

for case in ${CASES:-one-node one-node+r cross-node one-shard two-shards}; do
    for mode in ${MODES:-flat rate}; do
        [[ "$case" == *shard* && "$mode" == rate ]] && continue # no rate mode: flat only
        run_case "$case" "$mode"
    done
done

python3 - "$OUT" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
shards = [r for r in rows if r.get("scenario") == "shards" or r["case"] in ("one-shard", "two-shards")]
rows = [r for r in rows if r not in shards]
if shards:
    print("| case | load | publishes/s | Redis CPU µs per publish | CPU s per shard | errors |")
    print("|---|---:|---:|---:|---|---:|")
    for r in shards:
        per = r.get("redis_cpu_us_per_publish")
        pps = r.get("publishes_per_s")
        print(f"| {r['case']} | {r['loadavg_1m_before']:.1f} | "
              f"{'failed' if pps is None else f'{pps:,.0f}'} | {'-' if per is None else f'{per:.1f}'} | "
              f"{r.get('per_shard_cpu_s', '-')} | {r.get('errors', '-')} |")
    print()
if rows:
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
