"""`accel run`: wire the datapath, the endpoint sources, metrics and logs,
until a signal says stop; then stop the way invariant 7 requires."""

from __future__ import annotations

import contextlib
import os
import signal
import time
from typing import Any

from . import kernel
from . import log as logmod
from .backlog import BacklogGuard, default_limit
from .datapath import Datapath, remove_pins
from .endpoints.netlink import NetlinkEndpoints
from .endpoints.table import desired_policies, diff, merge
from .maps import PinnedMaps
from .metrics import AgentView, MetricsServer
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


def run(settings: Settings) -> int:
    logmod.configure(settings.log_format)
    log = logmod.get("accel.agent", pin_dir=settings.pin_dir)
    kernel.require_root("accel run")
    lock = RunLock(settings)
    lock.acquire()
    dp = Datapath(settings, log)
    netlink = NetlinkEndpoints(log, all_namespaces=not settings.kubernetes)
    kube: Any = None
    metrics: MetricsServer | None = None
    view = AgentView(kubernetes=settings.kubernetes)
    attached = None
    guard: BacklogGuard | None = None
    wake = _Wake()
    stop: list[int] = []

    def on_signal(signum: int, _frame: Any) -> None:
        stop.append(signum)

    old = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    signal.set_wakeup_fd(wake.wfd, warn_on_full_buffer=False)
    try:
        if settings.metrics_address:
            try:
                metrics = MetricsServer(settings.metrics_address, settings, view)
            except OSError as exc:
                from .errors import SettingsError

                raise SettingsError(f"serve metrics on {settings.metrics_address}: {exc.strerror} - pick another --metrics-address") from exc
            metrics.start()
            log.info("metrics listening", address=settings.metrics_address, port=metrics.port)
        dp.prepare()
        view.cgroup = dp.cgroup
        log.info("kernel ok", kernel=kernel.kernel_release(), cgroup=dp.cgroup)
        dp.load()
        sync = EndpointSync(settings.pin_dir, log)
        if settings.kubernetes:
            from .endpoints.kube import KubeEndpoints, make_api_client

            kube = KubeEndpoints(make_api_client(settings.kubeconfig), settings.node_name or "", log, notify=wake, watch_timeout=settings.watch_timeout)
            view.watch_restarts = kube.restarts
            view.last_pod_event = lambda: kube.state.last_event
            kube.start()
            # Attach only once the first lists are applied: a connection judged
            # on a half-empty endpoint map would stay on TCP for its lifetime.
            waited = 0.0
            while not stop and not kube.wait_ready(10):
                waited += 10
                log.warning("waiting for the first pod list from the API server", seconds=waited)
        if stop:
            log.info("stopping before attach", signal=signal.Signals(stop[0]).name)
            return 0

        def current() -> dict[str, tuple[int, int]]:
            return merge(desired_policies(netlink.addresses()), kube.state.policies() if kube else {})

        netlink.rescan()
        sync.apply(current())
        attached = dp.attach()
        view.ready = True
        write_state(
            settings,
            pid=os.getpid(),
            cgroup=attached.cgroup,
            sockops_id=attached.sockops_id,
            redir_id=attached.redir_id,
            attached=True,
            started=time.time(),
            kernel=kernel.kernel_release(),
            headers=dp.headers.note if dp.headers else "",
            sockhash_size=dp.sizes.get("sock_hash"),
            endpoints_size=dp.sizes.get("endpoints"),
            metrics_port=metrics.port if metrics else None,
            kubernetes=settings.kubernetes,
        )
        guard = BacklogGuard(settings.pin_dir, settings.backlog_limit or default_limit(), log)
        view.backlog_guarded = lambda: guard.listed
        log.info(
            "accelerating", cgroup=attached.cgroup, sockops_id=attached.sockops_id, redir_id=attached.redir_id, backlog_limit_mib=round(guard.limit / 2**20, 1)
        )
        guard.start(settings.backlog_interval)
        inserts = InsertWatch(settings.pin_dir, log)
        inserts.check()
        next_scan = time.monotonic() + settings.rescan_interval
        while not stop:
            timeout = max(0.0, next_scan - time.monotonic())
            changed, woken = netlink.poll(timeout, [wake.rfd])
            if woken:
                wake.drain()
                changed = True  # a watcher thread reported, or a signal came
            if time.monotonic() >= next_scan:
                changed = netlink.rescan() or changed
                inserts.check()
                next_scan = time.monotonic() + settings.rescan_interval
            if changed and not stop:
                sync.apply(current())
        log.info("stopping", signal=signal.Signals(stop[0]).name)
        return 0
    finally:
        view.ready = False
        if guard is not None:
            guard.stop()
        if kube is not None:
            kube.close()
        dp.detach()
        dp.close()
        netlink.close()
        if attached is not None:
            write_state(settings, attached=False, pid=None, stopped=time.time())
        if PinnedMaps.exists(settings.pin_dir):
            _release_pins_if_idle(settings, log)
        if metrics is not None:
            metrics.close()
        signal.set_wakeup_fd(-1)
        for s, h in old.items():
            signal.signal(s, h)
        wake.close()
        lock.release()


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
