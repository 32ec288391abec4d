"""Capture what C libraries (libbcc, clang, libbpf) write to fd 2.

bcc prints compiler diagnostics and the verifier log straight to stderr; we
want them inside our typed errors (and out of the user's terminal on success).
"""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
from collections.abc import Iterator


class Captured:
    text: str = ""

    def tail(self, lines: int = 25) -> str:
        return "\n".join(self.text.rstrip().splitlines()[-lines:])


@contextlib.contextmanager
def capture_fd2() -> Iterator[Captured]:
    out = Captured()
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile(mode="w+b") as tmp:
        os.dup2(tmp.fileno(), 2)
        try:
            yield out
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            tmp.seek(0)
            out.text = tmp.read().decode(errors="replace")
