#!/usr/bin/env bash
# Installs the Debian packages corral needs to build and to run containers, if any is missing,
# and the Python clients the Marathon and Chronos API tests use.
#   scripts/deps.sh [--bench]    (--bench adds the peers the benchmarks compare against)
set -euo pipefail

packages=(busybox-static libseccomp-dev pkg-config iproute2 file skopeo umoci docker-registry curl)
if [ "${1:-}" = "--bench" ]; then
    packages+=(crun runc buildah)
fi
missing=()
for p in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
    echo "deps: installing ${missing[*]}" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq "${missing[@]}" >/dev/null
fi

# Marathon's and Chronos's Python clients, which the tests drive corral's Marathon and Chronos
# APIs with.
if ! python3 -c 'import marathon' 2>/dev/null; then
    echo "deps: installing the marathon Python client" >&2
    python3 -m pip install --quiet --disable-pip-version-check --root-user-action=ignore marathon==0.13.0
fi
if ! python3 -c 'import chronos' 2>/dev/null; then
    echo "deps: installing the chronos-python client" >&2
    python3 -m pip install --quiet --disable-pip-version-check --root-user-action=ignore chronos-python==1.2.1
fi
