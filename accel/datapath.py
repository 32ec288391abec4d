"""The datapath's lifecycle, in one object: compile (bcc), pin, attach every
program of the table (`programs.PROGRAMS`), and detach what it attached. It
finds and replaces the attachments a crashed run left behind.

For every row (docs/DESIGN.md):
- invariant 6: rows attach in table order, map-attached programs first
  (`programs.check_order`), so no socket is inserted before the programs it
  should take;
- invariant 7: ``stop()`` detaches only the cgroup programs (no new socket
  joins); the pinned maps and what is attached to them stay, so accelerated
  connections finish untouched and a new controller reuses the same maps.

Nothing here knows which programs exist: a new program is a row of the table
and its C file.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from . import kernel, libbpf
from .control import RETIRED_PREFIX, detach_ids, detach_ours, drop_empty_retired, instance_map_ids, ours_on
from .errors import AttachError, BpffsError, CompileError, VerifierError
from .maps import PinnedMaps, layout_mismatches, pinned_map_count, pinned_map_id
from .programs import BPF_DIR, PROGRAMS, Program, check_order
from .settings import Settings
from .stderr_capture import capture_fd2

# Every warning clang raises on our C is an error (bcc's own helpers compile clean).
BPF_WARNINGS = ("-Wall", "-Werror")


def bcc_location() -> tuple[str, str]:
    """(where bcc is imported from, "") or ("", why it cannot be)."""
    try:
        import bcc
    except Exception as exc:  # ImportError, or a broken libbcc
        return "", str(exc)
    return os.path.dirname(bcc.__file__), ""


@dataclass
class Attached:
    """What ``start()`` attached: the cgroup and each program's kernel id."""

    cgroup: str
    ids: dict[str, int] = field(default_factory=dict)


@dataclass
class _Loaded:
    program: Program
    fd: int
    target_fd: int | None = None  # the cgroup or map fd it is attached to, while it is


