#!/bin/sh
# Proves the Dockerfile's runtime stage without a Docker engine: builds a
# Debian bookworm root file system with debootstrap, runs the runtime stage's
# own RUN instructions in it (so exactly the packages the Dockerfile names are
# installed), copies in notify built as the build stage builds it
# (--static-swift-stdlib), and inside a chroot, as the image's user, runs
# `notify --help` and `notify serve` against a nats-server on loopback until
# /health answers 200. A library the Dockerfile forgot makes it fail.
#
# Needs root (debootstrap, chroot), network access to a Debian mirror and
# about 400 MB in $WORK_DIR. Usage: scripts/verify-runtime-image.sh
set -eu

cd "$(dirname "$0")/.."
SWIFT=${SWIFT:-swift}
MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
WORK_DIR=${WORK_DIR:-$(mktemp -d /tmp/notify-rootfs.XXXXXX)}
ROOTFS="$WORK_DIR/rootfs"
log() { echo "verify-runtime-image: $*" >&2; }
fail() { log "FAILED: $*"; exit 1; }

[ "$(id -u)" = 0 ] || fail "run as root (debootstrap and chroot need it)"
scripts/install-packages.sh debootstrap nats-server curl

# 1. The binary, built the way the Dockerfile's build stage builds it.
log "building notify with --static-swift-stdlib (in .build-static)"
"$SWIFT" build -c release --product notify --static-swift-stdlib --scratch-path .build-static
BINARY=.build-static/release/notify

# 2. The runtime stage: its base image and its RUN instructions.
runtime_stage() {
    # Lines of the last stage (after the last FROM), continuations joined.
    awk '/^FROM /{stage=""} {stage = stage $0 "\n"} END{printf "%s", stage}' Dockerfile |
        sed -e ':a' -e '/\\$/N; s/\\\n//; ta'
}
BASE=$(runtime_stage | awk '/^FROM /{print $2; exit}')
[ "$BASE" = "debian:bookworm-slim" ] || fail "the runtime stage is FROM $BASE; this check knows debian:bookworm-slim"
RUN_STEPS=$(runtime_stage | sed -n 's/^RUN //p')
[ -n "$RUN_STEPS" ] || fail "no RUN instruction in the runtime stage"
USER_NAME=$(runtime_stage | awk '/^USER /{print $2}' | tail -1)
ENTRY=$(runtime_stage | sed -n 's/^COPY --from=build [^ ]* //p' | tail -1)
[ -n "$ENTRY" ] || fail "the runtime stage copies no binary from the build stage"

cleanup() {
    [ -n "${SERVE_PID:-}" ] && kill "$SERVE_PID" 2>/dev/null || true
    [ -n "${NATS_PID:-}" ] && kill "$NATS_PID" 2>/dev/null || true
    umount "$ROOTFS/proc" 2>/dev/null || true
    umount "$ROOTFS/dev" 2>/dev/null || true
    if [ -z "${KEEP:-}" ]; then rm -rf "$WORK_DIR"; else log "kept $WORK_DIR"; fi
}
trap cleanup EXIT INT TERM

log "debootstrap --variant=minbase bookworm into $ROOTFS"
debootstrap --variant=minbase bookworm "$ROOTFS" "$MIRROR" >"$WORK_DIR/debootstrap.log" 2>&1 ||
    { tail -20 "$WORK_DIR/debootstrap.log" >&2; fail "debootstrap"; }
mount -t proc proc "$ROOTFS/proc"
mount --bind /dev "$ROOTFS/dev"
cp /etc/resolv.conf "$ROOTFS/etc/resolv.conf"

log "running the runtime stage's RUN steps"
echo "$RUN_STEPS" | while IFS= read -r step; do
    log "  RUN $step"
    chroot "$ROOTFS" /bin/sh -ec "export DEBIAN_FRONTEND=noninteractive; $step" >>"$WORK_DIR/run.log" 2>&1 ||
        { tail -20 "$WORK_DIR/run.log" >&2; fail "RUN $step"; }
done
install -D -m 0755 "$BINARY" "$ROOTFS$ENTRY"

