#!/usr/bin/env bash
# Runs wshub and its peers, Bun (benches/peers/bun: Bun.serve, uWebSockets
# inside) and Node `ws` (benches/peers/node-ws), one after the other on this
# machine under the same load generator (benches/wshub-bench), records every
# result to benches/results/<timestamp>.jsonl and prints a markdown table:
# case | figure | one column per server | wshub's ratio to each peer | gen CPU % |
# server CPU %. Every case's rows include the server's CPU time (utime +
# stime from /proc/<pid>/stat) per unit of work: per handshake (conns), per
# delivered message (fanout*), per round trip (echo*).
#
#   benches/compare.sh                      # every case, full size
#   CASES="echo-1 echo-50" benches/compare.sh
#   CONNS=500 SUBSCRIBERS=100 SECS=2 benches/compare.sh   # a quick smoke run
#   benches/compare.sh --table benches/results/20260101T000000Z.jsonl
#
# Environment knobs (defaults in brackets):
#   CASES        cases to run, space or comma separated
#                [conns fanout fanout-rate fanout-json fanout-json-deflate echo-1 echo-50]
#                fanout-json: ~2 KB chat-like JSON messages, no compression;
#                fanout-json-deflate: the same with permessage-deflate offered
#                by every subscriber (wshub --compression on, the peers with
#                their perMessageDeflate on): wire bytes and server CPU per
#                delivered message, compressed / plain, in a table of its own
#   SERVERS      servers to run [wshub bun node]
#   CONNS        connections in the conns case [10000]
#   CONNS_SETTLE seconds the conns case waits after the burst before it reads
#                RSS, the same for every server (wshub's readers give back
#                their handshake's stack pages after a quiet second) [3]
#   SUBSCRIBERS  subscribers in the fanout cases [1000]
#   SECS         seconds each fanout case publishes for [10]
#   ECHO_TRIPS_1 / ECHO_TRIPS_50   trips per client in echo-1 / echo-50 [20000 / 2000]
#   GEN_NICE     nice(1) adjustment for the generator, e.g. -5 [0: none]
#   WSHUB        the wshub binary [target/release/wshub]
#   WSHUB_BASE   another wshub binary (an older build), run as the server
#                `wshub-base` (add it to SERVERS) with wshub's flags: a
#                before/after in one run, under the same load
#   WSHUB_BENCH  generator binary [target/release/wshub-bench]
#   BUN          the bun binary [benches/peers/bun/node_modules/.bin/bun]:
#                another checkout's, to skip `npm ci` here
#   NO_BUILD=1   skip the cargo builds (use the binaries as they are)
#   NO_CHECK=1   skip the protocol check (benches/peers/check.py) of each server;
#                without it a missing python `websockets` is an error
#   TLS=1        also run each case over TLS (case NAME-wss: wss:// to wshub's
#                --tls-cert and to each peer's TLS server, a certificate
#                made here with openssl), beside the plain run, and print what
#                TLS costs each server (wss figure / ws figure)
#
# Bun is the npm package `bun` (version pinned by benches/peers/bun's
# package-lock.json), installed there by `npm ci` on first use.
#
# Each server is started fresh for every case and stopped by its PID
# (SIGTERM, then waited for) before the next one starts.
#
# Exits 1 when a run failed: a server that did not start or exited non-zero,
# or the generator's ok: false (loss, out of order, closes, errors). A fanout
# case's loss fails every server but Bun, which drops past its
# backpressureLimit by design: its loss is shown (lost, ⚠, a "Loss not
# judged" line) and fails nothing when it is its only problem. A server that
# is behind but still delivering is waited for (the generator's --drain).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BENCHES="$ROOT/benches"
RESULTS="$BENCHES/results"
PEER="$BENCHES/peers/node-ws"
BUN_PEER="$BENCHES/peers/bun"
BUN="${BUN:-$BUN_PEER/node_modules/.bin/bun}"
WSHUB="${WSHUB:-$ROOT/target/release/wshub}"
GEN="${WSHUB_BENCH:-$ROOT/target/release/wshub-bench}"

# --- the table, from a results file -------------------------------------------------

