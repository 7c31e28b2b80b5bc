#!/usr/bin/env bash
# The README's first command: build corral, make the busybox base image, and run a container
# that prints its own hostname, user and memory limit. Run as root on Debian 12.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/deps.sh
cargo build --release --locked
install -m 0755 target/release/corral /usr/local/bin/corral
export CORRAL="/usr/local/bin/corral"

if ! corral image inspect busybox:latest >/dev/null 2>&1; then
    scripts/make-busybox-image.sh busybox:latest
fi

corral run --rm --image busybox --name hello --mem 64 -- sh -c '
    echo "hostname:     $(hostname)"
    echo "user:         $(id)"
    if [ -f /sys/fs/cgroup/memory/memory.limit_in_bytes ]; then
        echo "memory limit: $(cat /sys/fs/cgroup/memory/memory.limit_in_bytes) bytes"
    else
        echo "memory limit: $(cat /sys/fs/cgroup/memory.max) bytes"
    fi'
