"""Keep freed host memory in the process, so XLA:CPU reuses its temporaries instead of faulting in new pages.

XLA:CPU allocates the temporaries of each execution as one block with `malloc` (the main job's train step: 61 MB).
glibc serves a block above its mmap threshold (32 MiB at most) with a fresh `mmap` and gives it back with `munmap`
on free, so every step touches ~15,000 new zero pages, each a page fault (measured on a 2-core host: 40 ms of kernel
time in a ~100 ms step). With `M_MMAP_MAX = 0` the main heap serves such blocks and, with a high
`M_TRIM_THRESHOLD`, keeps them after free, so the next step reuses the same pages. Blocks that other threads ask for
beyond glibc's per-thread heap size (64 MiB) are still mapped, as before. Memory a run frees stays with the process
up to the trim threshold, which a training process reaches again at its next step anyway.

The setting is process-wide and lasts until exit; `effjax.main` applies it on the CPU backend (flag
`--reuse_host_memory`). Elsewhere (musl, macOS, Windows) there is no `mallopt` and nothing changes.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import platform

M_TRIM_THRESHOLD = -1  # glibc's <malloc.h> parameter numbers
M_MMAP_MAX = -4
TRIM_THRESHOLD_BYTES = 1 << 30


def keep_freed_memory(trim_threshold_bytes: int = TRIM_THRESHOLD_BYTES) -> bool:
    """Stops glibc's `malloc` from mapping large blocks and from returning freed memory below
    `trim_threshold_bytes`; True where that was set (glibc), False where the C library has no `mallopt`."""
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    mallopt = getattr(libc, "mallopt", None)
    if mallopt is None:
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    return bool(mallopt(M_MMAP_MAX, 0)) and bool(mallopt(M_TRIM_THRESHOLD, min(trim_threshold_bytes, 2**31 - 1)))
