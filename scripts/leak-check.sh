#!/usr/bin/env bash
# Runs 100,000 events through a `notify worker` built with AddressSanitizer
# (LeakSanitizer), stops it with SIGTERM, and fails on any leak report: a
# nats.c message or subscription we fail to release is allocated inside
# libnats, so every report counts, whoever allocated it.
set -euo pipefail
cd "$(dirname "$0")/.."
events="${LEAK_CHECK_EVENTS:-100000}"

echo "Building notify with -sanitize=address (scratch path .build-asan)…"
swift build --scratch-path .build-asan --product notify -Xswiftc -sanitize=address
swift build -c release --product NotifyBenchmark
worker_binary=".build-asan/debug/notify"

work="$(mktemp -d)"
nats_pid=""; worker_pid=""
cleanup() {
  [ -n "$worker_pid" ] && kill -KILL "$worker_pid" 2>/dev/null || true
  [ -n "$nats_pid" ] && kill "$nats_pid" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

nats-server -js -a 127.0.0.1 -p -1 -sd "$work/jetstream" -l "$work/nats.log" &
nats_pid=$!
for _ in $(seq 1 100); do grep -q "Server is ready" "$work/nats.log" 2>/dev/null && break; sleep 0.1; done
port="$(grep -o 'Listening for client connections on [0-9.]*:[0-9]*' "$work/nats.log" | grep -o '[0-9]*$')"
url="nats://127.0.0.1:$port"

ASAN_OPTIONS="detect_leaks=1:abort_on_error=0" LSAN_OPTIONS="report_objects=0" \
  NATS_URL="$url" DATA_DIR="$work/data" LOG_LEVEL=info NATS_STREAM_STORAGE=memory \
  "$worker_binary" worker >"$work/worker.log" 2>&1 &
worker_pid=$!
for _ in $(seq 1 300); do
  grep -q "worker running" "$work/worker.log" 2>/dev/null && break
  kill -0 "$worker_pid" 2>/dev/null || { echo "the worker did not start:"; cat "$work/worker.log"; exit 1; }
  sleep 0.1
done

echo "Publishing $events events to the worker under LeakSanitizer…"
start=$(date +%s)
.build/release/NotifyBenchmark --nats-url "$url" --events "$events"
echo "Processed in $(( $(date +%s) - start )) s; stopping the worker with SIGTERM."
kill -TERM "$worker_pid"
status=0; wait "$worker_pid" || status=$?
worker_pid=""

report="$work/worker.log"
if grep -q "ERROR: LeakSanitizer" "$report"; then
  echo "LeakSanitizer reported leaks:"; grep -v '^\s*$' "$report" | tail -n 80; exit 1
fi
if grep -q "ERROR: AddressSanitizer" "$report"; then
  echo "AddressSanitizer found an error:"; cat "$report"; exit 1
fi
[ "$status" -eq 0 ] || { echo "the worker exited with status $status:"; tail -n 40 "$report"; exit 1; }
echo "leak check passed: $events events through the worker, LeakSanitizer reported nothing, exit status 0"
