#!/usr/bin/env bash
# The README's first command: build corral, make the busybox base image, run a container that
# prints its own hostname, user and memory limit, then start a one-machine cluster
# (`corral up`: master and agent, state in the embedded store) with a sample service running.
# Run as root on Debian 12.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/deps.sh
cargo build --release --locked
install -m 0755 target/release/corral /usr/local/bin/corral
export CORRAL="/usr/local/bin/corral"
root=${CORRAL_ROOT:-/var/lib/corral}
master_url=https://127.0.0.1:5050

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

echo "== a sample service (Marathon app definition: examples/apps/hello.json)"
corral app deploy examples/apps/hello.json
for _ in $(seq 1 300); do
    [ -z "$(corral deployments | tail -n +2)" ] && break
    sleep 0.1
done
corral app show /examples/hello
# The APIs are HTTPS with the cluster's own CA, and need a token: `corral up` made an admin
# token and wrote both where the CLI finds them (~/.config/corral/config.json).
api() { curl -fsS --cacert "$root/master/pki/masters-ca.pem" -H "Authorization: Bearer $(cat "$root/master/admin-token")" "$@"; }
port=$(api "$master_url/v2/apps/examples/hello/tasks" | python3 -c '
import json, sys
tasks = [t for t in json.load(sys.stdin)["tasks"] if t["state"] == "TASK_RUNNING" and all(h.get("alive") for h in t.get("healthCheckResults", []))]
print(tasks[0]["ports"][0])')
curl -fsS "http://127.0.0.1:$port/"
echo
echo "The cluster runs in the background. Try: corral app ls, corral app scale /examples/hello 3,"
echo "corral app restart /examples/hello, corral deployments, corral app why /examples/hello,"
echo "corral tasks, corral agents, and Marathon's API:"
echo "  curl --cacert $root/master/pki/masters-ca.pem -H \"Authorization: Bearer \$(cat $root/master/admin-token)\" $master_url/v2/apps"
echo "Stop it with: pkill -f 'corral up'"
