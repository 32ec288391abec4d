"""Kubernetes mode end to end: the real agent, the real kubernetes client,
a fake API server speaking the real protocol; two network namespaces stand for
two pods whose IPs the API reports. Also: metrics and health over HTTP."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families

from accel.abi import POLICY_ACCELERATE, POLICY_OPT_OUT
from accel.endpoints.kube import OPT_OUT_KEY
from accel.sandbox import pods
from tests.kube_fake import FakeKube, namespace, pod
from tests.waiting import wait_for

from .traffic import connected_pair


def http_get(port: int, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def scrape(port: int) -> dict[str, float]:
    status, text = http_get(port, "/metrics")
    assert status == 200
    out = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            labels = ",".join(f"{k}={v}" for k, v in sorted(s.labels.items()))
            out[f"{s.name}{{{labels}}}" if labels else s.name] = s.value
    return out


@pytest.fixture
def fake_api(tmp_path):
    fake = FakeKube().start()
    yield fake
    fake.close()


def metrics_port(ctl) -> int:
    with open(ctl.state_dir + "/state.json") as f:
        return int(json.load(f)["metrics_port"])


def test_pods_from_the_api_are_accelerated_and_opt_out_applies_live(fresh_env, fake_api, tmp_path):
    ctl = fresh_env
    with pods(2, subnet=219) as topo:
        a, b = topo.pods
        fake_api.put("namespaces", namespace("default"))
        pa = pod("client", ips=(a.ipv4, a.ipv6))
        pb = pod("server", ips=(b.ipv4, b.ipv6))
        fake_api.put("pods", pa)
        fake_api.put("pods", pb)
        kubeconfig = fake_api.kubeconfig(str(tmp_path / "kubeconfig"))
        ctl.start("--kubernetes", "--kubeconfig", kubeconfig, "--node-name", "node1", "--watch-timeout", "2")
        # Kubernetes mode: pod IPs come from the API (not from the pods' netns).
        eps = ctl.endpoints()
        assert eps[a.ipv4] == POLICY_ACCELERATE and eps[b.ipv6] == POLICY_ACCELERATE
        port = metrics_port(ctl)
        assert http_get(port, "/readyz")[0] == 200
        assert http_get(port, "/healthz")[0] == 200

        m0 = scrape(port)
        client, server = connected_pair(b.ipv4, server_ns=b.ns, client_ns=a.ns)
        client.sendall(b"x" * 100_000)
        got = b""
        while len(got) < 100_000:
            got += server.recv(65536)
        m1 = scrape(port)
        # The scrapes themselves are local HTTP from this cgroup, so they are
        # accelerated too: at least our 100 kB, and never more than the kernel says.
        assert m1["accel_redirected_bytes_total"] - m0.get("accel_redirected_bytes_total", 0) >= 100_000
        assert m1["accel_redirected_bytes_total"] <= ctl.counters()["redirected_bytes"]
        assert m1["accel_sockets"] >= 2
        assert m1["accel_attached"] == 1
        assert m1["accel_endpoints{policy=accelerate,source=kubernetes}"] >= 4
        assert "accel_fallback_messages_total{reason=peer_missing}" in m1
        assert m1["accel_insert_failures_total{reason=full}"] == ctl.counters()["insert_failed"] == 0
        assert "accel_insert_failures_total{reason=exists}" in m1
        assert "accel_last_pod_event_age_seconds" in m1
        client.close()
        server.close()

        # Opt the server pod out through its annotation: new connections to it
        # stay on TCP, without restarting the agent.
        pb["metadata"]["annotations"] = {OPT_OUT_KEY: "false"}
        fake_api.put("pods", pb)
        wait_for(lambda: ctl.endpoints().get(b.ipv4) == POLICY_OPT_OUT, "opt-out in the map")
        before = ctl.counters()
        client, server = connected_pair(b.ipv4, server_ns=b.ns, client_ns=a.ns)
        client.sendall(b"y" * 5000)
        got = b""
        while len(got) < 5000:
            got += server.recv(65536)
        after = ctl.counters()
        assert after["inserted"] == before["inserted"]
        assert after["skipped_policy"] - before["skipped_policy"] == 2  # both ends
        assert after["redirected_bytes"] == before["redirected_bytes"]
        client.close()
        server.close()

        # Deleting a pod removes its endpoint.
        fake_api.delete("pods", pa)
        wait_for(lambda: a.ipv4 not in ctl.endpoints() and a.ipv6 not in ctl.endpoints(), "deleted pod's endpoints")

        # The watch was resumed across server-side timeouts (2 s) without relists.
        time.sleep(2.5)
        assert len(fake_api.watches("pods")) >= 2
        assert len(fake_api.lists("pods")) == 1
        assert ctl.stop() == 0


def test_not_ready_until_the_first_list(fresh_env, tmp_path):
    """An API server that never answers: the agent serves /readyz 503 and
    does not attach, and stops cleanly on SIGTERM."""
    import socket

    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(16)  # accepts connections, never answers
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(
        json.dumps(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "c", "cluster": {"server": f"http://127.0.0.1:{silent.getsockname()[1]}"}}],
                "users": [{"name": "u", "user": {"token": "t"}}],
                "contexts": [{"name": "c", "context": {"cluster": "c", "user": "u"}}],
                "current-context": "c",
            }
        )
    )
    ctl = fresh_env
    ctl.start("--kubernetes", "--kubeconfig", str(kubeconfig), "--node-name", "node1", wait=False)
    try:
        wait_for(lambda: "metrics listening" in ctl.log(), "metrics server")
        port = int(json.loads(next(ln for ln in ctl.log().splitlines() if "metrics listening" in ln))["port"])
        wait_for(lambda: "kernel ok" in ctl.log(), "datapath prepared")
        time.sleep(1)
        assert http_get(port, "/readyz")[0] == 503
        assert http_get(port, "/healthz")[0] == 503
        from .test_lifecycle import cgroup_sockops

        assert cgroup_sockops(ctl.cgroup) == []
    finally:
        assert ctl.stop() == 0
        silent.close()


def test_kubernetes_mode_needs_a_node_name(fresh_env, tmp_path):
    res = fresh_env.cli("run", "--cgroup", fresh_env.cgroup, "--kubernetes", check=False, env={"PATH": "/usr/bin:/bin"})
    assert res.returncode == 64
    assert "node-name is required" in res.stderr and "Traceback" not in res.stderr
