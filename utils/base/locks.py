"""Exclusive locks on output folders and files, so two processes never write the same run or scan.

The lock is an advisory ``fcntl.flock`` on a small file beside the locked path (``.<name>.lock`` in
the same parent folder), not inside it: a run folder may be removed and re-created under its lock
(``--overwrite``). The kernel drops the lock when its process ends, however it ends, so a lock left
behind by a killed process never blocks a later resume; only a *living* holder does. The lock file
records the holder's PID, host and command line for the refusal message; the file itself stays (an
empty-handed stale file is harmless).
"""

import contextlib
import fcntl
import json
import os
import socket
import sys
from pathlib import Path

from utils.base.errors import RunDirectoryError

# Locks held by this process, by resolved path: a process may lock a path once and keeps it until exit.
_HELD = {}


def lock_file_for(path):
    """The lock file guarding ``path``."""
    path = Path(path).absolute()
    return path.parent / f".{path.name}.lock"


def acquire(path):
    """Lock ``path`` for this process until it exits (or :func:`release`); idempotent within a process.

    Raises:
        RunDirectoryError: another living process holds the lock; the message names ``path`` and the
            holder (PID, host, command).
    """
    key = str(Path(path).absolute())
    if key in _HELD:
        return
    lock_path = lock_file_for(path)
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    handle = open(lock_path, "a+", encoding="utf-8")  # noqa: SIM115 - kept open while the lock is held
    try:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.seek(0)
        holder = _describe_holder(handle.read())
        handle.close()
        raise RunDirectoryError(f"{path} is in use by another process ({holder}); wait for it to end or choose another output") from None
    handle.seek(0)
    handle.truncate()
    handle.write(json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "command": " ".join(sys.argv)}) + "\n")
    handle.flush()
    _HELD[key] = handle


def release(path):
    """Give up this process's lock on ``path`` (no-op when not held)."""
    handle = _HELD.pop(str(Path(path).absolute()), None)
    if handle is not None:
        fcntl.flock(handle.fileno(), fcntl.LOCK_UN)
        handle.close()


@contextlib.contextmanager
def locked(path):
    """Hold the lock on ``path`` for the duration of the block."""
    acquire(path)
    try:
        yield
    finally:
        release(path)


def _describe_holder(text):
    try:
        holder = json.loads(text)
        return f"PID {holder['pid']} on {holder['host']}: {holder['command']}"
    except (ValueError, KeyError, TypeError):
        return "holder unknown"