print_table() {
    python3 - "$1" <<'PY'
import json, sys

CASES = {
    # case: [(figure shown, [JSON field names, first present wins], "higher"/"lower" is better)]
    "conns": [("handshakes/s", ["handshakes_per_s"], "higher"),
              ("server CPU µs per handshake", ["server_cpu_us_per_handshake"], "lower"),
              ("server CPU µs per conn, settling", ["server_cpu_us_per_conn_settling"], "lower"),
              ("RSS per conn (KiB)", ["rss_per_conn_kb"], "lower"),
              ("threads per conn", ["threads_per_conn"], "lower"),
              ("fds per conn", ["fds_per_conn"], "lower")],
    "fanout": [("delivered/s", ["delivered_per_s"], "higher"),
               ("server CPU µs per delivered", ["server_cpu_us_per_delivered"], "lower"),
               ("wire bytes per delivered", ["wire_bytes_per_delivered"], "lower"),
               ("lost", ["lost"], "lower"),
               ("p50 µs", ["p50_us"], "lower"), ("p90 µs", ["p90_us"], "lower"),
               ("p99 µs", ["p99_us"], "lower"), ("max µs", ["max_us"], "lower")],
    "echo": [("round trips/s", ["rps", "requests_per_s", "trips_per_s"], "higher"),
             ("server CPU µs per trip", ["server_cpu_us_per_trip"], "lower"),
             ("p50 µs", ["p50_us"], "lower"), ("p99 µs", ["p99_us"], "lower")],
}
ORDER = ["conns", "fanout", "fanout-rate", "fanout-json", "fanout-json-deflate", "echo-1", "echo-50"]
SERVER_ORDER = ["wshub", "wshub-base", "bun", "node"]

def kind(case):
    return "conns" if case.startswith("conns") else "fanout" if case.startswith("fanout") else "echo"

rows, meta = {}, None
with open(sys.argv[1]) as f:
    for line in f:
        line = line.strip()
        if not line:
            continue
        try:
            r = json.loads(line)
        except ValueError:
            continue
        if "meta" in r:
            meta = r["meta"]
        elif "case" in r and "server" in r:
            rows[(r["case"], r["server"])] = r  # a later run of the same pair wins

def num(x):
    return x if isinstance(x, (int, float)) and not isinstance(x, bool) else None

def fmt(x):
    if x is None:
        return "—"
    if isinstance(x, int) or float(x).is_integer() and abs(x) >= 100:
        return f"{int(x):,}"
    if abs(x) >= 100:
        return f"{x:,.0f}"
    if abs(x) >= 10:
        return f"{x:.1f}"
    return f"{x:.2f}"

def field(r, names):
    for n in names:
        if r is not None and n in r:
            return num(r[n])
    return None

def cell(r, names):
    if r is None:
        return "—"
    if "error" in r:
        return "failed"
    v = fmt(field(r, names))
    return v if r.get("ok", True) is not False else v + " ⚠"

servers = sorted({s for _, s in rows}, key=lambda s: (SERVER_ORDER.index(s) if s in SERVER_ORDER else 9, s))
peers = [s for s in servers if s != "wshub"] if "wshub" in servers else []

def cpu(case, key):
    return " / ".join(fmt(num(rows[(case, s)].get(key))) if (case, s) in rows else "—" for s in servers)

if meta:
    print(f"{meta.get('date', '')}: wshub {meta.get('wshub_rev', '?')}, bun {meta.get('bun', '?')}, "
          f"node {meta.get('node', '?')} + ws {meta.get('ws', '?')}, {meta.get('cpus', '?')} CPUs; "
          f"CPU % columns are the {' / '.join(servers)} runs, 100 = one core. "
          f"⚠ = the generator reported ok: false.\n")
not_judged = sorted({(c, s) for (c, s), r in rows.items() if "loss_not_judged" in r})
if not_judged:
    print("Loss not judged (the run did not fail on it): " + "; ".join(
        f"{s} in {c}: lost {rows[(c, s)].get('lost')}, {rows[(c, s)]['loss_not_judged']}" for c, s in not_judged) + ".\n")
loads = [r["loadavg_1m_before"] for r in rows.values() if num(r.get("loadavg_1m_before")) is not None]
if loads:
    cpus = (meta or {}).get("cpus") or 0
    note = " (above the CPU count: other work was competing)" if cpus and max(loads) > cpus else ""
    print(f"1-min load average before each run: {min(loads):.1f} to {max(loads):.1f}{note}\n")
def order(c):
    base = c[:-4] if c.endswith("-wss") else c
    return (ORDER.index(base) if base in ORDER else len(ORDER), base, c.endswith("-wss"))
cases = sorted({c for c, _ in rows}, key=order)
for case in cases:
    r = next(rows[(case, s)] for s in servers if (case, s) in rows)
    print(f"- {case}: {r.get('case_desc', case)}")
print()
head = " | ".join(servers) + "".join(f" | wshub/{p}" for p in peers)
print(f"| case | figure | {head} | gen CPU % | server CPU % |")
print("|---|---|" + "---:|" * (len(servers) + len(peers) + 2))
for case in cases:
    for name, names, better in CASES[kind(case)]:
        values = {s: field(rows.get((case, s)), names) for s in servers}
        cells = [cell(rows.get((case, s)), names) for s in servers]
        for p in peers:
            w, n = values["wshub"], values[p]
            cells.append(f"{w / n:.2f}" if w is not None and n not in (None, 0) else "—")
        arrow = "↑" if better == "higher" else "↓"
        print(f"| {case} | {name} {arrow} | {' | '.join(cells)} "
              f"| {cpu(case, 'gen_cpu_pct')} | {cpu(case, 'server_cpu_pct')} |")
print("\n↑ higher is better, ↓ lower is better.")

def per_server_ratio(title, pairs, figures):
    if not pairs:
        return
    print(f"\n{title}\n")
    print("| case | figure | " + " | ".join(servers) + " |")
    print("|---|---|" + "---:|" * len(servers))
    for case, base in pairs:
        for name, names in figures:
            cells = []
            for s in servers:
                t, p = field(rows.get((case, s)), names), field(rows.get((base, s)), names)
                cells.append(f"{t / p:.2f}" if t is not None and p not in (None, 0) else "—")
            print(f"| {case} | {name} | {' | '.join(cells)} |")

deflate = [(c, c.replace("fanout-json-deflate", "fanout-json")) for c in cases
           if c.startswith("fanout-json-deflate") and c.replace("fanout-json-deflate", "fanout-json") in cases]
per_server_ratio("What permessage-deflate does for each server: its fanout-json-deflate figure / its "
                 "fanout-json figure (wire bytes: ≤ 0.35 is issue 29's target; CPU: ≤ 1.5).",
                 deflate, [("wire bytes per delivered ↓", ["wire_bytes_per_delivered"]),
                           ("server CPU µs per delivered ↓", ["server_cpu_us_per_delivered"]),
                           ("delivered/s ↑", ["delivered_per_s"])])
wss = [(c, c[:-4]) for c in cases if c.endswith("-wss") and c[:-4] in cases]
if wss:
    figures = {}
    for case, base in wss:
        figures.setdefault(kind(case), [(f"{n} {'↑' if b == 'higher' else '↓'}", names)
                                        for n, names, b in CASES[kind(case)]
                                        if n not in ("lost", "threads per conn", "fds per conn", "max µs")])
    print("\nWhat TLS costs each server: its wss figure / its plain ws figure (1.00 = free).")
    for k, figs in figures.items():
        per_server_ratio(f"({k} cases)", [(c, b) for c, b in wss if kind(c) == k], figs)
PY
}

