"""The torture suite's own referee: a checker that missed a fault would make
every zero in its report worthless, so each fault class is provoked here."""

from __future__ import annotations

import random

from hypothesis import given, settings
from hypothesis import strategies as st

from tests.stress.records import HEADER, Checker, Stream, record


def stream_bytes(conn_id: int, total: int, seed: int = 1) -> bytes:
    s = Stream(conn_id, total, seed)
    out = bytearray()
    while not s.done:
        out += s.take(100_000)
    return bytes(out)


def records_of(conn_id: int, n: int) -> list[bytes]:
    return [record(conn_id, i, 50 + i) for i in range(n)]


@settings(max_examples=60, deadline=None)
@given(total=st.integers(0, 300_000), seed=st.integers(0, 2**32), cuts=st.lists(st.integers(1, 70_000), max_size=40))
def test_any_cutting_of_an_intact_stream_is_all_ok(total, seed, cuts):
    data = stream_bytes(7, total, seed)
    c = Checker(7)
    pos = 0
    for n in cuts:
        c.feed(data[pos : pos + n])
        pos += n
    c.feed(data[pos:])
    t = c.finish(len(data))
    assert t.faults == 0
    assert t.ok == len(data)


@settings(max_examples=40, deadline=None)
@given(total=st.integers(2_000, 200_000), cut=st.floats(0, 1))
def test_a_stream_cut_mid_record_is_a_clean_prefix(total, cut):
    data = stream_bytes(9, total)
    part = data[: int(len(data) * cut)]
    c = Checker(9)
    c.feed(part)
    t = c.finish(len(part))
    assert t.faults == 0 and t.ok == len(part)


def test_lost_bytes_are_counted():
    recs = records_of(1, 5)
    c = Checker(1)
    c.feed(b"".join(recs[:3]))
    t = c.finish(sum(map(len, recs)))
    assert t.lost == len(recs[3]) + len(recs[4])


def test_reordered_records_are_counted():
    recs = records_of(1, 4)
    c = Checker(1)
    c.feed(recs[0] + recs[2] + recs[1] + recs[3])
    t = c.finish(sum(map(len, recs)))
    assert t.reordered == len(recs[2]) and t.lost == 0


def test_duplicated_records_are_counted():
    recs = records_of(1, 3)
    c = Checker(1)
    c.feed(recs[0] + recs[1] + recs[1] + recs[2])
    t = c.finish(sum(map(len, recs)))
    assert t.duplicated == len(recs[1])


def test_flipped_bit_is_corruption():
    data = bytearray(b"".join(records_of(1, 3)))
    data[HEADER.size + 10] ^= 0x40
    c = Checker(1)
    c.feed(bytes(data))
    t = c.finish(len(data))
    assert t.corrupted > 0 and "bad checksum" in c.first_fault


def test_another_connections_bytes_are_misdelivered():
    mine, theirs = records_of(1, 2), records_of(2, 1)
    c = Checker(1)
    c.feed(mine[0] + theirs[0] + mine[1])
    t = c.finish(len(mine[0]) + len(mine[1]) + len(theirs[0]))
    assert t.misdelivered == len(theirs[0])
    # A server learns its peer's id, but only among the ids sent its way.
    s = Checker(None, allowed={1})
    s.feed(theirs[0])
    assert s.finish(0, aborted=True).misdelivered == len(theirs[0])


def test_garbage_loses_framing_and_counts_the_rest_as_corrupted():
    c = Checker(1)
    junk = random.Random(3).randbytes(5000)
    c.feed(records_of(1, 1)[0] + junk)
    t = c.finish(0, aborted=True)
    assert c.desync and t.corrupted == len(junk)


def test_a_torn_tail_that_is_not_the_next_record_is_corrupted():
    recs = records_of(1, 3)
    c = Checker(1)
    c.feed(recs[0] + recs[2][:30])  # the start of record 2 where record 1 belongs
    t = c.finish(len(recs[0]) + 30)
    assert t.corrupted == 30
