import ctypes
import ipaddress

from hypothesis import given
from hypothesis import strategies as st

from accel.abi import SockEntry, SockKey, Stats, ip_words, pack_ip, pair_connections, unpack_ip


def test_ipv4_is_stored_v4_mapped():
    assert pack_ip("10.1.2.3") == bytes(10) + b"\xff\xff" + bytes([10, 1, 2, 3])
    assert pack_ip("10.1.2.3") == ipaddress.IPv6Address("::ffff:10.1.2.3").packed


def test_v4_mapped_v6_text_and_v4_pack_the_same():
    # An AF_INET6 socket speaking to an IPv4 peer sees ::ffff:a.b.c.d.
    assert pack_ip("::ffff:127.0.0.1") == pack_ip("127.0.0.1")


@given(st.ip_addresses())
def test_pack_unpack_roundtrip(ip):
    # A v4-mapped IPv6 address comes back as the IPv4 address it stands for.
    expected = ip.ipv4_mapped if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped else ip
    assert unpack_ip(pack_ip(ip)) == expected


@given(st.ip_addresses(v=4))
def test_words_are_network_order_bytes(ip):
    words = ip_words(ip)
    assert bytes(words) == pack_ip(ip)


def test_sock_key_is_56_bytes_without_padding():
    assert ctypes.sizeof(SockKey) == 56
    assert SockKey.remote_port.offset == 44
    assert SockKey.remote_seq.offset == 52


def test_stats_has_only_u64_counters():
    assert ctypes.sizeof(Stats) == 8 * len(Stats._fields_)


def _entry(netns, a, ap, b, bp):
    return SockEntry(netns, a, ap, b, bp)


def test_pairing_matches_both_ends_of_a_connection():
    e1 = _entry(0, "10.0.0.1", 40000, "10.0.0.2", 80)
    e2 = _entry(0, "10.0.0.2", 80, "10.0.0.1", 40000)
    lonely = _entry(7, "127.0.0.1", 5, "127.0.0.1", 6)
    conns = pair_connections([e2, lonely, e1])
    assert len(conns) == 2
    both = [c for c in conns if c.both_in_map]
    assert len(both) == 1 and {both[0].a, both[0].b} == {("10.0.0.1", 40000), ("10.0.0.2", 80)}
    assert next(c for c in conns if not c.both_in_map).netns == 7


def test_pairing_never_crosses_namespaces():
    # Same loopback tuple in two namespaces: two connections, not one.
    a1 = _entry(1, "127.0.0.1", 1000, "127.0.0.1", 2000)
    b1 = _entry(1, "127.0.0.1", 2000, "127.0.0.1", 1000)
    a2 = _entry(2, "127.0.0.1", 1000, "127.0.0.1", 2000)
    b2 = _entry(2, "127.0.0.1", 2000, "127.0.0.1", 1000)
    conns = pair_connections([a1, b1, a2, b2])
    assert sorted(c.netns for c in conns) == [1, 2]
    assert all(c.both_in_map for c in conns)


def test_pairing_tells_a_reused_tuple_from_the_connection_that_ended():
    # c1 ended (its fd still open, so still in the map); c2 reused its tuple
    # through TIME_WAIT and pairs with s2, not with c1.
    c1 = SockEntry(5, "127.0.0.1", 40000, "127.0.0.1", 80, 1000, 2000)
    c2 = SockEntry(5, "127.0.0.1", 40000, "127.0.0.1", 80, 9000, 7000)
    s2 = SockEntry(5, "127.0.0.1", 80, "127.0.0.1", 40000, 7000, 9000)
    conns = pair_connections([c1, c2, s2])
    assert sorted(c.both_in_map for c in conns) == [False, True]
