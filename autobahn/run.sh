#!/usr/bin/env bash
# Runs the Autobahn|Testsuite fuzzingclient (RFC 6455 sections 1-10, and the
# permessage-deflate sections 12 and 13 of RFC 7692) against `wshub --echo`
# (agent "wshub"), the C example ffi-examples/echo_server.c (agent "c-echo"),
# and `wshub --echo` serving TLS (agent "wshub-wss", a certificate made here
# with openssl), then compares each agent's results with
# autobahn/expected-results.json; "wshub-wss" must match "wshub" exactly.
# The suite speaks wss:// itself, through Twisted and pyOpenSSL in its Python
# 2.7 virtualenv (installed below), not through a TLS proxy.
#
# Every server runs with compression on. Section 11 does not exist; the suite
# is Python 2.7 only: it runs from a
# virtualenv made with pyenv's 2.7.18, kept in ~/.cache/wshub-autobahn.
#
# The cases run in several wstest processes at once, each with its own spec,
# case list and report directory (autobahn/plan.py splits them): one per
# agent for sections 1-10, and each deflate agent's sections 12 and 13, most
# of the run, dealt out over AUTOBAHN_DEFLATE_SHARDS more (default 3). One
# wstest runs its cases one after another, each case a message at a time
# waiting for the echo, and spends most of its time in its own Python: on two
# cores several at once take well under their sum. Then every agent's reports
# are judged together against the expected results (compare.py).
# AUTOBAHN_CASES='["12.1.*", "13.7.1"]' (the suite's JSON list of case
# patterns) runs only those cases, and compares only them;
# AUTOBAHN_DEFLATE_AGENTS="wshub" runs sections 12 and 13 on the agents
# named only (default: all three). Every wait here is bounded: a server's
# start (10 s), each wstest (30 minutes), each server's stop (30 s).
set -euo pipefail
cd "$(dirname "$0")/.."

venv="${WSHUB_AUTOBAHN_VENV:-$HOME/.cache/wshub-autobahn}"
# .ci/setup clones pyenv into $PYENV_ROOT without putting it on the PATH of
# later shells (.ci/run's): look for it there.
export PYENV_ROOT="${PYENV_ROOT:-$HOME/.pyenv}"
export PATH="$PYENV_ROOT/bin:$PATH"
if [ ! -x "$venv/bin/wstest" ]; then
  py2="$(pyenv root)/versions/2.7.18/bin/python"
  [ -x "$py2" ] || pyenv install -s 2.7.18
  "$py2" -m pip install -q --disable-pip-version-check virtualenv 2>/dev/null
  "$py2" -m virtualenv -q "$venv"
  "$venv/bin/pip" install -q --disable-pip-version-check autobahntestsuite 2>/dev/null
fi
# wss:// in the suite needs pyOpenSSL (the last releases for Python 2.7).
if ! "$venv/bin/python" -c "import OpenSSL, service_identity" 2>/dev/null; then
  "$venv/bin/pip" install -q --disable-pip-version-check "pyOpenSSL<20" "cryptography<3.4" "service_identity<19" 2>/dev/null
fi