if [[ "${1:-}" == "--table" ]]; then
    [[ -n "${2:-}" && -f "$2" ]] || { echo "usage: $0 --table RESULTS.jsonl" >&2; exit 2; }
    print_table "$2"
    exit 0
elif [[ $# -gt 0 ]]; then
    sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'
    [[ "$1" == -h || "$1" == --help ]] && exit 0
    exit 2
fi

CASES="${CASES:-conns fanout fanout-rate fanout-json fanout-json-deflate echo-1 echo-50}"
CASES="${CASES//,/ }"
SERVERS="${SERVERS:-wshub bun node}"
SERVERS="${SERVERS//,/ }"
CONNS="${CONNS:-10000}"
CONNS_SETTLE="${CONNS_SETTLE:-3}"
SUBSCRIBERS="${SUBSCRIBERS:-1000}"
SECS="${SECS:-10}"
ECHO_TRIPS_1="${ECHO_TRIPS_1:-20000}"
ECHO_TRIPS_50="${ECHO_TRIPS_50:-2000}"
GEN_NICE="${GEN_NICE:-0}"

for c in $CASES; do
    case "$c" in conns | fanout | fanout-rate | fanout-json | fanout-json-deflate | echo-1 | echo-50) ;;
        *) echo "unknown case '$c' (conns fanout fanout-rate fanout-json fanout-json-deflate echo-1 echo-50)" >&2
            exit 2 ;;
    esac
