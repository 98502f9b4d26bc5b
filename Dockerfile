# notify: one image for `notify serve`, `worker` and `gateway`.
# Runtime stage verified without Docker by `make verify-image`
# (scripts/verify-runtime-image.sh).

# Build stage: the official Swift image for Debian bookworm. The Swift
# runtime is linked statically, so the runtime stage needs no Swift.
FROM swift:6.3-bookworm AS build
RUN apt-get update && apt-get install -y --no-install-recommends libnats-dev libsqlite3-dev libssl-dev \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
# Dependencies first, so a source change does not refetch them.
COPY Package.swift ./
RUN swift package resolve
COPY Sources ./Sources
COPY Tests ./Tests
RUN swift build -c release --product notify --static-swift-stdlib \
    && install -D .build/release/notify /out/notify

# Runtime stage: only the shared libraries notify links against, a
# non-root user, and /data for the SQLite store.
FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends libnats3.4 libsqlite3-0 libssl3 ca-certificates tzdata \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --user-group --home-dir /data --no-create-home notify \
    && mkdir -p /data && chown notify:notify /data
COPY --from=build /out/notify /usr/local/bin/notify
USER notify
ENV DATA_DIR=/data ENVIRONMENT=production PORT=8080 HOST=0.0.0.0
VOLUME /data
EXPOSE 8080
# bash's /dev/tcp: no curl in the image.
HEALTHCHECK --interval=15s --timeout=3s --start-period=10s --retries=3 \
    CMD ["bash", "-c", "exec 3<>/dev/tcp/127.0.0.1/${PORT:-8080} && printf 'GET /health HTTP/1.0\\r\\nHost: localhost\\r\\n\\r\\n' >&3 && head -n 1 <&3 | grep -q ' 200 '"]
# Exec form: SIGTERM reaches notify, which drains and exits 0.
ENTRYPOINT ["notify"]
CMD ["serve"]
