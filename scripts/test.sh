#!/usr/bin/env bash
# The whole test suite on a fresh Debian 12 machine:
#   scripts/test.sh              build and run every suite against a private broker
#   scripts/test.sh --sanitize   the same under AddressSanitizer + UndefinedBehaviorSanitizer
#   scripts/test.sh --suite unit only the broker-less unit tests
# Installs what is missing (scripts/deps.sh), builds in a temporary directory,
# starts a private RabbitMQ node (tests/harness/broker.sh), and removes both at
# the end. Set MM_BUILD_DIR to keep and reuse a build directory.
set -euo pipefail
cd "$(dirname "$0")/.."

sanitize=0
suite_args=()
while [ "$#" -gt 0 ]; do
    case "$1" in
    --sanitize) sanitize=1 ;;
    --suite) suite_args+=(--suite "$2"); shift ;;
    *) echo "usage: scripts/test.sh [--sanitize] [--suite unit|integ]" >&2; exit 64 ;;
    esac
    shift
done

bash scripts/deps.sh

build=${MM_BUILD_DIR:-}
if [ -z "$build" ]; then
    build=$(mktemp -d "${TMPDIR:-/tmp}/mmbuild.XXXXXX")
    trap 'rm -rf "$build"' EXIT
fi

setup_args=(-Dtests=true -Dexamples=true)
[ "${CI:-}" = "true" ] && setup_args+=(--werror)
if [ "$sanitize" = 1 ]; then
    setup_args+=(-Db_sanitize=address,undefined -Db_lundef=false --buildtype=debug)
    export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=1}
    export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
    export CK_TIMEOUT_MULTIPLIER=${CK_TIMEOUT_MULTIPLIER:-3}
fi

if [ -f "$build/build.ninja" ]; then
    meson configure "$build" "${setup_args[@]}" >/dev/null
else
    meson setup "$build" "${setup_args[@]}" >/dev/null
fi
ninja -C "$build"

summary() {
    # One closing line for the whole run, summed over every Check suite.
    awk '/Checks: [0-9]+, Failures: [0-9]+, Errors: [0-9]+/ {
            gsub(/,/, ""); for (i = 1; i <= NF; i++) {
                if ($i == "Checks:") c += $(i + 1); if ($i == "Failures:") f += $(i + 1);
                if ($i == "Errors:") e += $(i + 1) } }
         END { printf "tests: %d passed, %d failed\n", c - f - e, f + e }' \
        "$build/meson-logs/testlog.txt"
}

run=(meson test -C "$build" --print-errorlogs --timeout-multiplier "${CK_TIMEOUT_MULTIPLIER:-1}"
    "${suite_args[@]}")
if [ "${suite_args[*]:-}" = "--suite unit" ]; then
    "${run[@]}" # no broker needed
else
    tests/harness/broker.sh "${run[@]}"
fi
summary
if [ "$sanitize" = 0 ] && [ "${suite_args[*]:-}" = "" ]; then
    bash scripts/check-install.sh "$build"
fi
