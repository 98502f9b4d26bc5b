#!/usr/bin/env bash
# Runs notify for local development: starts nats-server with JetStream
# (data under $DATA_DIR/nats) when nothing answers at NATS_URL, then
# `notify serve` (worker and gateway) with a development JWT_SECRET that it
# prints. Ctrl-C stops both.
set -euo pipefail
cd "$(dirname "$0")/.."

export NATS_URL="${NATS_URL:-nats://127.0.0.1:4222}"
export DATA_DIR="${DATA_DIR:-./data}"
binary=".build/release/notify"
[ -x "$binary" ] || { echo "run 'make release' first" >&2; exit 1; }

first_url="${NATS_URL%%,*}"
address="${first_url#*://}"
address="${address##*@}"
host="${address%%:*}"
port="${address##*:}"
[ "$port" = "$address" ] && port=4222

answers() { (exec 3<>"/dev/tcp/$host/$port") 2>/dev/null; }

nats_pid=""
cleanup() {
  if [ -n "$nats_pid" ]; then kill "$nats_pid" 2>/dev/null || true; wait "$nats_pid" 2>/dev/null || true; fi
}
trap cleanup EXIT

if answers; then
  echo "Using the NATS server at $NATS_URL"
else
  case "$host" in
    127.0.0.1|localhost|0.0.0.0) ;;
    *) echo "NATS at $NATS_URL does not answer, and it is not local: start it or fix NATS_URL" >&2; exit 1 ;;
  esac
  mkdir -p "$DATA_DIR/nats"
  echo "Starting nats-server with JetStream on 127.0.0.1:$port (data in $DATA_DIR/nats, log in $DATA_DIR/nats/server.log)"
  # Its own session: Ctrl-C stops notify first, then the trap stops nats-server.
  setsid nats-server -js -a 127.0.0.1 -p "$port" -sd "$DATA_DIR/nats" >"$DATA_DIR/nats/server.log" 2>&1 &
  nats_pid=$!
  for _ in $(seq 1 100); do answers && break; sleep 0.1; done
  answers || { echo "nats-server did not start; see $DATA_DIR/nats/server.log" >&2; exit 1; }
fi

if [ -z "${JWT_SECRET:-}" ]; then
  # A development secret, kept in DATA_DIR so tokens survive restarts.
  secret_file="$DATA_DIR/dev-jwt-secret"
  if [ ! -s "$secret_file" ]; then
    mkdir -p "$DATA_DIR"
    head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' > "$secret_file"
  fi
  JWT_SECRET="$(cat "$secret_file")"
  export JWT_SECRET
  echo "Development JWT_SECRET (HS256): $JWT_SECRET"
fi

port="${PORT:-8080}"
echo "Open http://localhost:$port/ for the demo page."
echo "Publish a test event with:"
echo "  $binary publish notifications.post.like '{\"owner\":\"ana\",\"trigger_user\":\"ben\",\"action\":1,\"resource_type\":\"POST\",\"resource_id\":\"p1\",\"created_at\":$(date +%s)}'"
"$binary" serve &
service_pid=$!
trap 'kill -TERM "$service_pid" 2>/dev/null || true' INT TERM
wait "$service_pid" || status=$?
wait "$service_pid" 2>/dev/null || true
exit "${status:-0}"