done
for s in $SERVERS; do
    case "$s" in wshub | bun | node) ;;
        wshub-base) [[ -x "${WSHUB_BASE:-}" ]] || { echo "server wshub-base needs WSHUB_BASE=<binary>" >&2; exit 2; } ;;
        *) echo "unknown server '$s' (wshub bun node wshub-base)" >&2; exit 2 ;;
    esac
done
if [[ "${TLS:-0}" == 1 ]]; then
    with_tls=""
    for c in $CASES; do with_tls="$with_tls $c $c-wss"; done
    CASES="${with_tls# }"
fi

# 10000 connections need 10000+ fds in the server and in the generator.
hard="$(ulimit -Hn)"
if [[ "$hard" != unlimited ]] && ((hard < CONNS + 200)); then
    echo "warning: ulimit -n hard limit $hard is below CONNS+200; the conns case may fail" >&2
fi
ulimit -Sn "$hard"

# --- build and install --------------------------------------------------------------

# Before the builds, so a missing module fails in a second.
if [[ -z "${NO_CHECK:-}" ]] && ! python3 -c 'import websockets' 2>/dev/null; then
    # Without it the figures of a server that breaks the protocol would be
    # printed as if comparable: refuse rather than skip in silence.
    echo "compare.sh: python3 cannot import websockets, which the protocol check needs:" >&2
    echo "  pip install websockets (or bash .ci/setup), or NO_CHECK=1 to skip the check knowingly" >&2
    exit 1
fi

if [[ -z "${NO_BUILD:-}" ]]; then
    if [[ " $SERVERS " == *" wshub "* ]]; then
        echo "== cargo build --release (wshub)" >&2
        cargo build --release --quiet --manifest-path "$ROOT/Cargo.toml" --bin wshub >&2
    fi
    if [[ -z "${WSHUB_BENCH:-}" ]]; then
        [[ -f "$BENCHES/wshub-bench/Cargo.toml" ]] || {
            echo "no load generator: benches/wshub-bench/Cargo.toml is missing" >&2; exit 1; }
        echo "== cargo build --release (wshub-bench)" >&2
        # Into the root crate's target/: the dependencies both use are built once.
        cargo build --release --quiet --manifest-path "$BENCHES/wshub-bench/Cargo.toml" --target-dir "$ROOT/target" >&2
    fi
fi
[[ -x "$GEN" ]] || { echo "generator $GEN is not built" >&2; exit 1; }
if [[ " $SERVERS " == *" wshub "* && ! -x "$WSHUB" ]]; then echo "$WSHUB is not built" >&2; exit 1; fi
if [[ " $SERVERS " == *" node "* && ! -d "$PEER/node_modules/ws" ]]; then
    echo "== npm ci (benches/peers/node-ws)" >&2
    (cd "$PEER" && npm ci --no-audit --no-fund >&2)
fi
if [[ " $SERVERS " == *" bun "* && ! -x "$BUN" ]]; then
    echo "== npm ci (benches/peers/bun: the bun package)" >&2
    (cd "$BUN_PEER" && npm ci --no-audit --no-fund >&2)
    [[ -x "$BUN" ]] || { echo "npm ci in benches/peers/bun installed no $BUN" >&2; exit 1; }
fi

# --- servers ------------------------------------------------------------------------

WORK="$(mktemp -d)"
SERVER_PID=""
if [[ "${TLS:-0}" == 1 ]]; then
    # A CA and a server certificate for 127.0.0.1 (what the URL names).
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 \
        -subj "/CN=wshub bench CA" -keyout "$WORK/ca.key" -out "$WORK/ca.pem" 2>/dev/null
    openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -subj "/CN=127.0.0.1" \
        -keyout "$WORK/key.pem" -out "$WORK/server.csr" 2>/dev/null
    echo "subjectAltName=IP:127.0.0.1,DNS:localhost" >"$WORK/san.ext"
    openssl x509 -req -in "$WORK/server.csr" -CA "$WORK/ca.pem" -CAkey "$WORK/ca.key" -CAcreateserial \
        -days 2 -extfile "$WORK/san.ext" -out "$WORK/cert.pem" 2>/dev/null
