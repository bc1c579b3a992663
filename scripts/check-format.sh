#!/usr/bin/env bash
# Fail when a C file differs from .clang-format's layout (scripts/check-format.sh [--fix]).
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v clang-format >/dev/null; then
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q clang-format >/dev/null 2>&1 ||
        { echo "check-format: clang-format missing and not installable" >&2; exit 1; }
fi
files=$(git ls-files '*.c' '*.h')
if [ "${1:-}" = "--fix" ]; then
    # shellcheck disable=SC2086
    clang-format -i $files
    exit 0
fi
bad=0
for f in $files; do
    if ! clang-format "$f" | diff -q "$f" - >/dev/null; then
        echo "check-format: $f differs from .clang-format (run scripts/check-format.sh --fix)" >&2
        bad=1
    fi
done
exit "$bad"
