"""Release: a connection whose sockets moved to TCP for good leaves the
sockhash, both ends, once no byte can be lost; its sockets are then plain
TCP sockets and cost what TCP costs (the sockmap send and receive paths
are gone with their psock).

The datapath says at once when a socket moves to TCP for good (an event on
the ring buffer, bpf/redir.c tcp_for_good); this worker then, for the
connection's two keys (the socket's and its peer's):

1. marks both retiring (the retiring map; flow_config.retiring counts them).
   The peer's sk_msg sees the mark at its next message and moves to TCP for
   good too (order-safe: its redirected bytes are read before its TCP ones);
   the socket that moved redirects nothing any more;
2. waits a grace period: a redirect whose verdict ran just before the mark
   (a second thread sending on the same socket, or the one that is between
   its verdict and the receiver's queue) has landed by then. After it,
   nothing is redirected into either socket, so their queues only shrink;
3. deletes each key from the sockhash once that socket's queue of
   redirected bytes is empty (read by the probe program, bpf/probe.c): the
   kernel drops a psock's queue with the psock, so a socket whose
   application has not read them stays until it has. A key whose queue
   cannot be read stays for good ("when in doubt, stay");
4. removes the marks.

The marks are pinned: a controller killed mid-release leaves them in place
(the peer keeps moving to TCP, the safe direction) and the next one resumes
every marked connection with a fresh grace period. Events wait in the
pinned ring buffer while no controller runs.
"""

from __future__ import annotations

import contextlib
import ctypes
import statistics
import threading
import time
from collections import Counter, deque
from dataclasses import dataclass, field
from typing import Any

from . import libbpf
from .abi import PROBE_NO_PSOCK, PROBE_UNKNOWN, REASON_NAMES, AccelEvent, SockEntry, SockKey, mirror
from .maps import PinnedMaps

GRACE_S = 1.0  # covers a redirect in flight: its verdict ran before the mark
RECHECK_S = 0.05  # first look at a queue that still holds bytes ...
RECHECK_MAX_S = 2.0  # ... then less often, up to this
POLL_MS = 200  # the longest wait for an event when nothing is due
ETH_HLEN = 14
HISTORY = 1024  # delays and latencies kept for the metrics


@dataclass
class _Release:
    keys: list[SockKey]  # the socket that moved to TCP, then its peer
    reason: int
    event_ns: int  # when the datapath reported it (CLOCK_MONOTONIC, as bpf_ktime_get_ns)
    due: float
    backoff: float = RECHECK_S
    left: set[int] = field(default_factory=lambda: {0, 1})  # indexes of keys not handled yet
    released: int = 0
    kept: int = 0
    queued_seen: int = 0  # largest queue found on a socket it waited for

    def ids(self) -> tuple[bytes, bytes]:
        return bytes(self.keys[0]), bytes(self.keys[1])


