"""`accel run`: wire the datapath, the endpoint sources and the logs, until a
signal says stop; then stop the way invariant 7 requires."""

from __future__ import annotations

import contextlib
import os
import signal
import time
from typing import Any

from . import kernel
from . import log as logmod
from .datapath import Datapath, remove_pins
from .endpoints.netlink import NetlinkEndpoints
from .endpoints.table import desired_policies, diff
from .maps import SOURCE_NETLINK, PinnedMaps
from .settings import Settings
from .state import RunLock, write_state


class EndpointSync:
    """Keeps the pinned endpoint map equal to what the sources report."""

    def __init__(self, pin_dir: str, log: Any) -> None:
        self.pin_dir = pin_dir
        self.log = log

    def apply(self, desired: dict[str, int]) -> tuple[int, int]:
        with PinnedMaps(self.pin_dir) as maps:
            current = {a: v.policy for a, v in maps.endpoints().items()}
            upserts, deletes = diff(current, desired)
            for addr, policy in upserts.items():
                try:
                    maps.set_endpoint(addr, policy, SOURCE_NETLINK)
                except OSError as exc:  # E2BIG: map full
                    self.log.error("endpoint not added", address=addr, error=exc.strerror)
            for addr in deletes:
                maps.delete_endpoint(addr)
        if upserts or deletes:
            self.log.info("endpoints updated", added_or_changed=len(upserts), removed=len(deletes), total=len(desired))
        return len(upserts), len(deletes)


def run(settings: Settings) -> int:
    logmod.configure(settings.log_format)
    log = logmod.get("accel.agent", pin_dir=settings.pin_dir)
    kernel.require_root("accel run")
    lock = RunLock(settings)
    lock.acquire()
    dp = Datapath(settings, log)
    source = NetlinkEndpoints(log)
    attached = None
    rfd, wfd = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
    stop: list[int] = []

    def on_signal(signum: int, _frame: Any) -> None:
        stop.append(signum)

    old = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    signal.set_wakeup_fd(wfd, warn_on_full_buffer=False)
    try:
        dp.prepare()
        log.info("kernel ok", kernel=kernel.kernel_release(), cgroup=dp.cgroup)
        dp.load()
        # Endpoints before attach: the first connections are judged on a full map.
        sync = EndpointSync(settings.pin_dir, log)
        source.rescan()
        sync.apply(desired_policies(source.addresses()))
        attached = dp.attach()
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
        )
        log.info("accelerating", cgroup=attached.cgroup, sockops_id=attached.sockops_id, redir_id=attached.redir_id)
        next_scan = time.monotonic() + settings.rescan_interval
        while not stop:
            timeout = max(0.0, next_scan - time.monotonic())
            changed, _ = source.poll(timeout, [rfd])
            with contextlib.suppress(BlockingIOError):
                os.read(rfd, 64)
            if time.monotonic() >= next_scan:
                changed = source.rescan() or changed
                next_scan = time.monotonic() + settings.rescan_interval
            if changed:
                sync.apply(desired_policies(source.addresses()))
        log.info("stopping", signal=signal.Signals(stop[0]).name)
        return 0
    finally:
        dp.detach()
        dp.close()
        source.close()
        if attached is not None:
            write_state(settings, attached=False, pid=None, stopped=time.time())
        if PinnedMaps.exists(settings.pin_dir):
            _release_pins_if_idle(settings, log)
        signal.set_wakeup_fd(-1)
        for s, h in old.items():
            signal.signal(s, h)
        os.close(rfd)
        os.close(wfd)
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
