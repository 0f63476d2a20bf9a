#!/usr/bin/env bash
# Smoke load test: a debug Switchyard server on loopback and the load generator with
# 1 room x (2 publishers + 2 subscribers) for 10 s. Fails when a participant does not join
# or never receives media from every publisher (the generator's own rule, exit 4), when
# loss is above 1% (exit 3), or when the server cannot be started.
#
# Needs target/debug/switchyard and target/debug/switchyard-loadtest (`cargo build
# --workspace`). scripts/test runs this inside a loopback-only network namespace.
# The JSON report is left in target/loadtest-smoke.json.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

server_bin=target/debug/switchyard
loadtest_bin=target/debug/switchyard-loadtest
for bin in "$server_bin" "$loadtest_bin"; do
    [[ -x $bin ]] || { echo "smoke: $bin is missing: run cargo build --workspace" >&2; exit 1; }
done

out=$(mktemp) err=$(mktemp)
"$server_bin" --bind 127.0.0.1:0 --udp-port 0 >"$out" 2>"$err" &
pid=$!
cleanup() {
    kill "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
    rm -f "$out" "$err"
}
trap cleanup EXIT

# The server prints its address once it listens: "... open http://127.0.0.1:PORT/ ...".
addr=""
for _ in $(seq 100); do
    addr=$(sed -n 's|.*open http://\([^/]*\)/.*|\1|p' "$out")
    [[ -n $addr ]] && break
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
done
if [[ -z $addr ]]; then
    echo "smoke: the server did not start; its log:" >&2
    cat "$err" >&2
    exit 1
fi

status=0
"$loadtest_bin" --url "ws://$addr/rtc" --rooms 1 --publishers 2 --subscribers 2 \
    --duration 10s --max-loss 1 --json target/loadtest-smoke.json --server-pid "$pid" \
    || status=$?
if [[ $status -ne 0 ]]; then
    echo "smoke: switchyard-loadtest exited with $status; the server's log (last 50 lines):" >&2
    tail -n 50 "$err" >&2
fi
exit "$status"
