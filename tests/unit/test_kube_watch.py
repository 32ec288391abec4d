"""The pod watcher, through the real kubernetes client, against a server that
speaks the API's list and watch protocol (tests/kube_fake.py)."""

from __future__ import annotations

import pytest
from kubernetes import client

from accel import log as logmod
from accel.abi import POLICY_ACCELERATE, POLICY_OPT_OUT
from accel.endpoints.kube import OPT_OUT_KEY, KubeEndpoints
from tests.kube_fake import FakeKube, namespace, pod
from tests.waiting import wait_for


@pytest.fixture
def fake():
    f = FakeKube().start()
    yield f
    f.close()


@pytest.fixture
def watcher(fake):
    cfg = client.Configuration(host=fake.url)
    logmod.configure("console")
    w = KubeEndpoints(client.ApiClient(cfg), "node1", logmod.get("test"), notify=lambda: None, watch_timeout=2, read_timeout=5)
    yield w
    w.close()


def test_list_then_watch_tracks_this_nodes_pods(fake, watcher):
    fake.put("namespaces", namespace("default"))
    fake.put("namespaces", namespace("quiet", {OPT_OUT_KEY: "false"}))
    fake.put("pods", pod("web", ips=("10.1.0.5", "fd00:1::5")))
    fake.put("pods", pod("elsewhere", node="node2", ips=("10.1.9.9",)))
    fake.put("pods", pod("hostnet", ips=("192.168.0.10",), spec={"hostNetwork": True}))
    pending = fake.put("pods", pod("starting", phase="Pending")) and pod("starting", phase="Pending")
    fake.put("pods", pod("db", namespace="quiet", ips=("10.1.0.6",)))
    fake.put("pods", pod("shy", ips=("10.1.0.7",), annotations={OPT_OUT_KEY: "false"}))
    watcher.start()
    assert watcher.wait_ready(10)
    assert watcher.state.policies() == {
        "10.1.0.5": POLICY_ACCELERATE,
        "fd00:1::5": POLICY_ACCELERATE,
        "10.1.0.6": POLICY_OPT_OUT,  # namespace label
        "10.1.0.7": POLICY_OPT_OUT,  # pod annotation
    }
    # The list was filtered by node, and the watch started from the list's
    # resourceVersion, with bookmarks.
    assert fake.lists("pods")[0]["fieldSelector"] == "spec.nodeName=node1"
    wait_for(lambda: fake.watches("pods"), "a pod watch")
    first_watch = fake.watches("pods")[0]
    assert first_watch["allowWatchBookmarks"] == "true"
    assert first_watch["fieldSelector"] == "spec.nodeName=node1"
    assert int(first_watch["resourceVersion"]) >= 100

    # A pod becoming Running arrives through the watch.
    pending["status"] = {"phase": "Running", "podIPs": [{"ip": "10.1.0.8"}]}
    fake.put("pods", pending)
    wait_for(lambda: "10.1.0.8" in watcher.state.policies(), "pod turned Running")
    # Opt-out changes apply without a restart, both ways.
    fake.put("namespaces", namespace("quiet"))
    wait_for(lambda: watcher.state.policies().get("10.1.0.6") == POLICY_ACCELERATE, "namespace opted back in")
    # Deleting a pod removes its addresses.
    web = fake.objects["pods"]["default/web"]
    fake.delete("pods", web)
    wait_for(lambda: "10.1.0.5" not in watcher.state.policies(), "deleted pod")
    assert "fd00:1::5" not in watcher.state.policies()


def test_bookmarks_advance_the_resource_version(fake, watcher):
    fake.put("namespaces", namespace("default"))
    watcher.start()
    assert watcher.wait_ready(10)
    fake.put("namespaces", namespace("other"))  # an event of another resource moves rv
    target = fake.rv
    wait_for(lambda: int(watcher.pods.resource_version or 0) >= target, "bookmark rv")


def test_410_gone_relists_and_misses_nothing(fake, watcher):
    fake.put("namespaces", namespace("default"))
    fake.put("pods", pod("a", ips=("10.2.0.1",)))
    watcher.start()
    assert watcher.wait_ready(10)
    lists_before = len(fake.lists("pods"))
    # History is compacted and a pod appears meanwhile; the next watch gets 410.
    fake.expire_history()
    fake.put("pods", pod("b", ips=("10.2.0.2",)))
    wait_for(lambda: len(fake.lists("pods")) > lists_before, "a relist after 410", timeout=15)
    wait_for(lambda: "10.2.0.2" in watcher.state.policies(), "pod seen through the relist")
    assert watcher.pods.relists >= 1


def test_dropped_connection_resumes_from_the_last_version(fake, watcher):
    fake.put("namespaces", namespace("default"))
    watcher.start()
    assert watcher.wait_ready(10)
    wait_for(lambda: fake.watches("pods"), "a pod watch")
    lists_before = len(fake.lists("pods"))
    fake.drop_watches = 1
    # The event after the cut is only delivered by the resumed watch.
    fake.put("pods", pod("c", ips=("10.3.0.1",)))
    wait_for(lambda: "10.3.0.1" in watcher.state.policies(), "pod c")
    fake.put("pods", pod("d", ips=("10.3.0.2",)))
    wait_for(lambda: "10.3.0.2" in watcher.state.policies(), "pod after the reconnect", timeout=15)
    resumed = fake.watches("pods")[-1]
    assert int(resumed["resourceVersion"]) > 100
    assert len(fake.lists("pods")) == lists_before  # a resume, not a relist


