#!/usr/bin/env bash
# Runs the Autobahn|Testsuite fuzzingclient (RFC 6455 sections 1-10, and the
# permessage-deflate sections 12 and 13 of RFC 7692 on the "wshub" agent, or on
# every agent with AUTOBAHN_DEFLATE_ALL=1) against
# `wshub --echo` (agent "wshub"), the C example ffi-examples/echo_server.c
# (agent "c-echo"), and `wshub --echo` serving TLS (agent "wshub-wss", a
# certificate made here with openssl), then compares each agent's results with
# autobahn/expected-results.json; "wshub-wss" must match "wshub" exactly.
# The suite speaks wss:// itself, through Twisted and pyOpenSSL in its Python
# 2.7 virtualenv (installed below), not through a TLS proxy.
#
# Every server runs with compression on. Section 11 does not exist; the suite
# is Python 2.7 only: it runs from a
# virtualenv made with pyenv's 2.7.18, kept in ~/.cache/wshub-autobahn.
set -euo pipefail
cd "$(dirname "$0")/.."

venv="${WSHUB_AUTOBAHN_VENV:-$HOME/.cache/wshub-autobahn}"
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
make -s -C ffi-examples WSHUB_LIB_DIR="$PWD/target/release" BUILD="$work/c" "$work/c/echo_server"
pids=()
trap 'for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$work"' EXIT

# Starts a server whose first stdout line ends with "listening on HOST:PORT";
# sets $addr to that address. (Not called in $(...): the pid must reach $pids.)
start() {
  local out="$work/$1.out"; shift
  "$@" > "$out" &
  pids+=($!)
  for _ in $(seq 1 200); do
    grep -q "listening on" "$out" 2>/dev/null && break
    sleep 0.05
  done
  addr=$(grep -o "listening on [0-9.:]*" "$out" | awk '{print $3}')
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
# Sections 12 and 13 (permessage-deflate: 216 cases of up to 1000 messages of
# up to 128 KiB each) take most of the suite's time. CI runs them on the
# "wshub" agent; c-echo and wshub-wss run the same engine through other doors
# (the C ABI, TLS) and run them with AUTOBAHN_DEFLATE_ALL=1.
if [ "${AUTOBAHN_DEFLATE_ALL:-0}" = 1 ]; then deflate_cases='[]'; else deflate_cases='["12.*", "13.*"]'; fi
skip_deflate=$([ "${AUTOBAHN_DEFLATE_ALL:-0}" = 1 ] && echo "" || echo "12.,13.")
cat > "$work/spec.json" <<JSON
{
  "options": {"failByDrop": false},
  "outdir": "$work/reports",
  "servers": [
    {"agent": "wshub", "url": "ws://$wshub_addr/ws"},
    {"agent": "c-echo", "url": "ws://$c_addr/ws"},
    {"agent": "wshub-wss", "url": "wss://$wss_addr/ws"}
  ],
  "cases": ["*"],
  "exclude-cases": [],
  "exclude-agent-cases": {"c-echo": $deflate_cases, "wshub-wss": $deflate_cases}
}
JSON
(cd "$work" && timeout 2400 "$venv/bin/wstest" -m fuzzingclient -s spec.json > wstest.log 2>&1) || {
  tail -20 "$work/wstest.log"; exit 1; }
# Graceful stops: both must exit 0 (set -e fails the run otherwise).
for p in "${pids[@]}"; do kill -INT "$p"; done
for p in "${pids[@]}"; do
  wait "$p" || { echo "autobahn: server $p exited with status $?" >&2; exit 1; }
done
echo "autobahn: every server stopped gracefully (exit 0)"
pids=()
status=0
python3 autobahn/compare.py "$work/reports/index.json" wshub || status=1
SKIP_CASES="$skip_deflate" python3 autobahn/compare.py "$work/reports/index.json" c-echo || status=1
SKIP_CASES="$skip_deflate" python3 autobahn/compare.py "$work/reports/index.json" wshub-wss wshub || status=1
exit $status