# The image's user, looked up in the image (numeric: chroot may resolve names on the host).
USER_SPEC=0:0
if [ -n "$USER_NAME" ]; then
    USER_SPEC="$(chroot "$ROOTFS" id -u "$USER_NAME"):$(chroot "$ROOTFS" id -g "$USER_NAME")" ||
        fail "the runtime stage runs as $USER_NAME, who does not exist in the image"
fi
as_image_user() { chroot --userspec="$USER_SPEC" "$ROOTFS" "$@"; }

# 3. Every shared library resolves, and the binary runs.
missing=$(chroot "$ROOTFS" /usr/bin/env LD_TRACE_LOADED_OBJECTS=1 "$ENTRY" 2>&1 | grep "not found" || true)
[ -z "$missing" ] || fail "libraries missing from the image: $missing"
as_image_user /usr/bin/env HOME=/data "$ENTRY" --help >/dev/null || fail "notify --help"
log "notify --help runs as ${USER_NAME:-root}"

# 4. notify serve answers /health with 200.
NATS_DIR="$WORK_DIR/nats"
mkdir -p "$NATS_DIR"
nats-server -js -a 127.0.0.1 -p -1 -sd "$NATS_DIR" -l "$NATS_DIR/nats.log" &
NATS_PID=$!
port=""
for _ in $(seq 1 100); do
    port=$(sed -n 's/.*Listening for client connections on 127.0.0.1:\([0-9]*\).*/\1/p' "$NATS_DIR/nats.log" 2>/dev/null | head -1)
    [ -n "$port" ] && break
    sleep 0.1
done
[ -n "$port" ] || fail "nats-server did not start"
HTTP_PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
# chroot itself in the background (not a function, which would be a subshell),
# so that $! is the process that becomes notify and receives the SIGTERM.
chroot --userspec="$USER_SPEC" "$ROOTFS" /usr/bin/env -i HOME=/data DATA_DIR=/data ENVIRONMENT=production LOG_LEVEL=info \
    NATS_URL="nats://127.0.0.1:$port" PORT="$HTTP_PORT" HOST=127.0.0.1 \
    JWT_SECRET=runtime-image-check-secret-of-32-bytes ALLOWED_ORIGINS=https://example.com \
    "$ENTRY" serve >"$WORK_DIR/serve.log" 2>&1 &
SERVE_PID=$!
status=""
for _ in $(seq 1 100); do
    status=$(curl -s -o "$WORK_DIR/health.json" -w '%{http_code}' "http://127.0.0.1:$HTTP_PORT/health" || true)
    [ "$status" = 200 ] && break
    kill -0 "$SERVE_PID" 2>/dev/null || { tail -20 "$WORK_DIR/serve.log" >&2; fail "notify serve exited"; }
    sleep 0.2
done
[ "$status" = 200 ] || { tail -20 "$WORK_DIR/serve.log" >&2; fail "/health answered ${status:-nothing}"; }
log "notify serve in the runtime image: /health 200 $(cat "$WORK_DIR/health.json")"

# 5. The image's HEALTHCHECK command works inside the image.
HEALTHCHECK_JSON=$(runtime_stage | sed -n 's/^HEALTHCHECK .*CMD \(\[.*\]\)$/\1/p')
[ -n "$HEALTHCHECK_JSON" ] || fail "the runtime stage has no HEALTHCHECK in exec form"
printf '%s' "$HEALTHCHECK_JSON" | python3 -c 'import json,sys; print("\0".join(json.load(sys.stdin)), end="")' >"$WORK_DIR/healthcheck.argv"
xargs -0 -a "$WORK_DIR/healthcheck.argv" chroot --userspec="$USER_SPEC" "$ROOTFS" /usr/bin/env -i PORT="$HTTP_PORT" PATH=/usr/bin:/bin ||
    fail "the HEALTHCHECK command failed against a healthy notify"
log "the HEALTHCHECK command passes"
kill -TERM "$SERVE_PID"
wait "$SERVE_PID" || fail "notify serve did not exit 0 on SIGTERM"
SERVE_PID=""
log "OK"
