#!/usr/bin/env bash
# Runs the Autobahn|Testsuite fuzzingclient (RFC 6455 sections 1-10) against
# `wshub --echo` and compares the results with autobahn/expected-results.json.
#
# Sections 12 and 13 test permessage-deflate, which tungstenite does not
# implement, so they are excluded. The suite is Python 2.7 only: it runs from a
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

cargo build --release --bin wshub
work=$(mktemp -d)
trap 'kill "$server" 2>/dev/null || true; rm -rf "$work"' EXIT

# 16 MB messages are part of section 9: raise the 1 MiB default for this run.
./target/release/wshub --echo --bind 127.0.0.1:0 --max-message-size 33554432 \
  --log-level warn > "$work/server.out" &
server=$!
for _ in $(seq 1 100); do
  [ -s "$work/server.out" ] && break
  sleep 0.05
done
addr=$(awk '{print $4}' "$work/server.out")
sed -e "s|@URL@|ws://$addr/ws|" -e "s|@OUTDIR@|$work/reports|" \
  autobahn/fuzzingclient.json > "$work/spec.json"
(cd "$work" && timeout 900 "$venv/bin/wstest" -m fuzzingclient -s spec.json > wstest.log 2>&1) || {
  tail -20 "$work/wstest.log"; exit 1; }
kill -INT "$server"
wait "$server"   # graceful stop: must exit 0
python3 autobahn/compare.py "$work/reports/index.json" wshub
