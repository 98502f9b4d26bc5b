#!/bin/sh
# Runs the event validator and the JWT verifier under libFuzzer with
# AddressSanitizer, FUZZ_RUNS inputs each (default 1,000,000), starting from
# the corpus in Tests/Fuzz/corpus. New interesting inputs go to a temp dir;
# FUZZ_MERGE=1 merges them into the committed corpus (kept minimal).
# A crash stops the run and leaves the input in ./crash-*.
set -eu
cd "$(dirname "$0")/.."
SWIFT=${SWIFT:-swift}
RUNS=${FUZZ_RUNS:-1000000}
# lld: gold fails on the fuzzer runtime ("internal error in format_file_lineno").
FLAGS="--scratch-path .build-fuzz -Xswiftc -sanitize=fuzzer,address -Xswiftc -DFUZZING -Xswiftc -Xclang-linker -Xswiftc -fuse-ld=lld"

for pair in EventFuzzer:events:66000 TokenFuzzer:tokens:20000; do
    name=${pair%%:*}; rest=${pair#*:}; corpus=Tests/Fuzz/corpus/${rest%%:*}; max_len=${rest#*:}
    echo "fuzz: building $name with -sanitize=fuzzer,address (in .build-fuzz)"
    # shellcheck disable=SC2086
    "$SWIFT" build $FLAGS --product "$name"
    found=$(mktemp -d)
    echo "fuzz: $name, $RUNS runs from $corpus"
    ".build-fuzz/debug/$name" -runs="$RUNS" -max_len="$max_len" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 "$found" "$corpus"
    if [ "${FUZZ_MERGE:-}" = 1 ]; then
        ".build-fuzz/debug/$name" -merge=1 -max_len="$max_len" "$corpus" "$found"
    fi
    rm -rf "$found"
done
echo "fuzz: no crash"
