"""One run per workdir: an exclusive lock file holding the owner's pid, host and start time.

The lock is `fcntl.flock` on `<workdir>/.effjax.lock`, the mechanism of Unix
daemons' pid files: the kernel releases it when its process dies, however it dies,
so a lock is never stale while the flock is held and always free once the holder is
gone. The pid written inside is there to be named in the refusal, and to recognize a
lock file left by a dead process, which is taken over with a warning. Only JAX process
0 of a multi-process run takes the lock (every process shares the workdir).
"""

from __future__ import annotations

import errno
import fcntl
import json
import logging
import os
import socket
import time

LOCK_FILE = ".effjax.lock"
log = logging.getLogger("effjax")


class WorkdirLocked(RuntimeError):
    """Another live process holds the workdir."""


def _holder(path: str) -> dict:
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return {}


def _describe(holder: dict) -> str:
    if not holder:
        return "an unknown process"
    started = holder.get("started")
    since = f" since {time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(started))}" if started else ""
    return f"pid {holder.get('pid')} on {holder.get('host')}{since}"


class WorkdirLock:
    """`with WorkdirLock(workdir):` holds the workdir for the block (or `acquire()` / `release()`)."""

    def __init__(self, workdir: str):
        self.path = os.path.join(os.path.abspath(workdir), LOCK_FILE)
        self._fd = None

    def acquire(self) -> "WorkdirLock":
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            os.close(fd)
            if e.errno not in (errno.EAGAIN, errno.EACCES):
                raise
            raise WorkdirLocked(f"workdir {os.path.dirname(self.path)} is in use by {_describe(_holder(self.path))} "
                                f"(lock {self.path}); wait for it to finish, stop it, or use another --workdir") from None
        previous = _holder(self.path)
        if previous.get("pid"):
            log.warning("workdir %s: taking over the lock left by %s, which is no longer running",
                        os.path.dirname(self.path), _describe(previous))
        record = json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "started": time.time()}).encode()
        os.ftruncate(fd, 0)
        os.pwrite(fd, record, 0)
        os.fsync(fd)
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is None:
            return
        os.ftruncate(self._fd, 0)  # an empty lock file is a clean exit; a pid in it, a process that died
        fcntl.flock(self._fd, fcntl.LOCK_UN)
        os.close(self._fd)
        self._fd = None

    def __enter__(self):
        return self.acquire()

    def __exit__(self, *exc):
        self.release()
