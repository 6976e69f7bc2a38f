"""The XLA flags of the test session (set by tests/conftest.py before JAX is imported).

The tests' programs are tiny and run a few times each, so compiling them is most of the suite's time. LLVM's
optimization level 0 without its expensive passes halves that (the tiny main job: 109 s -> 56 s; the default suite on
a 2-core AMD EPYC: 22 min 10 s -> 12 min 51 s). It changes float results at rounding level (no fused multiply-add,
another instruction order), which training amplifies, so the golden cases, which hold what users' programs compute,
are recomputed under the production flags (`production_flags`).
"""

SIMULATED_DEVICES = "--xla_force_host_platform_device_count=8"
FAST_COMPILE = ("--xla_backend_optimization_level=0", "--xla_llvm_disable_expensive_passes=true")


def session_flags(user_flags: str) -> str:
    return " ".join((user_flags, SIMULATED_DEVICES, *FAST_COMPILE)).strip()


def production_flags(flags: str) -> str:
    """`flags` without the fast-compile ones."""
    return " ".join(f for f in flags.split() if f not in FAST_COMPILE)
