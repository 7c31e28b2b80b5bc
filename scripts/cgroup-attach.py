#!/usr/bin/env python3
"""Times the two ways a fresh process can move itself into cgroup v1 hierarchies.

- "pid to cgroup.procs" is what runtimes do: the kernel takes its global threadgroup rwsem
  for write, and after a quiet spell that waits out an RCU grace period.
- "0 to tasks" moves only the calling thread and skips that lock. corral's vendored
  libcgroups does this for a single-threaded process moving itself (vendor/README.md).

Each trial makes a fresh cgroup in every hierarchy below, forks a child that moves itself
into all of them, and reports how long the child's writes took. Trials are 50 ms apart, so
each one starts after a quiet spell, as a container start usually does. Needs root and a
cgroup v1 (or hybrid) host. Usage: scripts/cgroup-attach.py [TRIALS]
"""

import os
import sys
import time

HIERARCHIES = ["cpu", "cpuacct", "memory", "pids", "devices", "freezer", "blkio", "cpuset"]
ROOT = "/sys/fs/cgroup"


def make(name):
    for h in HIERARCHIES:
        path = f"{ROOT}/{h}/{name}"
        os.makedirs(path, exist_ok=True)
        if h == "cpuset":  # a cpuset cgroup takes no task until it has cpus and mems
            for f in ("cpuset.cpus", "cpuset.mems"):
                with open(f"{ROOT}/cpuset/{f}") as src, open(f"{path}/{f}", "w") as dst:
                    dst.write(src.read())


def remove(name):
    for h in HIERARCHIES:
        os.rmdir(f"{ROOT}/{h}/{name}")


def trial(mode, name):
    """Milliseconds the child took to move itself into every hierarchy."""
    make(name)
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        start = time.perf_counter()
        for h in HIERARCHIES:
            if mode == "tasks":
                with open(f"{ROOT}/{h}/{name}/tasks", "w") as f:
                    f.write("0")
            else:
                with open(f"{ROOT}/{h}/{name}/cgroup.procs", "w") as f:
                    f.write(str(os.getpid()))
        os.write(w, str(time.perf_counter() - start).encode())
        os._exit(0)
    os.waitpid(pid, 0)
    took = float(os.read(r, 64)) * 1000
    os.close(r)
    os.close(w)
    remove(name)
    return took


def main():
    if not os.path.isdir(f"{ROOT}/memory"):
        sys.exit("cgroup-attach: needs cgroup v1 hierarchies under /sys/fs/cgroup")
    trials = int(sys.argv[1]) if len(sys.argv) > 1 else 20
    for mode, label in (("procs", "pid to cgroup.procs"), ("tasks", "0 to tasks")):
        times = []
        for i in range(trials):
            time.sleep(0.05)  # a quiet spell: no attach in flight
            times.append(trial(mode, f"corral-attach-{os.getpid()}-{i}"))
        times.sort()
        print(f"{label:>20}: min {times[0]:.2f} ms, median {times[len(times) // 2]:.2f} ms, "
              f"max {times[-1]:.2f} ms ({trials} trials)")


if __name__ == "__main__":
    main()
