"""From "which namespace holds which address" to the endpoint map's content.

Pure logic, no kernel: unit-tested without root.

An address is ACCELERATE when exactly one network namespace holds it. An
address held by several namespaces (two isolated networks reusing 10.0.0.1)
is AMBIGUOUS: a key with netns 0 could then match a socket of the other
network, so such peers stay on TCP. Loopback and link-local addresses are not
listed at all: loopback is recognised by sockops itself (with the netns cookie
in the key), link-local addresses repeat in every namespace by design.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping

from ..maps import POLICY_ACCELERATE, POLICY_AMBIGUOUS

NamespaceId = tuple[int, int]  # (st_dev, st_ino) of the netns file


def usable(addr: str) -> bool:
    try:
        ip = ipaddress.ip_address(addr)
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return not (ip.is_loopback or ip.is_link_local or ip.is_multicast or ip.is_unspecified)


def normalise(addr: str) -> str:
    ip = ipaddress.ip_address(addr)
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return str(ip.ipv4_mapped)
    return str(ip)


def desired_policies(by_namespace: Mapping[NamespaceId, Iterable[str]]) -> dict[str, int]:
    owners: dict[str, set[NamespaceId]] = {}
    for ns, addrs in by_namespace.items():
        for addr in addrs:
            if usable(addr):
                owners.setdefault(normalise(addr), set()).add(ns)
    return {addr: POLICY_ACCELERATE if len(nss) == 1 else POLICY_AMBIGUOUS for addr, nss in owners.items()}


def diff(current: Mapping[str, int], desired: Mapping[str, int]) -> tuple[dict[str, int], list[str]]:
    """(entries to write, addresses to delete) to go from current to desired."""
    upserts = {a: p for a, p in desired.items() if current.get(a) != p}
    deletes = sorted(a for a in current if a not in desired)
    return upserts, deletes
