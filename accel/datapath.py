"""The datapath's lifecycle, in one object: compile (bcc), pin, attach,
detach, tear down. It detaches what it attached, and finds and replaces the
attachments a crashed run left behind.

Order matters (DESIGN.md):
- invariant 6: the sk_msg program is attached to the sockhash before sockops
  is attached to the cgroup, or early sockets would never run it;
- invariant 7: stopping only detaches sockops; the pinned maps and the sk_msg
  attachment stay, so accelerated connections finish untouched and a new
  controller reuses the same sockhash. Pins go only when the map is empty, or
  on an explicit force (which purges unread redirected bytes).
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from typing import Any

from . import kernel, libbpf
from .errors import AttachError, BpffsError, CompileError, NotRunningError, SettingsError, VerifierError
from .maps import PinnedMaps, layout_mismatches
from .settings import Settings
from .stderr_capture import capture_fd2

# bpf/ beside the package in a checkout; ACCEL_BPF_DIR where it is installed
# elsewhere (the container image).
BPF_DIR = os.environ.get("ACCEL_BPF_DIR") or os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "bpf")
SOCKOPS_PROG = "accel_sockops"
REDIR_PROG = "accel_redir"


def bpf_sources() -> dict[str, str]:
    return {name: os.path.join(BPF_DIR, name) for name in ("accel.h", "maps.h", "sockops.c", "redir.c")}


@dataclass
class Attached:
    cgroup: str
    sockops_id: int
    redir_id: int


class Datapath:
    """One instance's programs and maps. ``start()`` then ``stop()``."""

    def __init__(self, settings: Settings, log: Any) -> None:
        self.settings = settings
        self.log = log
        self.cgroup: str | None = None
        self.headers: kernel.Headers | None = None
        self._modules: list[Any] = []
        self._sockops_fd: int | None = None
        self._redir_fd: int | None = None
        self._sockhash_fd: int | None = None
        self._cgroup_fd: int | None = None
        self.sizes: dict[str, int] = {}

    # --- steps -------------------------------------------------------------

    def prepare(self) -> None:
        """Check everything we need before touching the kernel's state."""
        kernel.require_root("start the datapath")
        kernel.require_features()
        fixed, why = kernel.sockmap_fixes(kernel.upstream_version())
        if not fixed:
            self.log.warning("this kernel may lack the sockmap data-loss fixes", detail=why)
        self.cgroup = kernel.resolve_cgroup(self.settings.cgroup, mount_if_missing=True)
        kernel.ensure_bpffs(self.settings.pin_dir)
        self.headers = kernel.find_headers()
        if self.headers.kind == "distribution":
            self.log.warning("kernel headers", note=self.headers.note, path=self.headers.path)
        else:
            self.log.info("kernel headers", note=self.headers.note)

    def load(self) -> None:
        """Compile and load both programs; bcc opens the pins or creates them."""
        assert self.headers is not None, "prepare() first"
        if self.headers.kind == "distribution":
            os.environ["BCC_KERNEL_SOURCE"] = self.headers.path
        self._make_pin_dir()
        self._replace_outdated_pins()
        self.sizes = self._pinned_sizes()
        cflags = [
            f"-I{BPF_DIR}",
            f'-DACCEL_PIN_DIR="{self.settings.pin_dir}"',
            f"-DACCEL_SOCKHASH_SIZE={self.sizes['sock_hash']}",
            f"-DACCEL_ENDPOINTS_SIZE={self.sizes['endpoints']}",
            *([] if self.settings.small_write_fallback else ["-DACCEL_NO_SMALL_WRITES"]),
            *self.settings.extra_cflags,
        ]
        self._sockops_fd = self._compile_and_load("sockops.c", SOCKOPS_PROG, "SOCK_OPS", cflags)
        self._redir_fd = self._compile_and_load("redir.c", REDIR_PROG, "SK_MSG", cflags)
        self._sockhash_fd = libbpf.obj_get(os.path.join(self.settings.pin_dir, "sock_hash"))
        os.chmod(self.settings.pin_dir, 0o700)

    def attach(self) -> Attached:
        """sk_msg on the sockhash first, then sockops on the cgroup."""
        assert self._sockops_fd is not None and self._redir_fd is not None and self._sockhash_fd is not None
        assert self.cgroup is not None
        try:
            libbpf.prog_attach(self._redir_fd, self._sockhash_fd, libbpf.ATTACH_SK_MSG_VERDICT)
        except OSError as exc:
            raise AttachError(f"attach sk_msg to the sockhash: {exc.strerror}") from exc
        try:
            self._cgroup_fd = os.open(self.cgroup, os.O_RDONLY | os.O_DIRECTORY)
        except OSError as exc:
            raise AttachError(f"open cgroup {self.cgroup}: {exc.strerror}") from exc
        stale = our_sockops(self._cgroup_fd, self._sockhash_fd)
        try:
            # ALLOW_MULTI: coexist with other programs on the cgroup (systemd
            # and other agents attach to the root cgroup too).
            libbpf.prog_attach(self._sockops_fd, self._cgroup_fd, libbpf.ATTACH_CGROUP_SOCK_OPS, libbpf.F_ALLOW_MULTI)
        except OSError as exc:
            raise AttachError(f"attach sockops to {self.cgroup}: {exc.strerror} - another program may hold this cgroup exclusively") from exc
        # A crashed run's sockops is still attached: replace it (ours first, so
        # no connection is missed in between).
        for prog_id in stale:
            detach_sockops_id(self._cgroup_fd, prog_id)
            self.log.warning("replaced stale sockops from an earlier run", prog_id=prog_id, cgroup=self.cgroup)
        sockops_id = libbpf.prog_info(self._sockops_fd)[0]
        redir_id = libbpf.prog_info(self._redir_fd)[0]
        return Attached(self.cgroup, sockops_id, redir_id)

    def detach(self) -> None:
        """Stop accelerating NEW connections; existing ones keep their path."""
        if self._cgroup_fd is None or self._sockops_fd is None:
            return
        try:
            libbpf.prog_detach(self._sockops_fd, self._cgroup_fd, libbpf.ATTACH_CGROUP_SOCK_OPS)
        except OSError as exc:
            self.log.error("detach sockops failed", cgroup=self.cgroup, error=exc.strerror)
        os.close(self._cgroup_fd)
        self._cgroup_fd = None

    def close(self) -> None:
        """Drop our fds and bcc modules (pins and attachments persist)."""
        for fd in (self._sockops_fd, self._redir_fd, self._sockhash_fd):
            if fd is not None:
                with contextlib.suppress(OSError):
                    os.close(fd)
        self._sockops_fd = self._redir_fd = self._sockhash_fd = None
        for mod in self._modules:
            with contextlib.suppress(Exception):
                mod.cleanup()
        self._modules.clear()

    # --- helpers -----------------------------------------------------------

    def _make_pin_dir(self) -> None:
        try:
            os.makedirs(self.settings.pin_dir, mode=0o700, exist_ok=True)
        except OSError as exc:
            raise BpffsError(f"create pin directory {self.settings.pin_dir}: {exc.strerror}") from exc
        os.chmod(self.settings.pin_dir, 0o700)

    def _replace_outdated_pins(self) -> None:
        """An upgrade that changed a map's layout: unpin the old map so that
        this version creates its own. Programs that use the old map keep it
        alive (a socket keeps the sk_msg program it was inserted with), so
        connections accelerated before the upgrade run on untouched. A socket
        map that still holds sockets is not unpinned but set aside (renamed
        ``retired-sock_hash-<id>``): it stays visible to status and down,
        which remove it once its last socket has closed."""
        for m in layout_mismatches(self.settings.pin_dir):
            path = os.path.join(self.settings.pin_dir, m.name)
            if m.name == "sock_hash":
                if self.cgroup is not None:  # an older run's sockops feed it: no new sockets join
                    detach_all_sockops(self.settings, self.cgroup)
                live = _sockhash_count(path)
                if live:
                    retired = os.path.join(self.settings.pin_dir, f"{RETIRED_PREFIX}{_map_id(path)}")
                    os.rename(path, retired)
                    self.log.warning(
                        "the socket map of another accel version still holds sockets; it is kept aside until they close",
                        change=m.describe(),
                        sockets=live,
                        kept_as=retired,
                        note="those connections run on with the programs they joined with; new ones use this version's map",
                    )
                    continue
            os.unlink(path)
            self.log.warning(
                "replaced a pinned map made by another accel version",
                change=m.describe(),
                note="its counters restart from zero" if m.name == "stats" else "connections accelerated before keep the old one",
            )
        drop_empty_retired(self.settings.pin_dir)

    def _pinned_sizes(self) -> dict[str, int]:
        wanted = {"sock_hash": self.settings.sockhash_size, "endpoints": self.settings.endpoints_size}
        if not PinnedMaps.exists(self.settings.pin_dir):
            return wanted
        with PinnedMaps(self.settings.pin_dir) as maps:
            pinned = maps.map_sizes()
        for name, size in wanted.items():
            if pinned[name] != size:
                self.log.warning(
                    "pinned map keeps its size; run `accel down` when idle to change it",
                    map=name,
                    pinned=pinned[name],
                    requested=size,
                )
        return {"sock_hash": pinned["sock_hash"], "endpoints": pinned["endpoints"]}

    def _compile_and_load(self, source: str, func: str, prog_type: str, cflags: list[str]) -> int:
        from bcc import BPF  # bcc is imported here only: doctor and status work without it

        path = os.path.join(BPF_DIR, source)
        with capture_fd2() as compiled:
            try:
                module = BPF(src_file=path.encode(), cflags=cflags)
            except Exception:
                module = None
        if module is None:
            raise CompileError(f"compile {path} with bcc failed - check the kernel headers ({self.headers.note if self.headers else '?'})\n{compiled.tail()}")
        self._modules.append(module)
        with capture_fd2() as loaded:
            try:
                fn = module.load_func(func.encode(), getattr(BPF, prog_type))
            except Exception as exc:
                fn = None
                error = str(exc)
        if fn is None:
            raise VerifierError(f"load {func} from {source}: the kernel rejected it ({error})", loaded.tail())
        # Our own fd on the program, independent of bcc's bookkeeping.
        prog_id = libbpf.prog_info(fn.fd)[0]
        return libbpf.prog_fd_by_id(prog_id)


