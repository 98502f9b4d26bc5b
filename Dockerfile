# First version; the operations issue hardens it (health check, compose file,
# runtime-image verification).
# Build stage: the official Swift image for Debian bookworm.
FROM swift:6.3-bookworm AS build
RUN apt-get update && apt-get install -y --no-install-recommends libnats-dev libsqlite3-dev libssl-dev \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY Package.swift ./
COPY Sources ./Sources
COPY Tests ./Tests
RUN swift build -c release --product notify --static-swift-stdlib \
    && install -D .build/release/notify /out/notify

# Runtime stage: only the shared libraries notify links against.
FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends libnats3.4 libsqlite3-0 libssl3 ca-certificates tzdata \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --home /data notify \
    && mkdir -p /data && chown notify /data
COPY --from=build /out/notify /usr/local/bin/notify
USER notify
ENV DATA_DIR=/data ENVIRONMENT=production
VOLUME /data
EXPOSE 8080
ENTRYPOINT ["notify"]
CMD ["serve"]