class Releaser:
    """The release worker of one `accel run`: a thread that reads the
    datapath's events and releases connections. ``start()``, ``stop()``."""

    def __init__(self, pin_dir: str, probe_fd: int, log: Any, grace: float = GRACE_S) -> None:
        self.pin_dir = pin_dir
        self.probe_fd = probe_fd
        self.log = log
        self.grace = grace
        self._pending: dict[bytes, _Release] = {}  # by either key's bytes
        self._incoming: list[AccelEvent] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._maps: PinnedMaps | None = None
        self._rb: libbpf.RingBuffer | None = None
        self._lock = threading.Lock()  # guards the figures below (the metrics thread reads them)
        self.events = Counter[str]()  # by reason
        self.released = Counter[str]()  # sockets, by reason
        self.kept = 0  # sockets left in the map: their queue could not be read
        self.notify_delays: deque[float] = deque(maxlen=HISTORY)  # seconds, event to controller
        self.latencies: deque[float] = deque(maxlen=HISTORY)  # seconds, event to both ends handled

    # --- lifecycle ---------------------------------------------------------------

    def start(self) -> None:
        self._maps = PinnedMaps(self.pin_dir).__enter__()
        try:
            self._rb = libbpf.RingBuffer(self._maps.events_fd(), self._on_record)
            self._resume()
        except BaseException:
            self._close()
            raise
        self._thread = threading.Thread(target=self._loop, name="release", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop between steps: pending releases keep their marks (the next
        controller resumes them)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(10)
        self._close()

    def _close(self) -> None:
        if self._rb is not None:
            self._rb.close()
            self._rb = None
        if self._maps is not None:
            self._maps.close()
            self._maps = None

    @property
    def pending(self) -> int:
        with self._lock:
            return len({id(r) for r in self._pending.values()})

    def figures(self) -> dict[str, Any]:
        """For the metrics and logs."""
        with self._lock:
            delays, lat = list(self.notify_delays), list(self.latencies)
            return {
                "events": dict(self.events),
                "released": dict(self.released),
                "kept": self.kept,
                "pending": len({id(r) for r in self._pending.values()}),
                "notify_delay_s": _summary(delays),
                "release_latency_s": _summary(lat),
            }

    # --- the worker ----------------------------------------------------------------

    def _loop(self) -> None:
        assert self._rb is not None
        while not self._stop.is_set():
            try:
                self._rb.poll(self._wait_ms())
                self._take_events()
                self._advance(time.monotonic())
            except Exception as exc:  # keep releasing; say why this round failed
                self.log.warning("release round failed; retrying", error=f"{type(exc).__name__}: {exc}"[:300])
                self._stop.wait(1.0)

    def _wait_ms(self) -> int:
        with self._lock:
            dues = [r.due for r in self._pending.values()]
        if not dues:
            return POLL_MS
        return max(0, min(POLL_MS, int((min(dues) - time.monotonic()) * 1000) + 1))

    def _on_record(self, data: bytes) -> None:
        if len(data) >= ctypes.sizeof(AccelEvent):
            ev = AccelEvent.from_buffer_copy(data)
            delay = (time.monotonic_ns() - ev.ns) / 1e9
            with self._lock:
                self.notify_delays.append(max(0.0, delay))
            self._incoming.append(ev)

    def _take_events(self) -> None:
        events, self._incoming = self._incoming, []
        for ev in events:
            key = SockKey.from_buffer_copy(bytes(ev.key))
            with self._lock:
                self.events[REASON_NAMES.get(ev.reason, str(ev.reason))] += 1
            self._begin(key, ev.reason, ev.ns)

    def _begin(self, key: SockKey, reason: int, event_ns: int) -> None:
        """Mark a connection retiring (both keys) and start its grace period."""
        assert self._maps is not None
        peer = mirror(key)
        with self._lock:
            if bytes(key) in self._pending or bytes(peer) in self._pending:
                return  # already on its way out (the peer's own move, marked by us)
        self._maps.mark_retiring([key, peer], reason)
        rel = _Release([key, peer], reason, event_ns, due=time.monotonic() + self.grace)
        with self._lock:
            for k in rel.ids():
                self._pending[k] = rel

    def _resume(self) -> None:
        """Connections a previous controller marked and did not finish: each
        starts over with a fresh grace period."""
        assert self._maps is not None
        keys = self._maps.retiring_keys()
        seen: set[bytes] = set()
        now = time.monotonic_ns()
        for key in keys:
            if bytes(key) in seen:
                continue
            peer = mirror(key)
            seen |= {bytes(key), bytes(peer)}
            self._begin(key, 0, now)
        self._maps.set_flow_config(retiring=len(self._maps.retiring_keys()))
        if keys:
            self.log.info("resuming releases a previous controller began", connections=self.pending)

    def _advance(self, now: float) -> None:
        """Every release whose time has come takes its next step."""
        assert self._maps is not None
        with self._lock:
            due = {id(r): r for r in self._pending.values() if r.due <= now}.values()
        for rel in due:
            for i in sorted(rel.left):
                self._step(rel, i)
            if rel.left:
                rel.due = now + rel.backoff
                rel.backoff = min(rel.backoff * 2, RECHECK_MAX_S)
                continue
            self._maps.unmark_retiring(rel.keys)
            latency = max(0.0, (time.monotonic_ns() - rel.event_ns) / 1e9)
            reason = REASON_NAMES.get(rel.reason, "resumed")
            with self._lock:
                for k in rel.ids():
                    self._pending.pop(k, None)
                self.latencies.append(latency)
                self.released[reason] += rel.released
                self.kept += rel.kept
            if rel.released or rel.kept:
                self.log.info(
                    "connection released from the fast path",
                    conn=_describe(rel.keys[0]),
                    reason=reason,
                    sockets_released=rel.released,
                    sockets_kept=rel.kept,
                    waited_for_reader_bytes=rel.queued_seen,
                    seconds=round(latency, 3),
                )

    def _step(self, rel: _Release, i: int) -> None:
        """Release one key if its socket's queue is empty; it is handled when
        released, gone (closed, or never in the map) or kept."""
        assert self._maps is not None
        key = rel.keys[i]
        if not self._maps.has_socket(key):
            rel.left.discard(i)
            return
        queued = self.queued(key)
        if queued == 0:
            if self._maps.delete_socket(key):
                rel.released += 1
            rel.left.discard(i)
        elif queued == PROBE_UNKNOWN:
            rel.kept += 1  # no address recorded (an old socket, or evicted): its queue is unknown
            rel.left.discard(i)
        elif queued != PROBE_NO_PSOCK:  # (no psock: it left the map meanwhile; look again)
            rel.queued_seen = max(rel.queued_seen, queued)

    def queued(self, key: SockKey) -> int:
        """The probe's answer for a key: bytes, PROBE_UNKNOWN or PROBE_NO_PSOCK."""
        # A test run of a socket filter sees the packet after its Ethernet header.
        return libbpf.prog_test_run(self.probe_fd, bytes(ETH_HLEN) + bytes(key)) & 0xFFFFFFFF


def _describe(key: SockKey) -> str:
    e = SockEntry.from_key(key)
    return f"{e.local}:{e.local_port} -> {e.remote}:{e.remote_port}"


def _summary(values: list[float]) -> dict[str, float]:
    if not values:
        return {"count": 0}
    return {"count": len(values), "p50": statistics.median(values), "max": max(values)}


@contextlib.contextmanager
def running(pin_dir: str, probe_fd: int, log: Any, grace: float = GRACE_S) -> Any:
    releaser = Releaser(pin_dir, probe_fd, log, grace)
    releaser.start()
    try:
        yield releaser
    finally:
        releaser.stop()
