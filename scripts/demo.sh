#!/usr/bin/env bash
# The demo on a fresh Debian 12 machine: installs what is missing, builds the
# examples in a temporary directory, starts a private RabbitMQ node, connects a
# service instance and prints what happened, then stops the node and cleans up.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/deps.sh
build=$(mktemp -d "${TMPDIR:-/tmp}/mmdemo.XXXXXX")
trap 'rm -rf "$build"' EXIT
meson setup "$build" -Dtests=false -Dexamples=true >/dev/null
ninja -C "$build" --quiet
tests/harness/broker.sh bash -c '"$0"/examples/demo "$MM_TEST_URI"' "$build"
