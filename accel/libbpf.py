"""The bpf() syscall through libbpf (libbpf.so.1, which bcc itself links).

bcc 0.26's Python side knows neither SOCKHASH nor program queries, so the few
object-level operations we need (open a pin, walk a map, query and detach a
cgroup's programs, probe features) go through libbpf's stable C API here, and
only here. Every call returns a value or raises ``OSError`` with the errno.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import os
from collections.abc import Callable, Iterator
from typing import Any

from .abi import MAP_TYPE_ARRAY

# flags of BPF_PROG_ATTACH and BPF_MAP_UPDATE_ELEM (uapi/linux/bpf.h)
F_ALLOW_MULTI = 1 << 1
NOEXIST = 1
ANY = 0


class _ProgInfo(ctypes.Structure):
    # The head of struct bpf_prog_info (uapi/linux/bpf.h) up to run_cnt; the
    # kernel fills what fits.
    _fields_ = [
        ("type", ctypes.c_uint32),
        ("id", ctypes.c_uint32),
        ("tag", ctypes.c_uint8 * 8),
        ("jited_prog_len", ctypes.c_uint32),
        ("xlated_prog_len", ctypes.c_uint32),
        ("jited_prog_insns", ctypes.c_uint64),
        ("xlated_prog_insns", ctypes.c_uint64),
        ("load_time", ctypes.c_uint64),
        ("created_by_uid", ctypes.c_uint32),
        ("nr_map_ids", ctypes.c_uint32),
        ("map_ids", ctypes.c_uint64),
        ("name", ctypes.c_char * 16),
        ("ifindex", ctypes.c_uint32),
        ("gpl_compatible", ctypes.c_uint32),
        ("netns_dev", ctypes.c_uint64),
        ("netns_ino", ctypes.c_uint64),
        ("nr_jited_ksyms", ctypes.c_uint32),
        ("nr_jited_func_lens", ctypes.c_uint32),
        ("jited_ksyms", ctypes.c_uint64),
        ("jited_func_lens", ctypes.c_uint64),
        ("btf_id", ctypes.c_uint32),
        ("func_info_rec_size", ctypes.c_uint32),
        ("func_info", ctypes.c_uint64),
        ("nr_func_info", ctypes.c_uint32),
        ("nr_line_info", ctypes.c_uint32),
        ("line_info", ctypes.c_uint64),
        ("jited_line_info", ctypes.c_uint64),
        ("nr_jited_line_info", ctypes.c_uint32),
        ("line_info_rec_size", ctypes.c_uint32),
        ("jited_line_info_rec_size", ctypes.c_uint32),
        ("nr_prog_tags", ctypes.c_uint32),
        ("prog_tags", ctypes.c_uint64),
        ("run_time_ns", ctypes.c_uint64),
        ("run_cnt", ctypes.c_uint64),
    ]


class _MapInfo(ctypes.Structure):
    # The head of struct bpf_map_info.
    _fields_ = [
        ("type", ctypes.c_uint32),
        ("id", ctypes.c_uint32),
        ("key_size", ctypes.c_uint32),
        ("value_size", ctypes.c_uint32),
        ("max_entries", ctypes.c_uint32),
        ("map_flags", ctypes.c_uint32),
        ("name", ctypes.c_char * 16),
    ]


# int (*ring_buffer_sample_fn)(void *ctx, void *data, size_t size)
_SAMPLE_FN = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_size_t)


class _Lib:
    _handle: ctypes.CDLL | None = None

    @classmethod
    def get(cls) -> ctypes.CDLL:
        if cls._handle is None:
            name = ctypes.util.find_library("bpf") or "libbpf.so.1"
            try:
                lib = ctypes.CDLL(name, use_errno=True)
            except OSError as exc:
                raise OSError(errno.ENOENT, f"libbpf not found ({exc}); install libbpf1") from exc
            c_int, c_uint, vp = ctypes.c_int, ctypes.c_uint, ctypes.c_void_p
            u32p = ctypes.POINTER(ctypes.c_uint32)
            sigs = {
                "bpf_obj_get": ([ctypes.c_char_p], c_int),
                "bpf_obj_pin": ([c_int, ctypes.c_char_p], c_int),
                "bpf_map_lookup_elem": ([c_int, vp, vp], c_int),
                "bpf_map_update_elem": ([c_int, vp, vp, ctypes.c_uint64], c_int),
                "bpf_map_delete_elem": ([c_int, vp], c_int),
                "bpf_map_get_next_key": ([c_int, vp, vp], c_int),
                "bpf_prog_attach": ([c_int, c_int, c_int, c_uint], c_int),
                "bpf_prog_detach2": ([c_int, c_int, c_int], c_int),
                "bpf_prog_query": ([c_int, c_int, ctypes.c_uint32, u32p, u32p, u32p], c_int),
                "bpf_prog_get_fd_by_id": ([ctypes.c_uint32], c_int),
                "bpf_map_get_fd_by_id": ([ctypes.c_uint32], c_int),
                "bpf_obj_get_info_by_fd": ([c_int, vp, u32p], c_int),
                "libbpf_probe_bpf_prog_type": ([c_int, vp], c_int),
                "libbpf_probe_bpf_map_type": ([c_int, vp], c_int),
                "libbpf_probe_bpf_helper": ([c_int, c_int, vp], c_int),
                "libbpf_num_possible_cpus": ([], c_int),
                "bpf_prog_test_run_opts": ([c_int, vp], c_int),
                "bpf_map_create": ([c_int, ctypes.c_char_p, ctypes.c_uint32, ctypes.c_uint32, ctypes.c_uint32, vp], c_int),
                "bpf_enable_stats": ([c_int], c_int),
                "ring_buffer__new": ([c_int, _SAMPLE_FN, vp, vp], vp),
                "ring_buffer__poll": ([vp, c_int], c_int),
                "ring_buffer__free": ([vp], None),
                "btf__load_vmlinux_btf": ([], vp),
                "btf__free": ([vp], None),
                "btf__find_by_name_kind": ([vp, ctypes.c_char_p, ctypes.c_uint32], ctypes.c_int32),
                "btf__type_by_id": ([vp, ctypes.c_uint32], vp),
                "btf__name_by_offset": ([vp, ctypes.c_uint32], ctypes.c_char_p),
            }
            for fname, (args, res) in sigs.items():
                fn = getattr(lib, fname)
                fn.argtypes = args
                fn.restype = res
            cls._handle = lib
        return cls._handle


def _check(ret: int, what: str) -> int:
    # libbpf 1.x returns -errno (and sets errno) on failure.
    if ret < 0:
        err = -ret if ret != -1 else (ctypes.get_errno() or errno.EPERM)
        raise OSError(err, f"{what}: {os.strerror(err)}")
    return ret


def obj_get(path: str) -> int:
    """Open a pinned object; the caller owns (and closes) the fd."""
    return _check(_Lib.get().bpf_obj_get(path.encode()), f"open pin {path}")


def obj_pin(fd: int, path: str) -> None:
    _check(_Lib.get().bpf_obj_pin(fd, path.encode()), f"pin {path}")


def map_create(map_type: int, key_size: int, value_size: int, max_entries: int) -> int:
    return _check(_Lib.get().bpf_map_create(map_type, None, key_size, value_size, max_entries, None), "create map")


def map_lookup(fd: int, key: Any, value: Any) -> bool:
    ret = _Lib.get().bpf_map_lookup_elem(fd, ctypes.byref(key), ctypes.byref(value))
    if ret == -errno.ENOENT:
        return False
    _check(ret, "map lookup")
    return True


def map_update(fd: int, key: Any, value: Any, flags: int = ANY) -> None:
    _check(_Lib.get().bpf_map_update_elem(fd, ctypes.byref(key), ctypes.byref(value), flags), "map update")


def map_delete(fd: int, key: Any) -> bool:
    ret = _Lib.get().bpf_map_delete_elem(fd, ctypes.byref(key))
    if ret == -errno.ENOENT:
        return False
    _check(ret, "map delete")
    return True


def map_keys(fd: int, key_type: type) -> Iterator:
    """Every key of a map, as instances of ``key_type`` (a ctypes type)."""
    lib = _Lib.get()
    prev = None
    while True:
        nxt = key_type()
        ret = lib.bpf_map_get_next_key(fd, None if prev is None else ctypes.byref(prev), ctypes.byref(nxt))
        if ret == -errno.ENOENT:
            return
        _check(ret, "map iteration")
        yield nxt
        prev = nxt


def map_count(fd: int) -> int:
    """Number of keys in any map, whatever its key type (read from the map)."""
    raw = ctypes.c_ubyte * int(map_info(fd)["key_size"])
    return sum(1 for _ in map_keys(fd, raw))


def prog_attach(prog_fd: int, target_fd: int, attach_type: int, flags: int = 0) -> None:
    _check(_Lib.get().bpf_prog_attach(prog_fd, target_fd, attach_type, flags), "attach")


def prog_detach(prog_fd: int, target_fd: int, attach_type: int) -> None:
    _check(_Lib.get().bpf_prog_detach2(prog_fd, target_fd, attach_type), "detach")


QUERY_EFFECTIVE = 1  # BPF_F_QUERY_EFFECTIVE: include what ancestors pass down


def prog_query(target_fd: int, attach_type: int, effective: bool = False) -> list[int]:
    """Ids of the programs attached to a cgroup (or map) for a hook: directly,
    or with ``effective`` every program that runs there, inherited ones too."""
    lib = _Lib.get()
    ids = (ctypes.c_uint32 * 64)()
    count = ctypes.c_uint32(64)
    flags = ctypes.c_uint32(0)
    query = QUERY_EFFECTIVE if effective else 0
    _check(lib.bpf_prog_query(target_fd, attach_type, query, ctypes.byref(flags), ids, ctypes.byref(count)), "query")
    return list(ids[: count.value])


def prog_fd_by_id(prog_id: int) -> int:
    return _check(_Lib.get().bpf_prog_get_fd_by_id(prog_id), f"open program id {prog_id}")


def prog_info(fd: int) -> tuple[int, str]:
    """(id, name) of a program fd."""
    info = _ProgInfo()
    size = ctypes.c_uint32(ctypes.sizeof(info))
    _check(_Lib.get().bpf_obj_get_info_by_fd(fd, ctypes.byref(info), ctypes.byref(size)), "program info")
    return info.id, info.name.decode(errors="replace")


def prog_run_stats(prog_id: int) -> tuple[int, int]:
    """(total ns, runs) the kernel measured for a program while run-time
    statistics are enabled (see ``enable_run_stats``); (0, 0) otherwise."""
    fd = prog_fd_by_id(prog_id)
    try:
        info = _ProgInfo()
        size = ctypes.c_uint32(ctypes.sizeof(info))
        _check(_Lib.get().bpf_obj_get_info_by_fd(fd, ctypes.byref(info), ctypes.byref(size)), "program info")
        return int(info.run_time_ns), int(info.run_cnt)
    finally:
        os.close(fd)


BPF_STATS_RUN_TIME = 0


def enable_run_stats() -> int:
    """Make the kernel time every BPF program run (BPF_ENABLE_STATS) until the
    returned fd is closed. It costs two clock reads per run: a measurement
    switch, not for production."""
    return _check(_Lib.get().bpf_enable_stats(BPF_STATS_RUN_TIME), "enable BPF run-time statistics")


BTF_KIND_STRUCT = 4
BTF_KIND_UNION = 5
_BTF_MODIFIERS = (8, 9, 10, 11, 18)  # typedef, volatile, const, restrict, type tag


def kernel_struct_offsets(wanted: dict[str, tuple[str, ...]]) -> dict[tuple[str, str], int]:
    """Byte offsets of struct members in the RUNNING kernel, from its BTF
    (/sys/kernel/btf/vmlinux), for members named in ``wanted`` ({struct:
    (member, ...)}); members of anonymous inner structs and unions are found
    too. What is missing (no BTF, a renamed field, a bitfield) is absent from
    the result: the caller decides. This, not the headers bcc compiles with,
    is the layout the programs must read."""
    lib = _Lib.get()
    btf = lib.btf__load_vmlinux_btf()
    if not btf:
        return {}
    out: dict[tuple[str, str], int] = {}
    try:
        for struct, members in wanted.items():
            tid = lib.btf__find_by_name_kind(btf, struct.encode(), BTF_KIND_STRUCT)
            if tid > 0:
                for name, bits in _members(lib, btf, tid, 0):
                    if name in members and bits % 8 == 0:
                        out.setdefault((struct, name), bits // 8)
    finally:
        lib.btf__free(btf)
    return out


def _btf_type(lib: ctypes.CDLL, btf: int, tid: int) -> tuple[int, int, int, int]:
    """(address, kind, vlen, kind_flag) of BTF type ``tid``."""
    addr = lib.btf__type_by_id(btf, tid)
    _name, info, _size = (ctypes.c_uint32 * 3).from_address(addr)
    return addr, (info >> 24) & 0x1F, info & 0xFFFF, info >> 31


def _members(lib: ctypes.CDLL, btf: int, tid: int, base: int) -> Iterator[tuple[str, int]]:
    addr, kind, vlen, kflag = _btf_type(lib, btf, tid)
    if kind not in (BTF_KIND_STRUCT, BTF_KIND_UNION):
        return
    rows = (ctypes.c_uint32 * (3 * vlen)).from_address(addr + 12)  # struct btf_member {name_off, type, offset}
    for i in range(vlen):
        name_off, mtype, off = rows[3 * i], rows[3 * i + 1], rows[3 * i + 2]
        bits = base + ((off & 0xFFFFFF) if kflag else off)
        if name_off:
            yield lib.btf__name_by_offset(btf, name_off).decode(), bits
        else:  # an anonymous struct or union: its members belong to this one
            inner = mtype
            while _btf_type(lib, btf, inner)[1] in _BTF_MODIFIERS:
                inner = ctypes.c_uint32.from_address(_btf_type(lib, btf, inner)[0] + 8).value
            yield from _members(lib, btf, inner, bits)


def prog_map_ids(fd: int) -> list[int]:
    """Ids of the maps a program uses: how we tell our programs from another
    instance's (same name, different sockhash)."""
    ids = (ctypes.c_uint32 * 32)()
    info = _ProgInfo()
    info.nr_map_ids = 32
    info.map_ids = ctypes.addressof(ids)
    size = ctypes.c_uint32(ctypes.sizeof(info))
    _check(_Lib.get().bpf_obj_get_info_by_fd(fd, ctypes.byref(info), ctypes.byref(size)), "program info")
    return list(ids[: min(info.nr_map_ids, 32)])


