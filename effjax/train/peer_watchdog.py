"""Heartbeats between the processes of one multi-process run: a dead peer ends the others with one line.

A process blocked in a collective waits for a dead peer until JAX's coordination
service notices (its heartbeat timeout, 100 s by default) and aborts it with a C++
fatal log. Instead, each process's daemon thread writes a counter to
`<workdir>/.heartbeats/process_<i>` every `interval` seconds and reads the others'. A
peer whose counter has not changed for `timeout` seconds of this process's clock (so
clock skew between hosts does not matter) is taken as dead: this process prints one
line and exits with status 1 through `os._exit`, since its main thread may be stuck
in a collective. It relies on the shared workdir that multi-process checkpoints need.
"""

from __future__ import annotations

import os
import sys
import threading
import time

HEARTBEAT_DIR = ".heartbeats"
DONE = "done"  # written by a process that finished cleanly: it is not waited for any more


class PeerWatchdog:
    def __init__(self, workdir: str, process_id: int, num_processes: int, timeout: float, interval: float = 1.0):
        self.directory = os.path.join(os.path.abspath(workdir), HEARTBEAT_DIR)
        self.process_id, self.num_processes = process_id, num_processes
        self.timeout, self.interval = float(timeout), float(interval)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="effjax-peer-watchdog", daemon=True)

    def _path(self, i: int) -> str:
        return os.path.join(self.directory, f"process_{i}")

    def _beat(self, value) -> None:
        tmp = f"{self._path(self.process_id)}.tmp"
        with open(tmp, "w") as f:
            f.write(str(value))
        os.replace(tmp, self._path(self.process_id))

    def _read(self, i: int) -> str | None:
        try:
            with open(self._path(i)) as f:
                return f.read()
        except OSError:
            return None

    def _run(self) -> None:
        start = time.monotonic()
        last = {i: (self._read(i), start) for i in range(self.num_processes) if i != self.process_id}
        count = 0
        while not self._stop.wait(self.interval):
            count += 1
            try:
                self._beat(count)
            except OSError:
                pass  # a full or vanished workdir is reported by the main thread
            now = time.monotonic()
            for i, (value, since) in last.items():
                current = self._read(i)
                if current == DONE:
                    continue
                if current != value:
                    last[i] = (current, now)
                elif now - since > self.timeout:
                    sys.stderr.write(
                        f"effjax: error: process {i} of {self.num_processes} stopped responding (no heartbeat in "
                        f"{self.directory} for {self.timeout:g} s); process {self.process_id} exits; committed "
                        "checkpoints are kept; restart every process to resume\n")
                    sys.stderr.flush()
                    os._exit(1)

    def start(self) -> "PeerWatchdog":
        os.makedirs(self.directory, exist_ok=True)
        self._beat(0)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        try:
            self._beat(DONE)
        except OSError:
            pass
