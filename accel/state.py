"""The run lock and the state file of an instance (in its state directory).

The lock (flock on ``run.lock``, holding the pid) makes a second ``accel run``
on the same instance refuse with the holder's pid. The state file records what
``run`` attached where, so that ``status`` and ``down`` can act from another
process; they still check the kernel, never trust the file alone.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
from typing import Any

from .errors import AlreadyRunningError, SettingsError
from .settings import Settings


def _ensure_dir(path: str) -> None:
    try:
        os.makedirs(path, mode=0o700, exist_ok=True)
    except OSError as exc:
        raise SettingsError(f"create state directory {path}: {exc.strerror}") from exc


class RunLock:
    def __init__(self, settings: Settings) -> None:
        self.path = settings.lock_path
        self.state_dir = settings.state_dir
        self.fd: int | None = None

    def acquire(self) -> None:
        _ensure_dir(self.state_dir)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(fd)
            if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
                pid = holder_pid(self.path)
                raise AlreadyRunningError(
                    f"start: another accel run (pid {pid if pid else 'unknown'}) holds {self.path}", fix=f"stop it first (accel down, or kill -TERM {pid})"
                ) from None
            raise
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self.fd = fd

    def release(self) -> None:
        if self.fd is not None:
            os.ftruncate(self.fd, 0)
            fcntl.flock(self.fd, fcntl.LOCK_UN)
            os.close(self.fd)
            self.fd = None


def holder_pid(lock_path: str) -> int | None:
    """Pid of the live process holding the lock, or None when nobody does."""
    try:
        fd = os.open(lock_path, os.O_RDONLY)
    except FileNotFoundError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except OSError:
            raw = os.read(fd, 32).decode(errors="replace").strip()
            return int(raw) if raw.isdigit() else -1
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)


def read_state(settings: Settings) -> dict[str, Any]:
    try:
        with open(settings.state_path) as f:
            data = json.load(f)
        return data if isinstance(data, dict) else {}
    except (FileNotFoundError, json.JSONDecodeError):
        return {}


def write_state(settings: Settings, **fields: Any) -> None:
    _ensure_dir(settings.state_dir)
    data = read_state(settings)
    data.update(fields)
    tmp = settings.state_path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(data, f, indent=2, sort_keys=True)
    os.replace(tmp, settings.state_path)


def remove_state(settings: Settings) -> None:
    for path in (settings.state_path, settings.lock_path):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
    with contextlib.suppress(OSError):
        os.rmdir(settings.state_dir)
