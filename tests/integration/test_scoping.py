"""Only local peers enter the map, and namespaces never see each other's
loopback bytes."""

from __future__ import annotations

import json
import threading
import time

from accel.sandbox import hidden_netns, plug_hidden, pods

from .traffic import assert_intact, connected_pair, exchange, payload


def test_connection_to_a_non_local_address_is_never_inserted(accel_env, tmp_path):
    with pods(1, subnet=214) as topo, hidden_netns(str(tmp_path / "remote-host")) as remote:
        pod = topo.pods[0]
        remote_ip = "10.214.0.99"  # lives in a namespace no controller can see
        plug_hidden(topo, remote, remote_ip)
        accel_env.wait_endpoints(pod.ipv4)
        # Configuring the hidden namespace takes a process inside it for a
        # moment (pyroute2's netns helper). A rescan that caught it watches
        # the namespace, and its address can arrive a few ms after
        # plug_hidden returned; the next full scan (every 10 rounds of 0.2 s)
        # drops it again. So wait until the address has stayed away for
        # longer than a full scan's period, not merely until it is absent once.
        deadline = time.monotonic() + 15
        absent_since: float | None = None
        while time.monotonic() < deadline:
            now = time.monotonic()
            if remote_ip in accel_env.endpoints():
                absent_since = None
            elif absent_since is None:
                absent_since = now
            elif now - absent_since > 2.5:
                break
            time.sleep(0.05)
        assert remote_ip not in accel_env.endpoints()
        before = accel_env.counters()
        client, server = connected_pair(remote_ip, server_ns=remote, client_ns=pod.ns)
        client_tuple = (0, pod.ipv4, client.getsockname()[1], remote_ip, client.getpeername()[1])
        try:
            assert client_tuple not in accel_env.sockets()
            f_ab, f_ba = exchange(client, server, payload(5, 200_000), payload(6, 1000), 4096)
            assert_intact(f_ab)
            assert_intact(f_ba)
            after = accel_env.counters()
            assert after["skipped_not_local"] - before["skipped_not_local"] >= 1
            # The "remote" server's socket is ours too here (this process is in
            # the cgroup), and from its side the pod IS local, so it may be
            # listed, alone; the pod's socket must not be, nor a full pair.
            client_end = f"{pod.ipv4}:{client_tuple[2]}"
            shown = json.loads(accel_env.cli("conns", "--json").stdout)["connections"]
            assert not any(c["a"] == client_end for c in shown), shown
            assert not any(c["both_ends_accelerated"] and client_end in (c["a"], c["b"]) for c in shown), shown
            # Nothing the pod sent was redirected.
            assert after["redirected_bytes"] == before["redirected_bytes"]
        finally:
            client.close()
            server.close()


def test_identical_loopback_tuples_in_two_namespaces_stay_apart(accel_env):
    with pods(2, subnet=215) as topo:
        a, b = topo.pods
        port, cport = 7777, 7778
        # The same 127.0.0.1:7778 -> 127.0.0.1:7777 connection, open at the same
        # time in two namespaces.
        ca, sa = connected_pair("127.0.0.1", server_ns=a.ns, client_ns=a.ns, port=port, client_bind=("127.0.0.1", cport))
        cb, sb = connected_pair("127.0.0.1", server_ns=b.ns, client_ns=b.ns, port=port, client_bind=("127.0.0.1", cport))
        assert ca.getsockname() == cb.getsockname() and ca.getpeername() == cb.getpeername()
        keys = [k for k in accel_env.sockets() if k[1:] == ("127.0.0.1", cport, "127.0.0.1", port)]
        assert len(keys) == 2 and keys[0][0] != keys[1][0] and all(k[0] for k in keys), keys
        before = accel_env.counters()
        data = {"a": (payload(10, 2_000_000), payload(11, 700_000)), "b": (payload(20, 2_000_000), payload(21, 700_000))}
        results = {}

        def run(name, client, server):
            results[name] = exchange(client, server, *data[name], 16384)

        threads = [threading.Thread(target=run, args=("a", ca, sa)), threading.Thread(target=run, args=("b", cb, sb))]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        for name in ("a", "b"):
            f_ab, f_ba = results[name]
            assert_intact(f_ab)  # digest equality: only its own namespace's bytes
            assert_intact(f_ba)
        after = accel_env.counters()
        total = sum(len(x) for pair in data.values() for x in pair)
        assert after["redirected_bytes"] - before["redirected_bytes"] == total
        for s in (ca, sa, cb, sb):
            s.close()
