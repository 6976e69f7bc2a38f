"""Writes one named section of BENCHMARKS.md, leaving the other sections untouched.

Every `tools/bench_*.py` script calls `write_section(name, markdown)`; the section
is delimited by HTML comment markers so that benchmarks run independently and in
any order without clobbering each other's figures.
"""

from __future__ import annotations

import datetime
import json
import os
import platform
import re
import time

import jax
import numpy as np

BENCHMARKS_PATH = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "BENCHMARKS.md")
_HEADER = (
    "# effjax benchmarks\n\n"
    "Each section is written by the script named in it; rerun that script to refresh it.\n"
    "Ratios are measured side by side in one run (the machines are shared and noisy).\n"
)


RAW_DIR = os.path.join(os.path.dirname(BENCHMARKS_PATH), "benchmarks")


def write_raw(name: str, results) -> str:
    """Writes a section's raw results to benchmarks/NAME.json (beside its table); returns the repo-relative path."""
    os.makedirs(RAW_DIR, exist_ok=True)
    path = os.path.join(RAW_DIR, f"{name}.json")
    with open(path, "w") as f:
        json.dump(results, f, indent=1)
    return os.path.relpath(path, os.path.dirname(BENCHMARKS_PATH))


def machine_line() -> str:
    """One line describing where the figures were measured."""
    dev = jax.devices()[0]
    kind = getattr(dev, "device_kind", dev.platform)
    return (
        f"measured {datetime.date.today().isoformat()} on {platform.machine()} "
        f"{os.cpu_count()} cores, jax {jax.__version__}, device: {dev.platform} ({kind}) x{jax.device_count()}"
    )


def write_section(name: str, markdown: str, path: str = BENCHMARKS_PATH) -> None:
    begin, end = f"<!-- begin:{name} -->", f"<!-- end:{name} -->"
    block = f"{begin}\n{markdown.rstrip()}\n{end}"
    text = open(path).read() if os.path.exists(path) else _HEADER
    pattern = re.compile(re.escape(begin) + r".*?" + re.escape(end), re.S)
    text = pattern.sub(lambda _: block, text) if pattern.search(text) else text.rstrip() + "\n\n" + block + "\n"
    with open(path, "w") as f:
        f.write(text)


def interleaved_seconds(fns: dict, rounds: int, iters: int = 1, seed: int = 0) -> dict[str, list[float]]:
    """Seconds per call of each zero-argument function, one sample per round.

    Every round runs the functions in a fresh shuffled order (load changes hit all of
    them alike), and each is called once untimed before its `iters` timed calls, so no
    function is timed on the caches another one left behind. Call each once beforehand
    to compile it.
    """
    order = np.random.default_rng(seed)
    names = list(fns)
    samples = {name: [] for name in names}
    for _ in range(rounds):
        for i in order.permutation(len(names)):
            fn = fns[names[i]]
            jax.block_until_ready(fn())
            start = time.perf_counter()
            for _ in range(iters):
                out = fn()
            jax.block_until_ready(out)
            samples[names[i]].append((time.perf_counter() - start) / iters)
    return samples
