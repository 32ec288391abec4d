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
from collections.abc import Iterator
from typing import Any

# enum bpf_map_type / bpf_prog_type / bpf_attach_type / helper ids (uapi/linux/bpf.h)
MAP_TYPE_HASH = 1
MAP_TYPE_ARRAY = 2
MAP_TYPE_PERCPU_ARRAY = 6
MAP_TYPE_SOCKHASH = 18
MAP_TYPE_SK_STORAGE = 24
PROG_TYPE_SOCK_OPS = 13
PROG_TYPE_SK_MSG = 16
ATTACH_CGROUP_SOCK_OPS = 3
ATTACH_SK_MSG_VERDICT = 7
FUNC_SOCK_HASH_UPDATE = 70
FUNC_MSG_REDIRECT_HASH = 71
FUNC_SK_STORAGE_GET = 107
FUNC_GET_NETNS_COOKIE = 122
F_ALLOW_MULTI = 1 << 1
NOEXIST = 1
ANY = 0


class _ProgInfo(ctypes.Structure):
    # The head of struct bpf_prog_info; the kernel fills what fits.
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
