#!/usr/bin/env bash
# The README's first command: build corral, make the busybox base image, run a container that
# prints its own hostname, user and memory limit, then start a one-machine cluster
# (`corral up`: master and agent, state in the embedded store) with a sample task running.
# Run as root on Debian 12.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/deps.sh
cargo build --release --locked
install -m 0755 target/release/corral /usr/local/bin/corral
export CORRAL="/usr/local/bin/corral"
root=${CORRAL_ROOT:-/var/lib/corral}
export CORRAL_MASTER=${CORRAL_MASTER:-http://127.0.0.1:5050}

if ! corral image inspect busybox:latest >/dev/null 2>&1; then
    scripts/make-busybox-image.sh busybox:latest
fi

echo "== a container"
corral run --rm --image busybox --name hello --mem 64 -- sh -c '
    echo "hostname:     $(hostname)"
    echo "user:         $(id)"
    if [ -f /sys/fs/cgroup/memory/memory.limit_in_bytes ]; then
        echo "memory limit: $(cat /sys/fs/cgroup/memory/memory.limit_in_bytes) bytes"
    else
        echo "memory limit: $(cat /sys/fs/cgroup/memory.max) bytes"
    fi'

echo "== a one-machine cluster"
if ! corral agents >/dev/null 2>&1; then
    mkdir -p "$root"
    nohup corral up >"$root/up.log" 2>&1 &
    echo "started: corral up (pid $!, log $root/up.log)"
fi
for _ in $(seq 1 100); do
    corral agents 2>/dev/null | grep -q ' active ' && break
    sleep 0.1
done
corral agents

task=$(corral task run --name sample --image busybox --mem 64 -- sh -c 'echo "sample task on $(hostname), as $(id -un)"; while true; do date; sleep 10; done')
for _ in $(seq 1 100); do
    corral tasks | grep "$task" | grep -q RUNNING && break
    sleep 0.1
done
corral tasks
corral task logs "$task" | head -1
echo
echo "The cluster runs in the background: corral tasks, corral agents, corral roles,"
echo "corral task run -- CMD, corral task logs -f $task. Stop it with: pkill -f 'corral up'"
