"""Self-checking byte streams: every stream is a sequence of framed records,
so a receiver can tell, byte for byte, what was lost, reordered, duplicated,
corrupted or delivered to the wrong connection.

A record is ``magic | conn_id | seq | length | payload | crc32``. The payload
is a slice of one shared random pool chosen by (conn_id, seq), so writers and
checkers need no per-connection memory beyond a small buffer. How the stream is
cut into write() calls is independent of record boundaries: that is the point.
"""

from __future__ import annotations

import random
import struct
import zlib
from dataclasses import dataclass, fields

MAGIC = b"ACCL"
HEADER = struct.Struct("<4sQQI")  # magic, conn_id, seq, payload length
TRAILER = struct.Struct("<I")  # crc32 of header + payload
OVERHEAD = HEADER.size + TRAILER.size
POOL_SIZE = 4 << 20
MAX_RECORD = 256 << 10
_POOL = random.Random(0xACCE1).randbytes(POOL_SIZE)


def _payload(conn_id: int, seq: int, length: int) -> memoryview:
    off = (conn_id * 2654435761 + seq * 40503) % (POOL_SIZE - length)
    return memoryview(_POOL)[off : off + length]


def record(conn_id: int, seq: int, length: int) -> bytes:
    head = HEADER.pack(MAGIC, conn_id, seq, length)
    body = _payload(conn_id, seq, length)
    crc = zlib.crc32(body, zlib.crc32(head))
    return b"".join((head, body, TRAILER.pack(crc)))


def record_size(rng: random.Random) -> int:
    """Log-uniform payload sizes: many tiny records, some large ones."""
    return min(MAX_RECORD, int(2 ** rng.uniform(0, 18)))


class Stream:
    """The bytes one side sends on one connection, produced on demand."""

    def __init__(self, conn_id: int, total: int, seed: int) -> None:
        self.conn_id = conn_id
        self.rng = random.Random(seed)
        self.remaining_budget = total
        self.seq = 0
        self.buf = bytearray()
        self.produced = 0  # bytes handed out so far

    def _refill(self, want: int) -> None:
        while len(self.buf) < want and self.remaining_budget > 0:
            length = min(record_size(self.rng), max(0, self.remaining_budget - OVERHEAD))
            rec = record(self.conn_id, self.seq, length)
            self.seq += 1
            self.remaining_budget -= len(rec)
            self.buf += rec

    def peek(self, n: int) -> bytes:
        self._refill(n)
        return bytes(self.buf[:n])

    def consume(self, n: int) -> None:
        del self.buf[:n]
        self.produced += n

    def take(self, n: int) -> bytes:
        data = self.peek(n)
        self.consume(len(data))
        return data

    @property
    def done(self) -> bool:
        return self.remaining_budget <= 0 and not self.buf


@dataclass
class Tally:
    """Byte counts by verdict. Everything but ``ok`` must stay 0."""

    ok: int = 0
    lost: int = 0
    reordered: int = 0
    duplicated: int = 0
    corrupted: int = 0
    misdelivered: int = 0

    def add(self, other: Tally) -> None:
        for f in fields(self):
            setattr(self, f.name, getattr(self, f.name) + getattr(other, f.name))

    @property
    def faults(self) -> int:
        return self.lost + self.reordered + self.duplicated + self.corrupted + self.misdelivered

    def as_dict(self) -> dict[str, int]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


class Checker:
    """Parses a received stream and sorts every byte into a Tally.

    ``conn_id`` None: learn it from the first record (a server does not know
    which client connected). After a framing error the rest of the stream is
    unparseable and counted as corrupted.
    """

    def __init__(self, conn_id: int | None = None, allowed: set[int] | None = None) -> None:
        self.conn_id = conn_id
        self.allowed = allowed  # with conn_id None: the ids this end may see
        self.buf = bytearray()
        self.received = 0
        self.expected_seq = 0
        self.seen: set[int] = set()
        self.tally = Tally()
        self.desync = False
        self.first_fault = ""  # what went wrong first, for the report

    def feed(self, data: bytes) -> None:
        self.received += len(data)
        if self.desync:
            self.tally.corrupted += len(data)
            return
        self.buf += data
        self._parse()

    def _parse(self) -> None:
        pos = 0
        buf = self.buf
        while len(buf) - pos >= HEADER.size:
            magic, conn_id, seq, length = HEADER.unpack_from(buf, pos)
            if magic != MAGIC or length > MAX_RECORD:
                self._note(f"framing lost at byte {self.received - len(buf) + pos}: {bytes(buf[pos : pos + 8]).hex()}")
                self.desync = True
                self.tally.corrupted += len(buf) - pos
                pos = len(buf)
                break
            size = HEADER.size + length + TRAILER.size
            if len(buf) - pos < size:
                break
            self._judge(buf, pos, conn_id, seq, length, size)
            pos += size
        del buf[:pos]

    def _judge(self, buf: bytearray, pos: int, conn_id: int, seq: int, length: int, size: int) -> None:
        if self.conn_id is None and (self.allowed is None or conn_id in self.allowed):
            self.conn_id = conn_id
        if conn_id != self.conn_id:
            self._note(f"record of connection {conn_id} on connection {self.conn_id}")
            self.tally.misdelivered += size
            return
        view = memoryview(buf)[pos : pos + size]
        (crc,) = TRAILER.unpack_from(view, HEADER.size + length)
        body = view[HEADER.size : HEADER.size + length]
        if crc != zlib.crc32(body, zlib.crc32(view[: HEADER.size])) or body != _payload(conn_id, seq, length):
            self._note(f"record {seq} of connection {conn_id}: bad checksum or content")
            self.tally.corrupted += size
            return
        if seq in self.seen:
            self.tally.duplicated += size
            return
        self.seen.add(seq)
        if seq != self.expected_seq:
            self.tally.reordered += size
        else:
            self.tally.ok += size
        while self.expected_seq in self.seen:
            self.expected_seq += 1

    def _note(self, what: str) -> None:
        if not self.first_fault:
            self.first_fault = what

    def _is_next_prefix(self) -> bool:
        """The tail is the start of the next record (a stream cut mid-record)."""
        conn_id = self.conn_id
        if conn_id is None:  # not one whole record yet: take the id from the header
            if len(self.buf) < 12:
                return MAGIC.startswith(bytes(self.buf[:4]))
            conn_id = int.from_bytes(self.buf[4:12], "little")
            if self.allowed is not None and conn_id not in self.allowed:
                return False
        if len(self.buf) >= HEADER.size:
            length = HEADER.unpack_from(self.buf)[3]
            if length > MAX_RECORD:
                return False
        else:
            length = 0  # the length field is not complete: compare what is there
        want = record(conn_id, self.expected_seq, length)
        n = min(len(self.buf), len(want) if len(self.buf) >= HEADER.size else HEADER.size - 4)
        return len(self.buf) < len(want) and bytes(self.buf[:n]) == want[:n]

    def finish(self, expected_bytes: int, aborted: bool = False) -> Tally:
        """Close the books: bytes never received are lost, unless the stream
        was cut on purpose (``aborted``), where only a clean prefix counts."""
        if self.buf and not self.desync:
            # A cut stream ends inside a record: fine if it is the right prefix.
            if self._is_next_prefix():
                self.tally.ok += len(self.buf)
            else:
                self._note(f"{len(self.buf)} bytes at the end are not the start of record {self.expected_seq}")
                self.tally.corrupted += len(self.buf)
        if not aborted and self.received < expected_bytes:
            self.tally.lost += expected_bytes - self.received
        return self.tally
