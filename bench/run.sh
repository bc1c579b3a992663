#!/usr/bin/env bash
# The benchmark against a private broker: bench/run.sh [--quick] [mm_bench options]
#   bench/run.sh                  5 rounds of every scenario (about 4 minutes)
#   bench/run.sh --quick          3 rounds of a tenth of the counts, under a minute (CI smoke)
#   bench/run.sh -s rpc1,events -r 3 -o /tmp/r.md
# Builds a release build (MM_BENCH_BUILD_DIR to keep one), starts a RabbitMQ
# node with scheduler busy-waiting off (tests/harness/broker.sh), runs
# mm_bench against it and stops it. The speed figures never fail the run;
# a scenario that cannot run does.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/deps.sh

build=${MM_BENCH_BUILD_DIR:-}
if [ -z "$build" ]; then
    build=$(mktemp -d "${TMPDIR:-/tmp}/mmbench.XXXXXX")
    trap 'rm -rf "$build"' EXIT
fi
if [ ! -f "$build/build.ninja" ]; then
    meson setup "$build" -Dbench=true -Dtests=false -Dexamples=false --buildtype=release >/dev/null
fi
ninja -C "$build" bench/mm_bench >/dev/null

export MM_BROKER_ERL_ARGS="+sbwt none +sbwtdcpu none +sbwtdio none"
# Inside the harness: point mm_bench at the private node and its Erlang VM.
env -u MM_TEST_URI tests/harness/broker.sh bash -c '
    export MM_URI=$MM_TEST_URI MM_BENCH_BROKER_PID=$MM_TEST_BROKER_PID
    MM_BENCH_BROKER_VERSION=$($MM_TEST_CTL version 2>/dev/null || true)
    export MM_BENCH_BROKER_VERSION
    exec "$0" "$@"' "$build/bench/mm_bench" "$@"