# --- functions that work from pins alone (status, down) ---------------------


def our_sockops(cgroup_fd: int, sockhash_fd: int) -> list[int]:
    """Ids of accel sockops programs on a cgroup that feed THIS sockhash."""
    want = int(libbpf.map_info(sockhash_fd)["id"])
    found = []
    try:
        ids = libbpf.prog_query(cgroup_fd, libbpf.ATTACH_CGROUP_SOCK_OPS)
    except OSError:
        return []
    for prog_id in ids:
        try:
            fd = libbpf.prog_fd_by_id(prog_id)
        except OSError:
            continue
        try:
            _, name = libbpf.prog_info(fd)
            if name == SOCKOPS_PROG and want in libbpf.prog_map_ids(fd):
                found.append(prog_id)
        finally:
            os.close(fd)
    return found


def detach_sockops_id(cgroup_fd: int, prog_id: int) -> None:
    fd = libbpf.prog_fd_by_id(prog_id)
    try:
        libbpf.prog_detach(fd, cgroup_fd, libbpf.ATTACH_CGROUP_SOCK_OPS)
    finally:
        os.close(fd)


def sockops_attached(settings: Settings, cgroup: str | None) -> list[int]:
    """Our sockops program ids attached to ``cgroup`` (from another process)."""
    if not cgroup or not PinnedMaps.exists(settings.pin_dir):
        return []
    try:
        cg_fd = os.open(cgroup, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        return []
    try:
        sh_fd = libbpf.obj_get(os.path.join(settings.pin_dir, "sock_hash"))
    except OSError:
        os.close(cg_fd)
        return []
    try:
        return our_sockops(cg_fd, sh_fd)
    finally:
        os.close(sh_fd)
        os.close(cg_fd)


def detach_all_sockops(settings: Settings, cgroup: str) -> list[int]:
    """Detach every sockops program feeding this instance's sockhash from ``cgroup``."""
    ids = sockops_attached(settings, cgroup)
    if not ids:
        return []
    cg_fd = os.open(cgroup, os.O_RDONLY | os.O_DIRECTORY)
    try:
        for prog_id in ids:
            detach_sockops_id(cg_fd, prog_id)
    finally:
        os.close(cg_fd)
    return ids


def _sockhash_count(path: str) -> int:
    fd = libbpf.obj_get(path)
    try:
        return libbpf.map_count(fd)
    finally:
        os.close(fd)


def _map_id(path: str) -> int:
    fd = libbpf.obj_get(path)
    try:
        return int(libbpf.map_info(fd)["id"])
    finally:
        os.close(fd)


# Socket maps of an older layout that still held sockets at an upgrade.
RETIRED_PREFIX = "retired-sock_hash-"


def retired_socket_maps(pin_dir: str) -> dict[str, int]:
    """Set-aside socket maps of ``pin_dir``: path -> sockets still in it."""
    out: dict[str, int] = {}
    with contextlib.suppress(FileNotFoundError):
        for name in sorted(os.listdir(pin_dir)):
            if name.startswith(RETIRED_PREFIX):
                path = os.path.join(pin_dir, name)
                with contextlib.suppress(OSError):
                    out[path] = _sockhash_count(path)
    return out


def drop_empty_retired(pin_dir: str) -> int:
    """Unpin the set-aside socket maps whose sockets have all closed; returns
    the sockets the others still hold."""
    left = 0
    for path, count in retired_socket_maps(pin_dir).items():
        if count:
            left += count
        else:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
    return left


def remove_pins(settings: Settings, force: bool = False) -> int:
    """Detach sk_msg from the sockhash and unpin every map, if the sockhash is
    empty (or ``force``). Returns the number of sockets that were still in it.
    Raises NotRunningError when there is nothing pinned."""
    pin_dir = settings.pin_dir
    if not os.path.isdir(pin_dir):
        raise NotRunningError(f"down: nothing pinned at {pin_dir}")
    if not os.path.isabs(pin_dir) or os.path.normpath(pin_dir) in ("/", kernel.DEFAULT_BPFFS):
        raise SettingsError(f"down: refusing to remove {pin_dir}")
    remaining = drop_empty_retired(pin_dir)
    if PinnedMaps.exists(pin_dir):
        with PinnedMaps(pin_dir) as maps:
            remaining += maps.socket_count()
            if remaining and not force:
                return remaining
            sh_fd = maps.fds["sock_hash"]
            try:
                ids = libbpf.prog_query(sh_fd, libbpf.ATTACH_SK_MSG_VERDICT)
            except OSError:
                ids = []
            for prog_id in ids:
                fd = libbpf.prog_fd_by_id(prog_id)
                try:
                    libbpf.prog_detach(fd, sh_fd, libbpf.ATTACH_SK_MSG_VERDICT)
                except OSError:
                    pass
                finally:
                    os.close(fd)
    elif remaining and not force:
        return remaining
    for name in (*PinnedMaps.ALL_NAMES, *(os.path.basename(p) for p in retired_socket_maps(pin_dir))):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(os.path.join(pin_dir, name))
    try:
        os.rmdir(pin_dir)
    except OSError as exc:
        raise NotRunningError(f"down: {pin_dir} holds pins that are not accel's ({exc.strerror}); left in place") from exc
    return remaining
