"""SIGTERM and SIGINT (Ctrl-C) as a graceful stop, and a second one as an immediate exit.

The preemption contract of MaxText / Orbax-based trainers: the first signal only sets
a flag; the training loop checks it at the next step boundary, saves a checkpoint and
returns. Outside a loop that checks the flag (start-up, the search, the export), the
first signal raises `Interrupted` in the main thread instead, so the caller can say
what was kept and exit without a traceback.

A second signal exits the process at once (status 130 for SIGINT, 143 for SIGTERM),
even while the main thread is inside a long C call such as an XLA compile: Python runs
its signal handlers only between bytecodes, so the count is kept by a watcher thread
that reads the interpreter's wakeup fd (`signal.set_wakeup_fd`), which the C-level
handler writes one byte to per signal, immediately.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading

SIGNALS = (signal.SIGTERM, signal.SIGINT)


class Interrupted(BaseException):
    """Raised in the main thread by the first SIGINT/SIGTERM outside a flag-checking loop.

    A BaseException (like KeyboardInterrupt), so `except Exception` blocks do not swallow it.
    """

    def __init__(self, signum: int):
        self.signum, self.name = signum, signal.Signals(signum).name
        super().__init__(self.name)


def signal_name(signum: int | None) -> str:
    return "a stop signal" if signum is None else signal.Signals(signum).name


def exit_status(signum: int) -> int:
    """The shell's status for a process ended by `signum` (128 + number)."""
    return 128 + int(signum)


class Guard:
    """Installed once per process (`guard()`); `deferred()` switches the first signal to a flag."""

    def __init__(self):
        self.received: int | None = None  # the first signal's number
        self.count = 0
        self.defer_depth = 0
        self.on_second = "exiting at once"  # the end of the line printed on a second signal
        self._lock = threading.Lock()
        self._previous = {}
        self._previous_wakeup = -1
        self._pipe = None
        self._thread = None

    @property
    def requested(self) -> bool:
        return self.received is not None

    def install(self) -> bool:
        if threading.current_thread() is not threading.main_thread():
            return False
        read_fd, write_fd = os.pipe()
        os.set_blocking(write_fd, False)
        self._pipe = (read_fd, write_fd)
        for s in SIGNALS:
            self._previous[s] = signal.signal(s, self._handle)
        self._previous_wakeup = signal.set_wakeup_fd(write_fd, warn_on_full_buffer=False)
        self._thread = threading.Thread(target=self._watch, name="effjax-signal-watcher", daemon=True)
        self._thread.start()
        return True

    def uninstall(self) -> None:
        signal.set_wakeup_fd(self._previous_wakeup)
        for s, handler in self._previous.items():
            signal.signal(s, handler)
        read_fd, write_fd = self._pipe
        os.write(write_fd, b"\0")  # wakes the watcher, which then ends
        self._thread.join(timeout=5)
        os.close(write_fd)
        os.close(read_fd)

    def _watch(self) -> None:
        read_fd = self._pipe[0]
        while True:
            data = os.read(read_fd, 64)
            if not data or b"\0" in data:
                return
            for signum in data:
                if signum in SIGNALS:
                    self._count(signum)

    def _first(self, signum: int) -> None:
        with self._lock:
            if self.received is None:
                self.received = signum

    def _count(self, signum: int) -> None:
        self._first(signum)
        with self._lock:
            self.count += 1
            if self.count < 2:
                return
        name = signal.Signals(signum).name
        sys.stderr.write(f"effjax: second {name}: {self.on_second}\n")
        sys.stderr.flush()
        os._exit(exit_status(self.received))

    def _handle(self, signum, frame) -> None:
        """The Python-level handler (main thread, between bytecodes); the watcher thread does the counting."""
        self._first(signum)
        if self.defer_depth == 0:
            raise Interrupted(self.received)


_ACTIVE: Guard | None = None


@contextlib.contextmanager
def guard():
    """Handles SIGTERM/SIGINT for the enclosed block (re-entrant: an inner call reuses the outer guard).

    Off the main thread signals cannot be handled; the block then runs with the default handlers.
    """
    global _ACTIVE
    if _ACTIVE is not None:
        yield _ACTIVE
        return
    g = Guard()
    if not g.install():
        yield g
        return
    _ACTIVE = g
    try:
        yield g
    finally:
        _ACTIVE = None
        g.uninstall()


@contextlib.contextmanager
def deferred(on_second: str = "exiting at once"):
    """Within the block the first signal only sets `requested`; the loop must check it and stop."""
    with guard() as g:
        previous = g.on_second
        g.defer_depth += 1
        g.on_second = on_second
        try:
            yield g
        finally:
            g.defer_depth -= 1
            g.on_second = previous