fi

stop_server() {
    # Stops the server this script started, by its PID: SIGTERM, up to 10 s
    # to exit, then SIGKILL. Sets SERVER_EXIT.
    SERVER_EXIT=""
    [[ -n "$SERVER_PID" ]] || return 0
    local pid="$SERVER_PID" i
    SERVER_PID=""
    kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < 100; i++)); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    if kill -0 "$pid" 2>/dev/null; then
        echo "   server $pid still running 10 s after SIGTERM: SIGKILL" >&2
        kill -KILL "$pid" 2>/dev/null || true
    fi
    SERVER_EXIT=0
    wait "$pid" 2>/dev/null || SERVER_EXIT=$?
}

cleanup() {
    stop_server
    rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

start_server() { # server, case -> sets SERVER_PID and URL
    local server="$1" case="$2" out="$WORK/server.out" err="$WORK/server.err" addr="" i
    local tls=() scheme=ws deflate=()
    [[ "$case" == fanout-json-deflate* ]] && deflate=(--deflate)
    if [[ "$case" == *-wss ]]; then
        tls=(--tls-cert "$WORK/cert.pem" --tls-key "$WORK/key.pem")
        scheme=wss
    fi
    : >"$out"
    : >"$err"
    case "$server" in
        wshub | wshub-base)
            local extra=() bin="$WSHUB"
            [[ "$server" == wshub-base ]] && bin="$WSHUB_BASE"
            [[ "$case" == conns* ]] && extra=(--max-connections "$((CONNS + 100))")
            [[ "${case%-wss}" == fanout-json ]] && extra=(--compression off)
            [[ "${case%-wss}" == fanout-json-deflate ]] && extra=(--compression on)
            # Every load comes from one address, 256 handshakes in flight: past
            # the default bound per address (16), so it is raised like the rate limits.
            "$bin" --bind 127.0.0.1:0 --rate-limit 0 --frame-rate-limit 0 --max-handshakes-per-ip 1024 \
                --log-level warn "${extra[@]}" "${tls[@]}" >"$out" 2>"$err" &
            ;;
        node)
            node "$PEER/server.js" --port 0 "${tls[@]}" "${deflate[@]}" >"$out" 2>"$err" &
            ;;
        bun)
            "$BUN" "$BUN_PEER/server.js" --port 0 "${tls[@]}" "${deflate[@]}" >"$out" 2>"$err" &
            ;;
    esac
    SERVER_PID=$!
    for ((i = 0; i < 300; i++)); do
        addr="$(sed -n 's/^\(wshub \)\{0,1\}listening on \(127\.0\.0\.1:[0-9]*\)$/\2/p' "$out" | head -n1)"
        [[ -n "$addr" ]] && break
        if ! kill -0 "$SERVER_PID" 2>/dev/null; then
            echo "$server exited before listening:" >&2
            cat "$out" "$err" >&2
            SERVER_PID=""
            return 1
        fi
        sleep 0.05
    done
    if [[ -z "$addr" ]]; then
        echo "$server printed no listening line in 15 s" >&2
        stop_server
        return 1
    fi
    URL="$scheme://$addr/ws"
}

# --- cases --------------------------------------------------------------------------

