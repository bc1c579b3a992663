#!/usr/bin/env bash
# The demo on a fresh Debian 12 machine: installs what is missing, builds the
# library, mmctl and the examples in a temporary directory, starts a private
# RabbitMQ node, and shows in a short transcript (scripts/demo-steps.sh): an
# RPC server answering `mmctl request`, a worker pool sharing tasks, three
# replicas electing a leader and electing another when it is killed, and
# `mmctl status`; then stops everything it started and cleans up.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/deps.sh
build=$(mktemp -d "${TMPDIR:-/tmp}/mmdemo.XXXXXX")
trap 'rm -rf "$build"' EXIT
echo "building in $build ..."
meson setup "$build" -Dtests=false -Dexamples=true -Dtools=true -Ddocs=false >/dev/null
ninja -C "$build" --quiet
echo "starting a private RabbitMQ node ..."
env -u MM_TEST_URI tests/harness/broker.sh bash scripts/demo-steps.sh "$build"
