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
from typing import TypeVar

from ..abi import POLICY_ACCELERATE, POLICY_AMBIGUOUS, POLICY_OPT_OUT, SOURCE_KUBERNETES, SOURCE_NETLINK
from ..netns import NamespaceId

V = TypeVar("V")


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


def merge(netlink: Mapping[str, int], kube: Mapping[str, int]) -> dict[str, tuple[int, int]]:
    """Both sources into (policy, source bits) per address. An opt-out from
    the API wins; an address netlink found ambiguous stays ambiguous."""
    out = {a: (p, SOURCE_NETLINK) for a, p in netlink.items()}
    for addr, policy in kube.items():
        if addr in out:
            seen, src = out[addr]
            out[addr] = (POLICY_OPT_OUT if policy == POLICY_OPT_OUT else seen, src | SOURCE_KUBERNETES)
        else:
            out[addr] = (policy, SOURCE_KUBERNETES)
    return out


def diff(current: Mapping[str, V], desired: Mapping[str, V]) -> tuple[dict[str, V], list[str]]:
    """(entries to write, addresses to delete) to go from current to desired."""
    upserts = {a: p for a, p in desired.items() if current.get(a) != p}
    deletes = sorted(a for a in current if a not in desired)
    return upserts, deletes
