"""TCP Fast Open: data carried in the SYN travels by TCP before either socket
is ESTABLISHED. Redirected bytes sent later could overtake it, so such a
connection must stay off the fast path (KERNEL-NOTES: early data)."""

from __future__ import annotations

import socket

from accel.netns import entered
from accel.sandbox import create_netns, remove_netns, scratch

TCP_FASTOPEN = 23
MSG_FASTOPEN = 0x20000000


def test_fast_open_connection_is_not_inserted_and_stays_in_order(accel_env, tmp_path):
    ns = scratch("tfo", netns=True)
    create_netns(ns)
    try:
        with entered(ns):
            # Per-namespace sysctl: client and server TFO, no cookie needed.
            with open("/proc/sys/net/ipv4/tcp_fastopen", "w") as f:
                f.write(str(0x1 | 0x2 | 0x4 | 0x200))
            listener = socket.socket()
            listener.setsockopt(socket.IPPROTO_TCP, TCP_FASTOPEN, 16)
            listener.bind(("127.0.0.1", 0))
            listener.listen(4)
            client = socket.socket()
        before = accel_env.counters()
        first = b"in-the-syn:" + bytes(range(200))
        client.sendto(first, MSG_FASTOPEN, listener.getsockname())
        server, _ = listener.accept()
        server.settimeout(10)
        rest = bytes(range(256)) * 400
        client.sendall(rest)
        client.shutdown(socket.SHUT_WR)
        got = b""
        while True:
            chunk = server.recv(65536)
            if not chunk:
                break
            got += chunk
        server.sendall(b"ok")
        assert client.recv(10) == b"ok"
        after = accel_env.counters()
        assert got == first + rest
        delta = {k: after[k] - before[k] for k in after}
        assert delta["skipped_early_data"] >= 1, delta
        # Neither direction was redirected: the client never joined the map.
        assert delta["redirected_bytes"] == 0, delta
        client.close()
        server.close()
        listener.close()
    finally:
        remove_netns(ns)
