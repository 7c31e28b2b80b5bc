"""Drives corral's Chronos API with the `chronos-python` client from PyPI, unchanged.

Usage: chronos_client.py HOST:PORT TOKEN (HTTPS, the CA in HTTPLIB2_CA_CERTS; basic auth with the
token as the password). Exits non-zero on the first failed expectation.
"""

import logging
import sys

import chronos  # noqa: E402


class Recorder(logging.Handler):
    """The client reports a server's error message only in its log (then raises "no remaining
    servers"): keep the log to check the message."""

    def __init__(self):
        super().__init__()
        self.lines = []

    def emit(self, record):
        self.lines.append(record.getMessage())


LOG = Recorder()
logging.getLogger("chronos").addHandler(LOG)
logging.getLogger("chronos").setLevel(logging.INFO)


def expect_error(what, f, says):
    LOG.lines.clear()
    try:
        f()
    except chronos.ChronosAPIError:
        assert any(says in line for line in LOG.lines), f"{what}: {LOG.lines}"
        return
    raise AssertionError(f"{what}: no error")


def main(server, token):
    for version in ("v1", None):
        c = chronos.connect(server, proto="https", username="corral", password=token, scheduler_api_version=version)
        suffix = "" if version else "-legacy"
        extra = {} if version else {"async": False}
        a = f"report{suffix}"
        b = f"publish{suffix}"
        c.add({"name": a, "command": "echo report", "owner": "ops@example.com", "disabled": False,
               "schedule": "R/2099-01-01T00:00:00Z/PT1H", "description": "nightly", **extra})
        c.add({"name": b, "command": "echo publish", "owner": "ops@example.com", "disabled": False,
               "parents": [a], **extra})
        jobs = {j["name"]: j for j in c.list()}
        assert a in jobs and b in jobs, jobs
        assert jobs[a]["schedule"].startswith("R/2099-01-01T00:00:00"), jobs[a]
        assert jobs[a]["retries"] == 2 and jobs[a]["cpus"] == 0.1, jobs[a]
        assert jobs[b]["parents"] == [a], jobs[b]
        assert jobs[a]["successCount"] == 0 and jobs[a]["lastSuccess"] == "", jobs[a]
        found = c.search(name=a)
        assert [j["name"] for j in found] == [a], found
        # An update keeps the job's name and changes its definition.
        c.update({"name": a, "command": "echo report v2", "owner": "ops@example.com", "disabled": False,
                  "schedule": "R/2099-01-01T00:00:00Z/PT2H", **extra})
        assert [j for j in c.list() if j["name"] == a][0]["command"] == "echo report v2"
        # Run now, then kill what runs (there may be no agent: the run waits, and is killed).
        c.run(a)
        c.delete_tasks(a)
        stat = c.job_stat(a)
        assert "histogram" in stat and "taskStatHistory" in stat, stat
        graph = c.scheduler_graph()
        assert f"link,{a},{b}" in graph, graph
        # Errors come back as the client expects them.
        expect_error("an unknown parent", lambda: c.add(
            {"name": "orphan", "command": "x", "owner": "o", "disabled": False, "parents": ["nobody"], **extra}),
            "nobody")
        expect_error("a bad schedule", lambda: c.add(
            {"name": "bad", "command": "x", "owner": "o", "disabled": False, "schedule": "daily", **extra}),
            "schedule")
        expect_error("deleting a parent", lambda: c.delete(a), b)
        c.delete(b)
        c.delete(a)
        assert all(j["name"] not in (a, b) for j in c.list())
        expect_error("an unknown job", lambda: c.run(a), "does not exist")
    print("ok")


if __name__ == "__main__":
    try:
        main(sys.argv[1], sys.argv[2])
    except Exception:
        # The client keeps the server's answer only in its log: show it.
        print("\n".join(LOG.lines), file=sys.stderr)
        raise