def map_info(fd: int) -> dict[str, int | str]:
    info = _MapInfo()
    size = ctypes.c_uint32(ctypes.sizeof(info))
    _check(_Lib.get().bpf_obj_get_info_by_fd(fd, ctypes.byref(info), ctypes.byref(size)), "map info")
    return {
        "type": info.type,
        "id": info.id,
        "key_size": info.key_size,
        "value_size": info.value_size,
        "max_entries": info.max_entries,
        "name": info.name.decode(errors="replace"),
    }


class _TestRunOpts(ctypes.Structure):
    # struct bpf_test_run_opts (libbpf >= 0.7), the fields up to retval.
    _fields_ = [
        ("sz", ctypes.c_size_t),
        ("data_in", ctypes.c_void_p),
        ("data_out", ctypes.c_void_p),
        ("data_size_in", ctypes.c_uint32),
        ("data_size_out", ctypes.c_uint32),
        ("ctx_in", ctypes.c_void_p),
        ("ctx_out", ctypes.c_void_p),
        ("ctx_size_in", ctypes.c_uint32),
        ("ctx_size_out", ctypes.c_uint32),
        ("retval", ctypes.c_uint32),
        ("repeat", ctypes.c_int),
        ("duration", ctypes.c_uint32),
        ("flags", ctypes.c_uint32),
        ("cpu", ctypes.c_uint32),
        ("batch_size", ctypes.c_uint32),
    ]


