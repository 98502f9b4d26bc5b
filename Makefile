# notify — build, run and test. `make run` and `make test` install what is
# missing on Debian/Ubuntu first.

SWIFT       ?= swift
PACKAGES    := libnats-dev nats-server libsqlite3-dev libssl-dev
BENCH_ARGS  ?=
GATEWAY_BENCH_ARGS ?=
FEED_BENCH_ARGS ?=
CHAOS_ARGS  ?=
CLUSTER_ARGS ?=

.PHONY: deps build release run test browser-test bench cluster-bench sqlite-ceiling chaos cluster-test leak-check fuzz verify-image clean

## Install the Debian packages notify needs (with sudo when not root).
deps:
	@scripts/install-packages.sh $(PACKAGES)
	@command -v $(SWIFT) >/dev/null || { echo "Swift 6.2 or newer is required: https://www.swift.org/install/linux/"; exit 1; }

## Debug build.
build: deps
	$(SWIFT) build

## Release build of the notify executable.
release: deps
	$(SWIFT) build -c release --product notify

## Run the service; starts a local nats-server when none answers at NATS_URL.
run: deps release
	scripts/run.sh

## Unit and integration tests (they start their own nats-server).
test: deps
	@scripts/install-test-servers.sh
	$(SWIFT) test

## The demo page in headless Chromium (installs chromium and chromium-driver),
## Web Push included (through scripts/fake-fcm.py, which needs cryptography).
browser-test: deps
	@scripts/install-packages.sh chromium chromium-driver
	@scripts/install-test-servers.sh
	$(SWIFT) build --product notify
	@python=python3; [ -x .build/python/bin/python3 ] && python=.build/python/bin/python3; \
		echo "$$python scripts/browser-test.py"; $$python scripts/browser-test.py

## Throughput and latency figures (release build): one line of JSON for
## the worker with aggregation off and one with it on (AGGREGATE_WINDOW 1h),
## one for the gateway (10,000 WebSockets), one for feed page reads through
## the gateway (1,000,000 notifications stored, enrichment on).
bench: deps
	$(SWIFT) build -c release --product NotifyBenchmark
	$(SWIFT) build -c release --product notify
	.build/release/NotifyBenchmark --aggregate-window 0 $(BENCH_ARGS)
	.build/release/NotifyBenchmark --aggregate-window 1h $(BENCH_ARGS)
	.build/release/NotifyBenchmark --gateway true $(GATEWAY_BENCH_ARGS)
	.build/release/NotifyBenchmark --feed true $(FEED_BENCH_ARGS)

## Worker throughput with 1 and with 2 workers: on one nats-server and the
## SQLite file (200,000 events), and on a 3-node cluster (stream R3) with
## moto's DynamoDB server as the store (5,000 events); CPU per event of
## each part. One JSON line per run.
cluster-bench: deps
	@scripts/install-test-servers.sh
	$(SWIFT) build -c release --product NotifyBenchmark
	$(SWIFT) build -c release --product notify
	for workers in 1 2; do .build/release/NotifyBenchmark --workers $$workers --seconds 1 || exit 1; done
	for workers in 1 2; do .build/release/NotifyBenchmark --cluster true --workers $$workers --events 5000 || exit 1; done

## SQLite's own ceiling for the store's row work per event (C, no NATS,
## JSON or Swift): 200,000 events in batches of 1,024, 8,192 and 32,768,
## with SQLite's autocheckpoint and with none. One JSON line per run.
sqlite-ceiling: deps
	@scripts/install-packages.sh gcc
	@mkdir -p .build
	gcc -O2 -o .build/sqlite-ceiling bench/sqlite-ceiling.c -lsqlite3
	for batch in 1024 8192 32768; do for checkpoint in 1 0; do \
		.build/sqlite-ceiling 200000 $$batch 1000 $$checkpoint $${TMPDIR:-/tmp} || exit 1; done; done

## Fault injection against real processes (release notify, nats-server):
## worker and nats-server crashes and stalls, a locked, full, corrupt or
## torn store, hostile events and ids, a poison event, bad tokens, gateway
## crashes, a client that never reads, 5,000 connections; prints fault | must hold | measured | PASS/FAIL and
## fails when a check does. CHAOS_ARGS="--only worker-sigkill" runs one
## scenario (--list names them). Needs the sqlite3 command (installed).
chaos: deps
	@scripts/install-packages.sh sqlite3
	$(SWIFT) build -c release --product notify
	$(SWIFT) build -c release --product NotifyChaos
	.build/release/NotifyChaos $(CHAOS_ARGS)

## 100,000 events through the worker under LeakSanitizer.
leak-check: deps
	scripts/leak-check.sh

## Scale-out under faults: 3 clustered nats-servers (stream R3), moto's
## DynamoDB server as the store, 2 workers, 2 gateways, 2 WebSocket clients
## per user (one per gateway); 20,000 events while one NATS node and one
## worker are SIGKILLed; checks nothing lost or duplicated, both workers
## worked, cross-gateway delivery and reconnects. CLUSTER_ARGS="--events N".
cluster-test: deps
	@scripts/install-test-servers.sh
	$(SWIFT) build -c release --product notify
	$(SWIFT) build -c release --product NotifyChaos
	.build/release/NotifyChaos --cluster $(CLUSTER_ARGS)

## The event validator and the JWT verifier under libFuzzer and
## AddressSanitizer: FUZZ_RUNS inputs each (default 1,000,000);
## FUZZ_MERGE=1 adds what they find to Tests/Fuzz/corpus.
fuzz: deps
	scripts/fuzz.sh

## The Dockerfile's runtime stage, checked without Docker: debootstrap a
## bookworm root, install what the Dockerfile names, run notify serve in a
## chroot until /health answers 200 (root, network, several minutes).
verify-image: deps
	scripts/verify-runtime-image.sh

clean:
	rm -rf .build .build-* data
