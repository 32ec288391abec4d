"""`accel run`: the agent wires the datapath, the endpoint sources, the
node's TCP memory budget and the metrics endpoint; it starts them in order and, when a
signal says stop, shuts them down in reverse, the way invariant 7 requires
(detach the cgroup programs; keep the pins while sockets use them)."""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import Iterator
from typing import Any

from . import kernel
from . import log as logmod
from .budget import NodeBudget, default_budget
from .control import remove_pins
from .datapath import Attached, Datapath
from .endpoints.netlink import NetlinkEndpoints
from .endpoints.table import desired_policies, diff, merge
from .errors import SettingsError
from .maps import PinnedMaps
from .metrics import AgentView, MetricsServer
from .release import Releaser
from .settings import Settings
from .state import RunLock, write_state


class EndpointSync:
    """Keeps the pinned endpoint map equal to what the sources report."""

    def __init__(self, pin_dir: str, log: Any) -> None:
        self.pin_dir = pin_dir
        self.log = log

    def apply(self, desired: dict[str, tuple[int, int]]) -> tuple[int, int]:
        with PinnedMaps(self.pin_dir) as maps:
            current = {a: (v.policy, v.source) for a, v in maps.endpoints().items()}
            upserts, deletes = diff(current, desired)
            for addr, (policy, source) in upserts.items():
                try:
                    maps.set_endpoint(addr, policy, source)
                except OSError as exc:  # E2BIG: map full
                    self.log.error("endpoint not added", address=addr, error=exc.strerror)
            for addr in deletes:
                maps.delete_endpoint(addr)
        if upserts or deletes:
            self.log.info("endpoints updated", added_or_changed=len(upserts), removed=len(deletes), total=len(desired))
        return len(upserts), len(deletes)


class InsertWatch:
    """Logs sockets the datapath could not insert, by reason, as they happen
    (the kernel only counts them): a full map, a key already present, a
    refusal (kTLS), no memory for per-socket state. Each leaves both ends of
    that connection on plain TCP."""

    REASONS = {
        "insert_failed": "the socket map is full - raise --sockhash-size (after `accel down`)",
        "insert_exists": "the socket was already inserted by another accel instance on the same maps",
        "insert_error": "the kernel refused the socket (a ULP such as kTLS, or an unsupported state)",
        "insert_no_state": "no memory for per-socket state",
    }

    def __init__(self, pin_dir: str, log: Any) -> None:
        self.pin_dir = pin_dir
        self.log = log
        self.last: dict[str, int] | None = None

    def check(self) -> None:
        try:
            with PinnedMaps(self.pin_dir) as maps:
                stats = maps.stats()
        except OSError:
            return
        now = {k: stats[k] for k in self.REASONS}
        if self.last is not None:
            for reason, why in self.REASONS.items():
                grew = now[reason] - self.last[reason]
                if grew > 0:
                    self.log.warning("sockets left on plain TCP", reason=reason, sockets=grew, why=why)
        self.last = now


class _Wake:
    """A self-pipe: signal handlers and watcher threads wake the main loop."""

    def __init__(self) -> None:
        self.rfd, self.wfd = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)

    def __call__(self) -> None:
        with contextlib.suppress(BlockingIOError):
            os.write(self.wfd, b"x")

    def drain(self) -> None:
        with contextlib.suppress(BlockingIOError):
            while os.read(self.rfd, 512):
                pass

    def close(self) -> None:
        os.close(self.rfd)
        os.close(self.wfd)