def prog_test_run(prog_fd: int, data: bytes) -> int:
    """Run a program once on ``data`` (BPF_PROG_TEST_RUN); returns its retval."""
    buf = ctypes.create_string_buffer(data, len(data))
    opts = _TestRunOpts(sz=ctypes.sizeof(_TestRunOpts), data_in=ctypes.addressof(buf), data_size_in=len(data), repeat=1)
    _check(_Lib.get().bpf_prog_test_run_opts(prog_fd, ctypes.byref(opts)), "test run")
    return int(opts.retval)


class RingBuffer:
    """A consumer of a BPF ring buffer map (libbpf's ring_buffer): ``poll``
    waits for records and hands each one, as bytes, to ``on_record``. The
    consumer position lives in the map, so a new consumer of a pinned ring
    buffer starts where the last one stopped."""

    def __init__(self, map_fd: int, on_record: Callable[[bytes], None]) -> None:
        self._error: BaseException | None = None

        def sample(_ctx: int, data: int, size: int) -> int:
            try:
                on_record(ctypes.string_at(data, size))
            except Exception as exc:  # an exception cannot cross libbpf: keep it for poll()
                self._error = exc
                return -1
            return 0

        self._cb = _SAMPLE_FN(sample)  # kept alive as long as the ring buffer
        ptr = _Lib.get().ring_buffer__new(map_fd, self._cb, None, None)
        if not ptr:
            err = ctypes.get_errno() or errno.EINVAL
            raise OSError(err, f"open ring buffer: {os.strerror(err)}")
        self._rb: int | None = ptr

    def poll(self, timeout_ms: int) -> int:
        """Records handled (0 on timeout)."""
        assert self._rb is not None
        ret = _Lib.get().ring_buffer__poll(self._rb, timeout_ms)
        if self._error is not None:
            err, self._error = self._error, None
            raise err
        if ret == -errno.EINTR:
            return 0
        return _check(ret, "poll ring buffer")

    def close(self) -> None:
        if self._rb is not None:
            _Lib.get().ring_buffer__free(self._rb)
            self._rb = None


