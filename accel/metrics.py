"""Prometheus metrics and health endpoints (prometheus-client), read from the
pinned maps at scrape time so the numbers are the kernel's.

/metrics  every datapath counter, sockets in the map, endpoints by source,
          attached or not, watch restarts, age of the last pod event
/healthz  200 while the process is alive and the programs are attached
/readyz   200 once the first pod list has been applied (standalone: at attach)
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import CollectorRegistry, make_wsgi_app
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from .abi import FALLBACK_MSG_FIELDS, POLICY_NAMES, SOURCE_KUBERNETES, SOURCE_NETLINK, STAT_FIELDS
from .control import attached
from .kernel import tcp_memory_bytes
from .maps import PinnedMaps
from .settings import Settings

# Reason labels come from the counters themselves (bpf/accel.h via maps.py),
# so a new counter gets its label without a second list to keep in step.
SKIP_REASONS = tuple(f.removeprefix("skipped_") for f in STAT_FIELDS if f.startswith("skipped_"))
FALLBACK_REASONS = tuple(f.removeprefix("fallback_") for f in FALLBACK_MSG_FIELDS)
INSERT_FAILURE_REASONS = {"full": "insert_failed", "exists": "insert_exists", "error": "insert_error", "no_state": "insert_no_state"}


@dataclass
class AgentView:
    """What the agent tells the metrics endpoint (updated from its loop)."""

    cgroup: str | None = None
    ready: bool = False
    watch_restarts: Callable[[], int] = lambda: 0
    last_pod_event: Callable[[], float] = lambda: 0.0
    node_over: Callable[[], bool] = lambda: False
    release: Callable[[], dict[str, Any] | None] = lambda: None
    kubernetes: bool = False
    extra: dict[str, Any] = field(default_factory=dict)


class DatapathCollector(Collector):
    def __init__(self, settings: Settings, view: AgentView) -> None:
        self.settings = settings
        self.view = view

    def collect(self) -> Iterator[Any]:
        attached = GaugeMetricFamily("accel_attached", "1 when the sockops program of this instance is attached to its cgroup")
        attached.add_metric([], 1.0 if self._attached() else 0.0)
        yield attached
        restarts = CounterMetricFamily("accel_watch_restarts", "Kubernetes watch reconnects and relists")
        restarts.add_metric([], float(self.view.watch_restarts()))
        yield restarts
        if self.view.kubernetes:
            age = GaugeMetricFamily("accel_last_pod_event_age_seconds", "Seconds since the last pod or namespace event (or list)")
            last = self.view.last_pod_event()
            age.add_metric([], time.time() - last if last else float("nan"))
            yield age
        if not PinnedMaps.exists(self.settings.pin_dir):
            return
        with PinnedMaps(self.settings.pin_dir) as maps:
            stats = maps.stats()
            sockets = maps.socket_count()
            endpoints = maps.endpoints()
        yield from self._counters(stats)
        g = GaugeMetricFamily("accel_sockets", "Sockets in the fast path (two per local connection)")
        g.add_metric([], float(sockets))
        yield g
        eps = GaugeMetricFamily("accel_endpoints", "Local endpoint addresses by source and policy", labels=["source", "policy"])
        counts: dict[tuple[str, str], int] = {}
        for v in endpoints.values():
            for bit, name in ((SOURCE_NETLINK, "netlink"), (SOURCE_KUBERNETES, "kubernetes")):
                if v.source & bit:
                    key = (name, POLICY_NAMES.get(v.policy, str(v.policy)))
                    counts[key] = counts.get(key, 0) + 1
        for (source, policy), n in sorted(counts.items()):
            eps.add_metric([source, policy], float(n))
        yield eps
        yield GaugeMetricFamily(
            "accel_node_over_budget",
            "1 while node TCP memory is over its budget (senders to receivers holding data wait on TCP)",
            value=float(self.view.node_over()),
        )
        yield GaugeMetricFamily("accel_node_tcp_memory_bytes", "TCP memory in use on the node (/proc/net/sockstat)", value=tcp_memory_bytes())
        figures = self.view.release()
        if figures is not None:
            yield from self._release(figures)

    @staticmethod
    def _release(f: dict[str, Any]) -> Iterable[Any]:
        events = CounterMetricFamily("accel_release_events", "Sockets the datapath reported moved to TCP for good, by reason", labels=["reason"])
        for reason, n in sorted(f["events"].items()):
            events.add_metric([reason], float(n))
        yield events
        released = CounterMetricFamily("accel_released_sockets", "Sockets taken out of the fast path by release, by reason", labels=["reason"])
        for reason, n in sorted(f["released"].items()):
            released.add_metric([reason], float(n))
        yield released
        kept = CounterMetricFamily("accel_release_kept_sockets", "Sockets release left in the map: their queue could not be read")
        kept.add_metric([], float(f["kept"]))
        yield kept
        yield GaugeMetricFamily("accel_releases_pending", "Connections marked retiring (grace period, or a reader to drain)", value=float(f["pending"]))
        for name, metric, doc in (
            ("notify_delay_s", "accel_release_notify_delay_seconds", "Seconds from the datapath's event to the controller reading it"),
            ("release_latency_s", "accel_release_latency_seconds", "Seconds from the datapath's event to both ends released"),
        ):
            g = GaugeMetricFamily(metric, doc + " (median and max of the last 1024)", labels=["stat"])
            for stat in ("p50", "max"):
                if stat in f[name]:
                    g.add_metric([stat], float(f[name][stat]))
            yield g

    def _attached(self) -> bool:
        try:
            progs = attached(self.settings.pin_dir, self.view.cgroup)
        except OSError:
            return False
        return bool(progs) and all(progs.values())

    @staticmethod
    def _counters(stats: dict[str, int]) -> Iterable[Any]:
        def counter(name: str, doc: str, value: int) -> CounterMetricFamily:
            c = CounterMetricFamily(name, doc)
            c.add_metric([], float(value))
            return c

        def by_reason(name: str, doc: str, prefix: str, reasons: Iterable[str]) -> CounterMetricFamily:
            c = CounterMetricFamily(name, doc, labels=["reason"])
            for r in reasons:
                c.add_metric([r], float(stats[prefix + r]))
            return c

        yield counter("accel_established", "ESTABLISHED callbacks seen by sockops", stats["established"])
        yield counter("accel_inserted_sockets", "Sockets put into the fast path", stats["inserted"])
        failures = CounterMetricFamily("accel_insert_failures", "Sockets that could not be inserted, left on TCP, by reason", labels=["reason"])
        for reason, name in INSERT_FAILURE_REASONS.items():
            failures.add_metric([reason], float(stats[name]))
        yield failures
        yield by_reason("accel_skipped_sockets", "Sockets left on TCP at ESTABLISHED, by reason", "skipped_", SKIP_REASONS)
        yield counter("accel_redirected_messages", "sendmsg() calls redirected to the peer socket", stats["redirected_msgs"])
        yield counter("accel_redirected_bytes", "Bytes redirected to the peer socket", stats["redirected_bytes"])
        yield by_reason("accel_fallback_messages", "Messages sent through TCP by a fast-path socket, by reason", "fallback_", FALLBACK_REASONS)
        yield counter("accel_flow_waits", "Moves of a sender to TCP because its receiver held more than TCP would let it", stats["moved_wait"])
        yield counter("accel_flow_returns", "Moves of a waiting sender back to the fast path (order-safe)", stats["returned"])
        w = CounterMetricFamily("accel_flow_wait_seconds", "Time senders that returned spent waiting on TCP")
        w.add_metric([], stats["wait_ns"] / 1e9)
        yield w
        yield counter("accel_fallback_bytes", "Bytes of fallback messages", stats["fallback_bytes"])
        yield counter("accel_events_lost", "Datapath events the ring buffer had no room for (those connections stay in the map)", stats["events_lost"])


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, *args: Any) -> None:
        pass


class MetricsServer:
    """HTTP server in a daemon thread."""

    def __init__(self, address: str, settings: Settings, view: AgentView) -> None:
        host, _, port = address.rpartition(":")
        self.view = view
        self.collector = DatapathCollector(settings, view)
        registry = CollectorRegistry()
        registry.register(self.collector)
        metrics_app = make_wsgi_app(registry)

        def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
            path = environ.get("PATH_INFO", "")
            if path == "/healthz":
                ok = self.collector._attached()
                return _plain(start_response, ok, "ok" if ok else "programs not attached")
            if path == "/readyz":
                ok = self.view.ready
                return _plain(start_response, ok, "ready" if ok else "not ready: first pod list not applied")
            return metrics_app(environ, start_response)

        self.server: WSGIServer = make_server(host.strip("[]") or "0.0.0.0", int(port), app, handler_class=_QuietHandler)
        self.thread = threading.Thread(target=self.server.serve_forever, name="metrics", daemon=True)

    @property
    def port(self) -> int:
        return int(self.server.server_address[1])

    def start(self) -> None:
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def _plain(start_response: Callable[..., Any], ok: bool, text: str) -> list[bytes]:
    start_response("200 OK" if ok else "503 Service Unavailable", [("Content-Type", "text/plain")])
    return [text.encode() + b"\n"]
