"""`keep_freed_memory`: a large block freed and allocated again reuses its pages instead of faulting in new ones."""

import platform
import subprocess
import sys

import pytest

pytestmark = pytest.mark.skipif(platform.system() != "Linux" or platform.libc_ver()[0] != "glibc",
                                reason="mallopt is glibc's")

# A 64 MiB block (above glibc's largest mmap threshold, as XLA:CPU's train-step temporaries are), written, freed and
# allocated again three times; prints the page faults of the three rounds.
CHILD = """
import ctypes, resource, sys
from effjax.train import host_memory
if sys.argv[1] == "keep":
    assert host_memory.keep_freed_memory()
libc = ctypes.CDLL("libc.so.6")
libc.malloc.restype, libc.malloc.argtypes = ctypes.c_void_p, (ctypes.c_size_t,)
libc.free.argtypes = (ctypes.c_void_p,)
size = 64 << 20
def write_and_free():
    block = libc.malloc(size)
    ctypes.memset(block, 1, size)
    libc.free(block)
write_and_free()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(3):
    write_and_free()
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def page_faults(mode: str) -> int:
    out = subprocess.run([sys.executable, "-c", CHILD, mode], capture_output=True, text=True, check=True)
    return int(out.stdout.strip())


def test_a_freed_large_block_is_reused_without_page_faults():
    pages = 3 * (64 << 20) // 4096
    assert page_faults("default") > pages // 2  # glibc maps each round afresh: one fault per 4 KiB page (or so)
    assert page_faults("keep") < pages // 50