class Agent:
    """One `accel run`. ``start()`` brings everything up to attached and
    ready, registering how to undo each step; ``serve()`` keeps the endpoint
    map in sync until ``request_stop()``; ``shutdown()`` undoes what started,
    last first, once."""

    def __init__(self, settings: Settings, log: Any) -> None:
        self.settings = settings
        self.log = log
        self.view = AgentView(kubernetes=settings.kubernetes)
        self.wake = _Wake()
        self.stopping: list[int] = []  # signals received
        self.attached: Attached | None = None
        self._undo = contextlib.ExitStack()
        self._undo.callback(self.wake.close)
        self.netlink = NetlinkEndpoints(log, all_namespaces=not settings.kubernetes)
        self.kube: Any = None
        self.metrics: MetricsServer | None = None
        self.sync = EndpointSync(settings.pin_dir, log)
        self.inserts = InsertWatch(settings.pin_dir, log)

    def request_stop(self, signum: int) -> None:
        self.stopping.append(signum)
        self.wake()

    # --- start -------------------------------------------------------------------

    def start(self) -> bool:
        """True once attached; False when a stop came first."""
        settings, undo = self.settings, self._undo
        lock = RunLock(settings)
        lock.acquire()
        undo.callback(lock.release)
        if settings.metrics_address:
            self.metrics = self._serve_metrics(settings.metrics_address)
            undo.callback(self.metrics.close)
        undo.callback(self.netlink.close)
        dp = Datapath(settings, self.log)
        undo.callback(self._stop_datapath, dp)
        self.attached = dp.start(before_attach=lambda: self._fill_endpoints(dp))
        if self.attached is None:
            return False
        self.view.cgroup = self.attached.cgroup
        write_state(
            settings,
            pid=os.getpid(),
            cgroup=self.attached.cgroup,
            sockops_id=self.attached.ids.get("accel_sockops"),
            redir_id=self.attached.ids.get("accel_redir"),
            programs=self.attached.ids,
            attached=True,
            started=time.time(),
            kernel=kernel.kernel_release(),
            headers=dp.headers.note if dp.headers else "",
            sockhash_size=dp.sizes.get("sock_hash"),
            endpoints_size=dp.sizes.get("endpoints"),
            metrics_port=self.metrics.port if self.metrics else None,
            kubernetes=settings.kubernetes,
            small_writes=_small_writes(settings),
        )
        if settings.release:
            releaser = Releaser(settings.pin_dir, dp.program_fd("accel_probe_queue"), self.log, settings.release_grace)
            releaser.start()  # stops before the datapath (its probe fd closes there)
            undo.callback(releaser.stop)
            self.view.release = releaser.figures
        budget = NodeBudget(settings.pin_dir, settings.node_tcp_budget or default_budget(), self.log)
        self.view.node_over = lambda: budget.over
        budget.start(settings.budget_interval)
        undo.callback(budget.stop)
        self.view.ready = True
        undo.callback(setattr, self.view, "ready", False)
        self.log.info(
            "accelerating",
            cgroup=self.attached.cgroup,
            programs=self.attached.ids,
            node_tcp_budget_mib=round(budget.budget / 2**20, 1),
            small_writes=_small_writes(settings),
        )
        self.inserts.check()
        return True

    def _serve_metrics(self, address: str) -> MetricsServer:
        try:
            metrics = MetricsServer(address, self.settings, self.view)
        except OSError as exc:
            raise SettingsError(f"serve metrics on {address}: {exc.strerror}", fix="pick another --metrics-address") from exc
        metrics.start()
        self.log.info("metrics listening", address=address, port=metrics.port)
        return metrics

    def _fill_endpoints(self, dp: Datapath) -> bool:
        """Between load and attach: the endpoint map must be complete first,
        or a connection judged on a half-empty map would stay on TCP for its
        lifetime. In Kubernetes mode that means the first pod list."""
        self.view.cgroup = dp.cgroup
        self.log.info("kernel ok", kernel=kernel.kernel_release(), cgroup=dp.cgroup)
        if self.settings.kubernetes:
            from .endpoints.kube import KubeEndpoints, make_api_client

            s = self.settings
            self.kube = KubeEndpoints(make_api_client(s.kubeconfig), s.node_name or "", self.log, notify=self.wake, watch_timeout=s.watch_timeout)
            self.view.watch_restarts = self.kube.restarts
            self.view.last_pod_event = lambda: self.kube.state.last_event
            self.kube.start()
            self._undo.callback(self.kube.close)
            waited = 0.0
            while not self.stopping and not self.kube.wait_ready(10):
                waited += 10
                self.log.warning("waiting for the first pod list from the API server", seconds=waited)
        if self.stopping:
            self.log.info("stopping before attach", signal=signal.Signals(self.stopping[0]).name)
            return False
        self.netlink.rescan()
        self.sync.apply(self._desired())
        return True

    def _desired(self) -> dict[str, tuple[int, int]]:
        return merge(desired_policies(self.netlink.addresses()), self.kube.state.policies() if self.kube else {})

    # --- serve ---------------------------------------------------------------------

    def serve(self) -> None:
        """Keep the endpoint map equal to what the sources say, until a stop."""
        interval = self.settings.rescan_interval
        next_scan = time.monotonic() + interval
        while not self.stopping:
            changed, woken = self.netlink.poll(max(0.0, next_scan - time.monotonic()), [self.wake.rfd])
            if woken:
                self.wake.drain()
                changed = True  # a watcher thread reported, or a signal came
            if time.monotonic() >= next_scan:
                changed = self.netlink.rescan() or changed
                self.inserts.check()
                next_scan = time.monotonic() + interval
            if changed and not self.stopping:
                self.sync.apply(self._desired())
        self.log.info("stopping", signal=signal.Signals(self.stopping[0]).name)

    # --- shutdown ------------------------------------------------------------------

    def shutdown(self) -> None:
        self._undo.close()

    def _stop_datapath(self, dp: Datapath) -> None:
        dp.stop()
        if self.attached is not None:
            write_state(self.settings, attached=False, pid=None, stopped=time.time())
        if PinnedMaps.exists(self.settings.pin_dir):
            _release_pins_if_idle(self.settings, self.log)


@contextlib.contextmanager
def _signals(on_signal: Any, wake_fd: int) -> Iterator[None]:
    """SIGINT and SIGTERM ask the agent to stop; the wake-up fd interrupts its wait."""
    old = {s: signal.signal(s, lambda signum, _frame: on_signal(signum)) for s in (signal.SIGINT, signal.SIGTERM)}
    signal.set_wakeup_fd(wake_fd, warn_on_full_buffer=False)
    try:
        yield
    finally:
        signal.set_wakeup_fd(-1)
        for s, h in old.items():
            signal.signal(s, h)


def run(settings: Settings) -> int:
    logmod.configure(settings.log_format)
    log = logmod.get("accel.agent", pin_dir=settings.pin_dir)
    kernel.require_root("accel run")
    agent = Agent(settings, log)
    with _signals(agent.request_stop, agent.wake.wfd):
        try:
            if agent.start():
                agent.serve()
        finally:
            agent.shutdown()
    return 0


def _release_pins_if_idle(settings: Settings, log: Any) -> None:
    try:
        remaining = remove_pins(settings, force=False)
    except Exception as exc:
        log.error("could not check the sockhash after stop", error=str(exc))
        return
    if remaining:
        log.info(
            "connections still accelerated; maps stay pinned so none of their bytes are lost",
            sockets=remaining,
            next_step="run `accel down` once they have closed",
        )
    else:
        log.info("sockhash empty; pins removed")


def _small_writes(settings: Settings) -> dict[str, Any]:
    """The small-write rule as this run built it: on or off, and its limits."""
    return {"rule": "on" if settings.small_write_fallback else "off", "local": settings.small_write_local, "remote": settings.small_write_remote}