def test_silent_stream_is_abandoned_and_resumed(fake):
    """A watch that sends nothing (not even bookmarks) hits the client's read
    timeout; the watcher reconnects from the same resourceVersion."""
    cfg = client.Configuration(host=fake.url)
    w = KubeEndpoints(client.ApiClient(cfg), "node1", logmod.get("test"), notify=lambda: None, watch_timeout=30, read_timeout=1.0)
    try:
        fake.put("namespaces", namespace("default"))
        fake.silent_watches = 2  # the first pod watch (and maybe the namespace one) hangs
        w.start()
        assert w.wait_ready(10)
        wait_for(lambda: len(fake.watches("pods")) >= 2, "a second pod watch after the silent one", timeout=15)
        first, second = fake.watches("pods")[:2]
        assert second["resourceVersion"] == first["resourceVersion"]
        assert len(fake.lists("pods")) == 1
        fake.put("pods", pod("late", ips=("10.4.0.1",)))
        wait_for(lambda: "10.4.0.1" in w.state.policies(), "event on the resumed watch")
        assert w.restarts() >= 1
    finally:
        w.close()


def test_no_event_is_missed_across_bookmarks_and_stream_restarts(fake, watcher):
    """Events land at random moments against 1 s streams and 50 ms bookmarks;
    the final state must be exactly what the server holds. (A bookmark that
    claimed an event it had not sent made an end-to-end test flaky once.)"""
    import random
    import time

    fake.bookmark_interval = 0.05
    fake.put("namespaces", namespace("default"))
    watcher.pods.watch_timeout = 1
    watcher.start()
    assert watcher.wait_ready(10)
    rng = random.Random(5)
    live: dict[str, dict] = {}
    for _ in range(150):
        name = f"p{rng.randrange(20)}"
        if name in live and rng.random() < 0.4:
            fake.delete("pods", live.pop(name))
        else:
            live[name] = live.get(name) or pod(name, ips=(f"10.7.0.{int(name[1:]) + 1}",))
            fake.put("pods", live[name])
        time.sleep(rng.uniform(0, 0.03))
    expected = {f"10.7.0.{int(n[1:]) + 1}": POLICY_ACCELERATE for n in live}
    wait_for(lambda: watcher.state.policies() == expected, "the watcher to hold exactly the server's pods")
    assert len(fake.watches("pods")) >= 2  # streams did restart


def test_api_errors_back_off_then_recover(fake):
    """A refused list (RBAC not applied yet, an overloaded API server) is
    retried with growing pauses, never in a tight loop, and the watcher
    becomes ready once the API answers."""
    import time

    from structlog.testing import capture_logs

    cfg = client.Configuration(host=fake.url)
    with capture_logs() as records:
        w = KubeEndpoints(client.ApiClient(cfg), "node1", logmod.get("test"), notify=lambda: None, watch_timeout=2, read_timeout=5)
        try:
            fake.put("namespaces", namespace("default"))
            fake.put("pods", pod("web", ips=("10.5.0.1",)))
            fake.failures = [("pods", 403, "Forbidden"), ("pods", 503, "ServiceUnavailable"), ("pods", 500, "InternalError")]
            started = time.monotonic()
            w.start()
            assert w.wait_ready(30)
            # Three pauses of at least 0.5x of 0.5, 1 and 2 s (jittered) passed.
            assert time.monotonic() - started >= 1.7
            assert len(fake.lists("pods")) == 4 and w.pods.restarts == 3
            assert w.state.policies() == {"10.5.0.1": POLICY_ACCELERATE}
        finally:
            w.close()
    errors = [r for r in records if r["event"] == "api error; retrying"]
    assert [r["status"] for r in errors] == [403, 503, 500]
    assert "clusterrole" in errors[0]["fix"]
    assert [r["retry_in"] for r in errors] == [0.5, 1.0, 2.0]


def test_every_pod_event_is_logged_with_the_pod_bound(fake):
    from structlog.testing import capture_logs

    cfg = client.Configuration(host=fake.url)
    with capture_logs() as records:
        w = KubeEndpoints(client.ApiClient(cfg), "node1", logmod.get("test"), notify=lambda: None, watch_timeout=2, read_timeout=5)
        try:
            fake.put("namespaces", namespace("shop"))
            w.start()
            assert w.wait_ready(10)
            cart = pod("cart", namespace="shop", ips=("10.6.0.1",))
            fake.put("pods", cart)
            cart["metadata"]["annotations"] = {OPT_OUT_KEY: "false"}
            fake.put("pods", cart)
            fake.delete("pods", cart)
            wait_for(lambda: sum(r["event"] == "pod event" for r in records) >= 3, "three pod events logged")
        finally:
            w.close()
    events = [(r["pod"], r["type"], r["ips"], r["opted_out"]) for r in records if r["event"] == "pod event"]
    assert events == [
        ("shop/cart", "ADDED", ["10.6.0.1"], False),
        ("shop/cart", "MODIFIED", ["10.6.0.1"], True),
        ("shop/cart", "DELETED", [], False),
    ]
