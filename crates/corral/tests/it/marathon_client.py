"""Drives corral's Marathon API with the `marathon` client from PyPI, unchanged.

Usage: marathon_client.py MASTER_URL TOKEN CA_FILE (basic auth with the token as the password).
Exits non-zero on the first failed expectation.
"""

import collections
import collections.abc
import sys
import time

# The client's JSON encoder uses collections.Iterable, gone since Python 3.10; nested
# bodies (containers, health checks) fail in the client before any request without this.
collections.Iterable = collections.abc.Iterable

import marathon  # noqa: E402
from marathon.models import MarathonApp, MarathonHealthCheck  # noqa: E402
from marathon.models.container import MarathonContainer, MarathonDockerContainer  # noqa: E402


def eventually(what, cond, timeout=60):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if cond():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for: {what}")


def main(url, token, ca):
    # Basic auth with the token as the password, as the issue asks of clients that speak only
    # basic auth; the cluster's CA as the bundle requests verifies with.
    c = marathon.MarathonClient(url, username="corral", password=token, verify=ca)
    assert c.ping().strip() == b"pong"
    info = c.get_info()
    assert info.name == "corral", info

    app = MarathonApp(
        cmd="sleep 1000",
        cpus=0.1,
        mem=16,
        instances=2,
        container=MarathonContainer(docker=MarathonDockerContainer(image="busybox")),
        health_checks=[MarathonHealthCheck(protocol="COMMAND", command="true", interval_seconds=1)],
        labels={"team": "a"},
    )
    created = c.create_app("py-app", app)
    assert created and created.id == "/py-app", created
    eventually("two running tasks", lambda: c.get_app("py-app").tasks_running == 2)
    eventually("healthy tasks", lambda: c.get_app("py-app").tasks_healthy == 2)
    eventually("the deployment ends", lambda: not c.list_deployments())

    apps = c.list_apps(embed_tasks=True, embed_counts=True, embed_task_stats=True, embed_readiness=True,
                       embed_deployments=True, embed_last_task_failure=True)
    assert [a.id for a in apps] == ["/py-app"], apps
    assert len(c.list_tasks("py-app")) == 2
    assert all(t.state == "TASK_RUNNING" for t in c.list_tasks())

    try:
        c.create_app("py-app", MarathonApp(cmd="sleep 1", mem=16))
        raise AssertionError("a duplicate id was accepted")
    except marathon.exceptions.ConflictError:
        pass
    try:
        c.create_app("bad", MarathonApp(cmd="sleep 1", cpus=-1))
        raise AssertionError("an invalid app was accepted")
    except marathon.exceptions.MarathonHttpError as e:
        assert e.status_code == 422, e
    try:
        c.get_app("nope")
        raise AssertionError("a missing app was found")
    except marathon.exceptions.NotFoundError:
        pass

    r = c.scale_app("py-app", instances=3)
    assert "deploymentId" in r and "version" in r, r
    eventually("three running tasks", lambda: c.get_app("py-app").tasks_running == 3)
    eventually("the scaling ends", lambda: not c.list_deployments())
    deployment = c.restart_app("py-app")
    assert "deploymentId" in deployment, deployment
    eventually("the restart ends", lambda: not c.list_deployments(), timeout=90)

    victim = c.list_tasks("py-app")[0]
    killed = c.kill_task("py-app", victim.id)
    assert killed.id == victim.id, killed
    eventually("the killed task is replaced", lambda: victim.id not in [t.id for t in c.list_tasks("py-app")]
               and c.get_app("py-app").tasks_running == 3)

    versions = c.list_versions("py-app")
    assert len(versions) >= 3, versions
    assert c.get_version("py-app", versions[-1]).id == "/py-app"
    assert c.list_queue() == []
    groups = c.list_groups()
    assert groups == [], groups
    assert "leader" in c.get_leader()
    assert "gauges" in c.get_metrics()

    # An app too big for the cluster waits in the queue, with the reasons of its offers.
    c.create_app("too-big", MarathonApp(cmd="sleep 1000", cpus=100, mem=16))

    def waiting():
        q = c.list_queue(embed_last_unused_offers=True)
        return len(q) == 1 and q[0].count == 1 and q[0].last_unused_offers

    eventually("the big app waits with reasons", waiting)
    item = c.list_queue(embed_last_unused_offers=True)[0]
    assert item.app.id == "/too-big", item
    assert "InsufficientCpus" in item.last_unused_offers[-1]["reason"], item.last_unused_offers
    c.delete_app("too-big", force=True)

    c.delete_app("py-app")
    eventually("the app is gone", lambda: c.list_apps() == [])
    eventually("its tasks are gone", lambda: c.list_tasks() == [])
    print("marathon client: ok")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], sys.argv[3])
