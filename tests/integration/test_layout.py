"""The ctypes mirrors in accel/maps.py match the structs clang builds from
bpf/accel.h: sizes and every field offset, as the BPF compiler sees them.

A tiny socket-filter program stores sizeof/offsetof of each struct into an
array; we run it once with BPF_PROG_TEST_RUN and compare with ctypes."""

from __future__ import annotations

import ctypes
import os

import pytest

from accel import kernel, libbpf
from accel.abi import MIRRORS
from accel.programs import BPF_DIR


def layout_program() -> tuple[str, list[tuple[str, str]]]:
    slots: list[tuple[str, str]] = []
    for cname, mirror in MIRRORS.items():
        slots.append((cname, "sizeof"))
        for fname, *_ in mirror._fields_:
            slots.append((cname, fname))
    body = []
    for i, (cname, what) in enumerate(slots):
        expr = f"sizeof(struct {cname})" if what == "sizeof" else f"__builtin_offsetof(struct {cname}, {what})"
        body.append(f"    idx = {i}; val = {expr}; layout.update(&idx, &val);")
    src = (
        '#include "accel.h"\n'
        f"BPF_ARRAY(layout, u64, {len(slots)});\n"
        "int measure(struct __sk_buff *skb) {\n"
        "    u32 idx; u64 val;\n" + "\n".join(body) + "\n    return 0;\n}\n"
    )
    return src, slots


@pytest.fixture(scope="module")
def compiled_layout():
    from bcc import BPF

    headers = kernel.find_headers()
    if headers.kind == "distribution":
        os.environ["BCC_KERNEL_SOURCE"] = headers.path
    src, slots = layout_program()
    b = BPF(text=src.encode(), cflags=[f"-I{BPF_DIR}"])
    fn = b.load_func(b"measure", BPF.SOCKET_FILTER)
    assert libbpf.prog_test_run(fn.fd, bytes(64)) == 0
    table = b.get_table(b"layout")
    values = {slots[i]: table[ctypes.c_int(i)].value for i in range(len(slots))}
    yield values
    b.cleanup()


@pytest.mark.parametrize("cname", list(MIRRORS))
def test_mirror_matches_compiled_layout(compiled_layout, cname):
    mirror = MIRRORS[cname]
    assert compiled_layout[(cname, "sizeof")] == ctypes.sizeof(mirror), f"sizeof(struct {cname})"
    for fname, *_ in mirror._fields_:
        assert compiled_layout[(cname, fname)] == getattr(mirror, fname).offset, f"offsetof(struct {cname}, {fname})"


def test_the_measurement_is_not_trivial(compiled_layout):
    # Guard against a program that stored nothing: the key is 56 bytes.
    assert compiled_layout[("sock_key", "sizeof")] == 56
    assert compiled_layout[("sock_key", "remote_seq")] == 52