case_args() { # case, label -> the generator's arguments, in GEN_ARGS
    local label="$2"
    case "${1%-wss}" in
        conns) GEN_ARGS=(conns -n "$CONNS" --settle "$CONNS_SETTLE" --label "$label") ;;
        fanout) GEN_ARGS=(fanout --subscribers "$SUBSCRIBERS" --rooms 1 --size 100 --secs "$SECS" --label "$label") ;;
        fanout-rate) GEN_ARGS=(fanout --subscribers "$SUBSCRIBERS" --rooms 1 --size 100 --rate 50 --secs "$SECS" --label "$label") ;;
        fanout-json) GEN_ARGS=(fanout --subscribers "$SUBSCRIBERS" --rooms 1 --size 2048 --payload chat --secs "$SECS" --label "$label") ;;
        fanout-json-deflate) GEN_ARGS=(fanout --subscribers "$SUBSCRIBERS" --rooms 1 --size 2048 --payload chat --deflate true --secs "$SECS" --label "$label") ;;
        echo-1) GEN_ARGS=(echo --clients 1 --trips "$ECHO_TRIPS_1" --label "$label") ;;
        echo-50) GEN_ARGS=(echo --clients 50 --trips "$ECHO_TRIPS_50" --label "$label") ;;
    esac
    [[ "$1" == *-wss ]] && GEN_ARGS+=(--tls-ca "$WORK/ca.pem")
    return 0
}

case_desc() {
    local wss=""
    [[ "$1" == *-wss ]] && wss=", over TLS (wss://)"
    case "${1%-wss}" in
        conns) echo "conns $CONNS$wss" ;;
        fanout) echo "fanout $SUBSCRIBERS subs, 1 room, 100 B, flat out, ${SECS} s$wss" ;;
        fanout-rate) echo "fanout $SUBSCRIBERS subs, 1 room, 100 B, 50 msg/s, ${SECS} s$wss" ;;
        fanout-json) echo "fanout $SUBSCRIBERS subs, 1 room, ~2 KB chat JSON, flat out, no compression, ${SECS} s$wss" ;;
        fanout-json-deflate) echo "fanout $SUBSCRIBERS subs, 1 room, ~2 KB chat JSON, flat out, permessage-deflate, ${SECS} s$wss" ;;
        echo-1) echo "echo 1 client × $ECHO_TRIPS_1$wss" ;;
        echo-50) echo "echo 50 clients × $ECHO_TRIPS_50$wss" ;;
    esac
}

# Other work on the machine takes CPU from both sides, and not evenly: the
# scheduler shares CPU per thread, so a busy machine favours a server with
# many threads (wshub) over a one-thread one (node).
read -r load _ </proc/loadavg
if python3 -c "import os, sys; sys.exit(0 if float('$load') > os.cpu_count() else 1)"; then
    echo "warning: 1-min load average $load is above the $(nproc) CPUs: other work will skew the figures" >&2
fi

mkdir -p "$RESULTS"
STAMP="$(date -u +%Y%m%dT%H%M%SZ)"
OUT="$RESULTS/$STAMP.jsonl"

python3 - "$OUT" "$STAMP" "$ROOT" "$PEER" "$GEN_NICE" "$BUN" <<'PY'
import json, os, subprocess, sys
out, stamp, root, peer, gen_nice, bun = sys.argv[1:]
def run(*cmd, cwd=None):
    try:
        return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=10).stdout.strip()
    except Exception:
        return ""
ws = ""
try:
    with open(os.path.join(peer, "node_modules", "ws", "package.json")) as f:
        ws = json.load(f)["version"]
except Exception:
    pass
meta = {"date": stamp, "wshub_rev": run("git", "rev-parse", "--short", "HEAD", cwd=root),
        "node": run("node", "--version"), "ws": ws, "bun": run(bun, "--version"), "cpus": os.cpu_count(), "gen_nice": int(gen_nice),
        "knobs": {k: os.environ[k] for k in ("CASES", "SERVERS", "CONNS", "SUBSCRIBERS", "SECS",
                                             "ECHO_TRIPS_1", "ECHO_TRIPS_50") if k in os.environ}}
with open(out, "w") as f:
    f.write(json.dumps({"meta": meta}) + "\n")
PY

NICE=()
[[ "$GEN_NICE" != 0 ]] && NICE=(nice -n "$GEN_NICE")

