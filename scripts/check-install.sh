#!/usr/bin/env bash
# Check `meson install` from a configured build dir: header, libraries and
# micromsg.pc are installed, and a program builds against the installed copy
# through pkg-config and runs (scripts/check-install.sh BUILD_DIR).
set -euo pipefail
build=${1:?usage: check-install.sh BUILD_DIR}
src=$(cd "$(dirname "$0")/.." && pwd)
stage=$(mktemp -d "${TMPDIR:-/tmp}/mminstall.XXXXXX")
trap 'rm -rf "$stage"' EXIT

meson install -C "$build" --destdir "$stage" --quiet
pc=$(find "$stage" -name micromsg.pc | head -n 1)
[ -n "$pc" ] || { echo "check-install: micromsg.pc not installed" >&2; exit 1; }
find "$stage" -name micromsg.h | grep -q . || { echo "check-install: header not installed" >&2; exit 1; }
find "$stage" -name 'libmicromsg.a' | grep -q . || { echo "check-install: static library not installed" >&2; exit 1; }
find "$stage" -path '*/man3/mm_connect.3' | grep -q . || { echo "check-install: man pages not installed" >&2; exit 1; }
so=$(find "$stage" -name 'libmicromsg.so.0' | head -n 1)
[ -n "$so" ] || { echo "check-install: shared library (SONAME libmicromsg.so.0) not installed" >&2; exit 1; }

export PKG_CONFIG_PATH
PKG_CONFIG_PATH=$(dirname "$pc")
prefix=$(pkg-config --variable=prefix micromsg)
flags=$(pkg-config --define-variable=prefix="$stage$prefix" --cflags --libs micromsg)
# shellcheck disable=SC2086
cc -std=c11 -o "$stage/demo" "$src/examples/demo.c" $flags
# A URI with an unknown scheme fails at once: exit 2 and a clear message.
set +e
out=$(LD_LIBRARY_PATH=$(dirname "$so") "$stage/demo" "http://nowhere" 2>&1)
rc=$?
set -e
if [ "$rc" -ne 2 ] || ! grep -q "MM_EURI" <<<"$out"; then
    echo "check-install: the installed library did not behave: rc=$rc: $out" >&2
    exit 1
fi
nm -D --defined-only "$so" | awk '$2 == "T" {print $3}' | grep -v '^mm_' && {
    echo "check-install: symbols other than mm_* exported" >&2
    exit 1
}
echo "check-install: header, libraries, micromsg.pc installed; a program built against them runs"