class Datapath:
    """One instance's programs and maps. ``start()`` then ``stop()``."""

    def __init__(self, settings: Settings, log: Any, programs: tuple[Program, ...] = PROGRAMS) -> None:
        check_order(programs)
        self.settings = settings
        self.log = log
        self.programs = programs
        self.cgroup: str | None = None
        self.headers: kernel.Headers | None = None
        self.sizes: dict[str, int] = {}
        self.offsets: dict[str, int] = {}
        self._modules: dict[str, Any] = {}  # bcc module per source file
        self._loaded: list[_Loaded] = []

    # --- the lifecycle ------------------------------------------------------

    def start(self, before_attach: Callable[[], bool] | None = None) -> Attached | None:
        """Check the machine, compile and load every program (bcc opens the
        pins or creates them), then attach them in table order. ``before_attach``
        runs between load and attach (the agent fills the endpoint map there);
        when it returns False nothing is attached and None is returned. On any
        failure, what was attached is detached again before the error is
        raised."""
        self._prepare()
        self._load()
        if before_attach is not None and not before_attach():
            return None
        try:
            return self._attach()
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        """Detach the cgroup programs (last first): new connections are no
        longer accelerated, existing ones keep their path. Then drop our fds
        and bcc modules; pins and map attachments persist. Idempotent."""
        for item in reversed(self._loaded):
            if item.program.on_cgroup and item.target_fd is not None:
                try:
                    libbpf.prog_detach(item.fd, item.target_fd, item.program.attach_type)
                except OSError as exc:
                    self.log.error("detach failed", program=item.program.entry, cgroup=self.cgroup, error=exc.strerror)
        for item in self._loaded:
            for fd in (item.fd, item.target_fd):
                if fd is not None:
                    with contextlib.suppress(OSError):
                        os.close(fd)
        self._loaded.clear()
        for mod in self._modules.values():
            with contextlib.suppress(Exception):
                mod.cleanup()
        self._modules.clear()

    # --- steps --------------------------------------------------------------

    def _prepare(self) -> None:
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

    def _load(self) -> None:
        assert self.headers is not None
        if self.headers.kind == "distribution":
            os.environ["BCC_KERNEL_SOURCE"] = self.headers.path
        self._make_pin_dir()
        self._replace_outdated_pins()
        self.sizes = self._pinned_sizes()
        self.offsets = kernel.kernel_field_offsets()
        cflags = self.cflags()
        for program in self.programs:
            self._loaded.append(_Loaded(program, self._compile_and_load(program, cflags)))
        os.chmod(self.settings.pin_dir, 0o700)
        with PinnedMaps(self.settings.pin_dir) as maps:  # flow control's ceiling, before any message
            maps.set_flow_config(max_bound=int(self.settings.flow_growth_cap * kernel.tcp_autotune_max()))

    def cflags(self) -> list[str]:
        """How the programs are built for this instance: its pin directory, map
        sizes (fixed when first pinned), the running kernel's field offsets,
        and the settings that select code."""
        return [
            f"-I{BPF_DIR}",
            *BPF_WARNINGS,
            f'-DACCEL_PIN_DIR="{self.settings.pin_dir}"',
            f"-DACCEL_SOCKHASH_SIZE={self.sizes['sock_hash']}",
            f"-DACCEL_ENDPOINTS_SIZE={self.sizes['endpoints']}",
            *(f"-D{name}={off}" for name, off in sorted(self.offsets.items())),
            *self._small_write_flags(),
            *self.settings.extra_cflags,
        ]

    def _small_write_flags(self) -> list[str]:
        """The small-write rule's limits, from the settings; a --bpf-define of
        the same name (a benchmark's A/B) is the build's last word."""
        s = self.settings
        if not s.small_write_fallback:
            return ["-DACCEL_NO_SMALL_WRITES"]
        defined = {flag[2:].split("=", 1)[0] for flag in s.extra_cflags if flag.startswith("-D")}
        limits = {"ACCEL_SMALL_LOCAL": s.small_write_local, "ACCEL_SMALL_REMOTE": s.small_write_remote}
        return [f"-D{name}={value}" for name, value in limits.items() if name not in defined]

    def _attach(self) -> Attached:
        assert self.cgroup is not None
        attached = Attached(self.cgroup)
        # An earlier run's programs, found before ours join them.
        map_ids = instance_map_ids(self.settings.pin_dir)
        for item in self._loaded:
            p = item.program
            if p.on_cgroup:
                try:
                    item.target_fd = os.open(self.cgroup, os.O_RDONLY | os.O_DIRECTORY)
                except OSError as exc:
                    raise AttachError(f"attach {p.entry}: open cgroup {self.cgroup}: {exc.strerror}") from exc
                stale = ours_on(item.target_fd, p, map_ids)
                try:
                    # ALLOW_MULTI: coexist with other programs on the cgroup
                    # (systemd and other agents attach to the root cgroup too).
                    libbpf.prog_attach(item.fd, item.target_fd, p.attach_type, libbpf.F_ALLOW_MULTI)
                except OSError as exc:
                    raise AttachError(f"attach {p.entry} to {self.cgroup}: {exc.strerror}", fix="another program may hold this cgroup exclusively") from exc
                # A crashed run's program is still attached: replace it (ours
                # first, so that no connection is missed in between).
                detach_ids(item.target_fd, p, stale)
                for prog_id in stale:
                    self.log.warning("replaced a program left attached by an earlier run", program=p.entry, prog_id=prog_id, cgroup=self.cgroup)
            elif p.on_map:
                try:
                    map_fd = libbpf.obj_get(os.path.join(self.settings.pin_dir, p.target))
                except OSError as exc:
                    raise AttachError(f"attach {p.entry}: open map {p.target}: {exc.strerror}") from exc
                try:
                    libbpf.prog_attach(item.fd, map_fd, p.attach_type)
                except OSError as exc:
                    os.close(map_fd)
                    raise AttachError(f"attach {p.entry} to map {p.target}: {exc.strerror}") from exc
                # A map's program stays attached after stop (invariant 7): keep
                # no fd that would suggest we detach it.
                os.close(map_fd)
            attached.ids[p.entry] = libbpf.prog_info(item.fd)[0]
        return attached

    def program_fd(self, entry: str) -> int:
        """Our fd on a loaded program (an on-demand one is run through it)."""
        for item in self._loaded:
            if item.program.entry == entry:
                return item.fd
        raise KeyError(entry)

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
        alive (a socket keeps the programs it was inserted with, and they keep
        their maps), so connections accelerated before the upgrade run on
        untouched. A socket map that still holds sockets is not unpinned but
        set aside (renamed ``retired-sock_hash-<id>``): it stays visible to
        status and down, which remove it once its last socket has closed."""
        for m in layout_mismatches(self.settings.pin_dir):
            path = os.path.join(self.settings.pin_dir, m.name)
            if m.name == "sock_hash":
                if self.cgroup is not None:  # an older run's programs feed it: no new sockets join
                    detach_ours(self.settings.pin_dir, self.cgroup, self.programs)
                live = pinned_map_count(path)
                if live:
                    retired = os.path.join(self.settings.pin_dir, f"{RETIRED_PREFIX}{pinned_map_id(path)}")
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

    def _compile_and_load(self, program: Program, cflags: list[str]) -> int:
        from bcc import BPF  # bcc is imported here only: doctor and status work without it

        module = self._modules.get(program.source)
        if module is None:
            with capture_fd2() as compiled:
                try:
                    module = BPF(src_file=program.path.encode(), cflags=[*cflags, f"-I{os.path.dirname(program.path)}"])
                except Exception:
                    module = None
            if module is None:
                note = self.headers.note if self.headers else "?"
                raise CompileError(f"compile {program.path} with bcc failed", fix=f"check the kernel headers ({note})", detail=compiled.tail())
            self._modules[program.source] = module
        with capture_fd2() as loaded:
            try:
                fn = module.load_func(program.entry.encode(), program.prog_type, attach_type=program.attach_type)
            except Exception as exc:
                fn = None
                error = str(exc)
        if fn is None:
            raise VerifierError(
                f"load {program.entry} from {program.source}: the kernel rejected it ({error})",
                detail=f"--- verifier log (last lines) ---\n{loaded.tail()}" if loaded.tail() else "",
            )
        # Our own fd on the program, independent of bcc's bookkeeping.
        prog_id = libbpf.prog_info(fn.fd)[0]
        return libbpf.prog_fd_by_id(prog_id)