record() { # server, case, desc, server exit, generator exit, stdout file, stderr file, load average
    python3 - "$OUT" "$@" "$WORK/server.err" <<'PY'
import json, sys
out, server, case, desc, server_exit, gen_exit, stdout, stderr, load, server_err = sys.argv[1:]
line = None
with open(stdout, errors="replace") as f:
    for l in f:
        if l.startswith('{"scenario":'):
            line = l
try:
    r = json.loads(line) if line else None
except ValueError:
    r = None
if not isinstance(r, dict):
    with open(stderr, errors="replace") as f:
        tail = f.read()[-500:]
    r = {"ok": False, "error": f"no JSON result line (generator exit {gen_exit}): {tail.strip()}"}
r["server"], r["case"], r["case_desc"] = server, case, desc
r["server_exit"] = int(server_exit) if server_exit.lstrip("-").isdigit() else None
r["gen_exit"] = int(gen_exit)
r["loadavg_1m_before"] = float(load) if load else None
with open(server_err, errors="replace") as f:
    lines = f.read().splitlines()
if lines:  # wshub runs at --log-level warn: anything here is worth keeping
    r["server_stderr_lines"] = len(lines)
    r["server_stderr_tail"] = "\n".join(lines[-5:])[-1000:]
with open(stderr, errors="replace") as f:
    problems = [l[len("PROBLEM: "):].strip() for l in f if l.startswith("PROBLEM: ")]
# Bun drops what a send or publish adds past its backpressureLimit, by design
# and without closing (benches/README.md): when its only problem in a fanout
# case is loss, the loss is shown (lost, ⚠) but does not fail the run. Every
# other server, wshub first, fails on any loss.
loss_only = bool(problems) and all(p.split(" ", 1)[-1].startswith("deliveries lost") for p in problems)
if server == "bun" and case.startswith("fanout") and loss_only and "error" not in r:
    r["loss_not_judged"] = "bun drops past its backpressureLimit by design"
with open(out, "a") as f:
    f.write(json.dumps(r) + "\n")
failed = "error" in r or (r.get("ok") is False and "loss_not_judged" not in r) or r["server_exit"] != 0
if "loss_not_judged" in r:
    print(f"   {server}: lost {r.get('lost')} (not judged: {r['loss_not_judged']})", file=sys.stderr)
print(f"   {server}: " + ("FAILED: " + r["error"] if "error" in r else json.dumps(
    {k: v for k, v in r.items() if k not in ("server", "case", "case_desc", "server_stderr_tail")})),
    file=sys.stderr)
if failed and r.get("server_stderr_tail"):
    print(f"   {server}'s stderr ends:\n" + r["server_stderr_tail"], file=sys.stderr)
sys.exit(1 if failed else 0)
PY
}

if [[ -z "${NO_CHECK:-}" ]]; then
    for server in $SERVERS; do
        start_server "$server" check
        if ! python3 "$BENCHES/peers/check.py" "$URL" >"$WORK/check.out" 2>&1; then
            cat "$WORK/check.out" >&2
            echo "$server fails the protocol check; its figures would not be comparable" >&2
            exit 1
        fi
        stop_server
        echo "== $server passes benches/peers/check.py" >&2
    done
fi

FAILED=0
for case in $CASES; do
    desc="$(case_desc "$case")"
    for server in $SERVERS; do
        echo "== $desc: $server" >&2
        if ! start_server "$server" "$case"; then
            echo '{}' >"$WORK/gen.out"
            echo "server did not start" >"$WORK/gen.err"
            record "$server" "$case" "$desc" "" 1 "$WORK/gen.out" "$WORK/gen.err" "" || FAILED=$((FAILED + 1))
            continue
        fi
        case_args "$case" "$server"
        load="$(cut -d' ' -f1 /proc/loadavg)"
        gen_exit=0
        "${NICE[@]}" "$GEN" "${GEN_ARGS[0]}" --url "$URL" --pid "$SERVER_PID" "${GEN_ARGS[@]:1}" \
            >"$WORK/gen.out" 2>"$WORK/gen.err" || gen_exit=$?
        stop_server
        if [[ "$SERVER_EXIT" != 0 ]]; then
            echo "   $server exited with status $SERVER_EXIT; its stderr:" >&2
            tail -n 5 "$WORK/server.err" >&2
        fi
        record "$server" "$case" "$desc" "$SERVER_EXIT" "$gen_exit" "$WORK/gen.out" "$WORK/gen.err" "$load" ||
            FAILED=$((FAILED + 1))
    done
done

echo >&2
echo "results: ${OUT#"$ROOT"/}" >&2
echo
print_table "$OUT"
if ((FAILED > 0)); then
    echo "$FAILED run(s) failed, reported ok: false, or their server exited non-zero (see above)" >&2
    exit 1
fi