cargo build --release --bin wshub --lib
work=$(mktemp -d)
pids=()
suites=()
# On any exit: the servers, the job shells, and each wstest with the
# `timeout` it runs under are stopped (a wstest's Twisted may linger on
# SIGTERM in the middle of a case, so it gets SIGKILL).
cleanup() {
  local p
  for p in $(cat "$work"/*/timeout.pid 2>/dev/null); do
    pkill -KILL -P "$p" 2>/dev/null || true
    kill -KILL "$p" 2>/dev/null || true
  done
  for p in "${pids[@]}" "${suites[@]}"; do
    kill "$p" 2>/dev/null || true
  done
  rm -rf "$work"
}
trap cleanup EXIT
make -s -C ffi-examples WSHUB_LIB_DIR="$PWD/target/release" BUILD="$work/c" "$work/c/echo_server"

# Starts a server whose first stdout line ends with "listening on HOST:PORT";
# sets $addr to that address. (Not called in $(...): the pid must reach $pids.)
start() {
  local name=$1 out="$work/$1.out"; shift
  "$@" > "$out" &
  pids+=($!)
  for _ in $(seq 1 200); do
    grep -q "listening on" "$out" 2>/dev/null && break
    kill -0 "${pids[-1]}" 2>/dev/null || break
    sleep 0.05
  done
  # `|| true`: with pipefail a grep finding nothing would end the script here
  # (set -e), before the error below says why.
  addr=$(grep -o "listening on [0-9.:]*" "$out" | awk '{print $3}') || true
  [ -n "$addr" ] || { echo "autobahn: $name did not say it listens within 10 s (or exited)" >&2; exit 1; }
}

# 16 MB messages, 64 KiB fragmentation and 1000-message bursts are part of
# section 9 (performance): raise the message and queue limits for this run and
# turn the frame-rate and fragment limits off (the C example does the same, and
# turns compression on, when given a message size). The limits themselves are tested in tests/.
big=33554432
start wshub ./target/release/wshub --echo --bind 127.0.0.1:0 --max-message-size $big \
  --outbound-max-bytes $((4 * big)) --frame-rate-limit 0 --max-fragments 0 --compression on --log-level warn
wshub_addr=$addr
start c-echo "$work/c/echo_server" 0 $big
c_addr=$addr
# A throwaway certificate for the wss run (the suite does not verify it).
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 1 \
  -subj "/CN=localhost" -keyout "$work/key.pem" -out "$work/cert.pem" 2>/dev/null
start wshub-wss ./target/release/wshub --echo --bind 127.0.0.1:0 --max-message-size $big \
  --outbound-max-bytes $((4 * big)) --frame-rate-limit 0 --max-fragments 0 --log-level warn \
  --compression on --tls-cert "$work/cert.pem" --tls-key "$work/key.pem"
wss_addr=$addr
cases="${AUTOBAHN_CASES:-[\"*\"]}"
deflate_agents="${AUTOBAHN_DEFLATE_AGENTS:-wshub c-echo wshub-wss}"
declare -A url=([wshub]="ws://$wshub_addr/ws" [c-echo]="ws://$c_addr/ws" [wshub-wss]="wss://$wss_addr/ws")
# One wstest per job (autobahn/plan.py): each agent's cases outside 12 and
# 13, and each deflate agent's 12 and 13 split over $shards wstests.
shards="${AUTOBAHN_DEFLATE_SHARDS:-3}"
# The suite's own case ids, so that one the expected results lack is run and
# reported (compare.py), not left out.
"$venv/bin/python" -c 'import json; from autobahntestsuite import case as c
print(json.dumps([".".join(k.__name__[len(c.CaseBasename):].split("_")) for k in c.Cases]))' > "$work/suite-cases.json"
jobs=$(python3 autobahn/plan.py "$cases" "$deflate_agents" "$shards" "$work/suite-cases.json")
if [ -z "$jobs" ]; then
  echo "autobahn: AUTOBAHN_CASES=$cases names no case in autobahn/expected-results.json" >&2
  exit 1
fi
run_job() { # job agent case-list: one wstest, its own spec and report directory
  mkdir -p "$work/$1"
  cat > "$work/$1/spec.json" <<JSON
{
  "options": {"failByDrop": false},
  "outdir": "$work/$1/reports",
  "servers": [{"agent": "$2", "url": "${url[$2]}"}],
  "cases": $3,
  "exclude-cases": [],
  "exclude-agent-cases": {}
}
JSON
  local from=$SECONDS
  (cd "$work/$1" && timeout -k 30 1800 "$venv/bin/wstest" -m fuzzingclient -s spec.json > wstest.log 2>&1 &
   echo $! > "$work/$1/timeout.pid"; wait $!) || {
    echo "autobahn: wstest for $1 failed:" >&2; tail -20 "$work/$1/wstest.log" >&2; return 1; }
  echo "autobahn: $1's $(python3 -c 'import json,sys; print(len(json.loads(sys.argv[1])))' "$3") cases took $((SECONDS - from))s"
}
started=$(date +%s)
while read -r job agent list; do
  run_job "$job" "$agent" "$list" & suites+=($!)
done <<< "$jobs"
failed=0
for s in "${suites[@]}"; do wait "$s" || failed=1; done
echo "autobahn: the ${#suites[@]} wstests took $(( $(date +%s) - started ))s"
suites=()
[ "$failed" = 0 ] || exit 1
# Graceful stops: every server must exit 0 within 30 s (set -e fails the run
# otherwise).
for p in "${pids[@]}"; do kill -INT "$p"; done
for p in "${pids[@]}"; do
  for _ in $(seq 1 300); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
  if kill -0 "$p" 2>/dev/null; then echo "autobahn: server $p still running 30 s after SIGINT" >&2; exit 1; fi
  wait "$p" || { echo "autobahn: server $p exited with status $?" >&2; exit 1; }
done
echo "autobahn: every server stopped gracefully (exit 0)"
pids=()
# Every agent's reports judged together; only the cases its jobs ran are
# expected (the same patterns, and 12 and 13 left out unless it is a deflate
# agent).
only=$(python3 -c 'import json,sys; print(",".join(json.loads(sys.argv[1])))' "$cases")
status=0
for agent in wshub c-echo wshub-wss; do
  reports=()
  while read -r job a _; do
    [ "$a" = "$agent" ] && reports+=("$work/$job/reports/index.json")
  done <<< "$jobs"
  [ ${#reports[@]} -gt 0 ] || continue
  case " $deflate_agents " in *" $agent "*) skip="" ;; *) skip="12.*,13.*" ;; esac
  expected_as=$agent
  [ "$agent" = wshub-wss ] && expected_as="wshub-wss=wshub"
  ONLY_CASES="$only" EXCLUDE_CASES="$skip" python3 autobahn/compare.py "$expected_as" "${reports[@]}" || status=1
done
exit $status
