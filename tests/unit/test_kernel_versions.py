"""Which kernels carry the sockmap data-loss fixes, told from what uname and
/proc say on real distributions."""

from __future__ import annotations

import pytest

from accel.kernel import sockmap_fixes, upstream_version


@pytest.mark.parametrize(
    ("release", "version", "signature", "expected"),
    [
        ("6.18.44-fc-v657", "#1 SMP PREEMPT_DYNAMIC @0", "", (6, 18, 44)),  # this machine
        ("6.1.0-26-amd64", "#1 SMP PREEMPT_DYNAMIC Debian 6.1.112-1 (2024-09-30)", "", (6, 1, 112)),
        ("5.15.0-105-generic", "#115-Ubuntu SMP Mon Apr 15 09:52:04 UTC 2024", "Ubuntu 5.15.0-105.115-generic 5.15.149\n", (5, 15, 149)),
        ("6.6.94", "#1 SMP", "", (6, 6, 94)),
        ("6.12.0-55.el10.x86_64", "#1 SMP PREEMPT_DYNAMIC", "", None),  # an ABI number, not a patch level
        ("6.8.0-40-generic", "#40-Ubuntu SMP", "", None),
        ("6.16", "#1 SMP", "", (6, 16, 0)),
        ("weird", "", "", None),
    ],
)
def test_upstream_version(release, version, signature, expected):
    assert upstream_version(release, version, signature) == expected


@pytest.mark.parametrize(
    ("version", "fixed"),
    [
        ((5, 15, 185), False),
        ((5, 15, 186), True),
        ((6, 1, 141), False),
        ((6, 1, 142), True),
        ((6, 6, 94), True),
        ((6, 8, 12), False),  # a line that never got them
        ((6, 11, 11), False),
        ((6, 12, 33), False),
        ((6, 12, 34), True),
        ((6, 13, 12), False),
        ((6, 14, 11), False),
        ((6, 15, 3), True),
        ((6, 16, 0), True),
        ((7, 0, 1), True),
        (None, None),
    ],
)
def test_sockmap_fixes(version, fixed):
    got, why = sockmap_fixes(version)
    assert got is fixed
    if not fixed:
        assert "6.1.142+" in why  # the advice names the fixed releases
