#!/usr/bin/env bash
# Install what micromsg needs to build, test and run its demo on Debian 12:
# the broker and the -dev packages, meson and ninja. Does nothing when all is
# there already. Needs root (or sudo) and apt access.
set -euo pipefail

PACKAGES=(
    rabbitmq-server
    librabbitmq-dev libmsgpack-dev libevent-dev libjansson-dev zlib1g-dev check
    meson ninja-build pkg-config gcc openssl procps
)

missing=()
for p in "${PACKAGES[@]}"; do
    if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
        missing+=("$p")
    fi
done
[ "${#missing[@]}" -eq 0 ] && exit 0

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    command -v sudo >/dev/null || { echo "deps.sh: need root to install: ${missing[*]}" >&2; exit 1; }
    SUDO=sudo
fi

# The package would start a system-wide broker on the default port; the tests
# start their own private node, so keep the service from starting.
added_policy=0
if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' | $SUDO tee /usr/sbin/policy-rc.d >/dev/null
    $SUDO chmod +x /usr/sbin/policy-rc.d
    added_policy=1
fi
cleanup() {
    if [ "$added_policy" = 1 ]; then
        $SUDO rm -f /usr/sbin/policy-rc.d
    fi
}
trap cleanup EXIT

echo "deps.sh: installing ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -q >/dev/null
$SUDO apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null