def possible_cpus() -> int:
    return _check(_Lib.get().libbpf_num_possible_cpus(), "count possible CPUs")


def probe_syscall() -> bool:
    """Create and drop a one-entry array: the plainest use of bpf(). Raises
    OSError (EPERM) where the kernel refuses BPF to this process."""
    fd = _check(_Lib.get().bpf_map_create(MAP_TYPE_ARRAY, None, 4, 4, 1, None), "bpf(BPF_MAP_CREATE)")
    os.close(fd)
    return True


def _probe(ret: int, what: str) -> bool:
    # libbpf probes: 1 supported, 0 not supported, <0 the probe itself failed
    # (EPERM without CAP_BPF, e.g. in a user namespace or a locked-down container).
    if ret < 0:
        raise OSError(-ret, f"probe {what}: {os.strerror(-ret)}")
    return ret == 1


def probe_prog_type(prog_type: int) -> bool:
    return _probe(_Lib.get().libbpf_probe_bpf_prog_type(prog_type, None), f"program type {prog_type}")


def probe_map_type(map_type: int) -> bool:
    return _probe(_Lib.get().libbpf_probe_bpf_map_type(map_type, None), f"map type {map_type}")


def probe_helper(prog_type: int, helper_id: int) -> bool:
    return _probe(_Lib.get().libbpf_probe_bpf_helper(prog_type, helper_id, None), f"helper {helper_id}")
