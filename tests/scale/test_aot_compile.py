"""Ahead-of-time compilation of the real train step for a TPU topology on this CPU machine."""

import importlib.util
import json
import os
import subprocess
import sys

import pytest

from tests.foundation.helpers import REPO

needs_libtpu = pytest.mark.skipif(importlib.util.find_spec("libtpu") is None,
                                  reason="libtpu not installed (pip install 'effjax[tpu]')")


def _aot(*args):
    env = dict(os.environ, TPU_WORKER_HOSTNAMES="localhost")
    env.pop("JAX_PLATFORMS", None)
    return subprocess.run([sys.executable, "tools/aot_compile.py", *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=300)


@needs_libtpu
def test_small_topology_compiles_and_reports_memory_and_flops():
    proc = _aot("--config=configs/shapes_vit.py", "--topology=v5e:2x2", "--config.train.batch_size=64")
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout
    assert "4 x TPU v5" in out and "arguments" in out and "temporaries" in out
    assert "XLA FLOPs estimate per chip per step" in out and "verdict: fits" in out


@needs_libtpu
def test_config_that_does_not_fit_is_reported_with_numbers():
    proc = _aot("--config=configs/shapes_vit.py", "--topology=v5e:2x2", "--config.train.batch_size=64", "--hbm_gib=0.001")
    assert proc.returncode == 1
    assert "verdict: DOES NOT FIT" in proc.stdout and "needed" in proc.stdout


@needs_libtpu
@pytest.mark.slow  # two compilations for 4 TPU chips: minutes on the shared 2-core machine
def test_fsdp_train_step_and_subnet_forward_report_collectives_and_roofline(tmp_path):
    out = tmp_path / "step.json"
    proc = _aot("--config=configs/shapes_vit.py", "--topology=v5e:2x2", "--config.train.batch_size=64",
                "--config.mesh.fsdp=2", f"--json={out}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(out.read_text())
    assert report["mesh"]["fsdp"] == 2 and report["program"] == "train_step"
    comm = report["collective_bytes_per_chip"]
    assert comm["all-gather"] > 0 or comm["reduce-scatter"] > 0  # fsdp gathers weights / scatters gradients
    assert comm["all-reduce"] > 0
    r = report["roofline"]
    assert r["step_s"] == max(r["compute_s"], r["hbm_s"], r["ici_s"]) and 0 < r["mfu"] <= 1
    assert "roofline step time" in proc.stdout and "MFU" in proc.stdout
    fwd = tmp_path / "fwd.json"
    proc = _aot("--config=configs/shapes_vit.py", "--topology=v5e:2x2", "--config.train.batch_size=64", "--forward",
                f"--json={fwd}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    forward = json.loads(fwd.read_text())
    assert forward["program"] == "forward" and 0 < forward["flops_per_chip"] < report["flops_per_chip"]


def test_collective_bytes_counts_each_result_once():
    from tools.aot_compile import collective_bytes, roofline

    hlo = "\n".join([
        "  %all-reduce.1 = f32[128,256]{1,0} all-reduce(f32[128,256]{1,0} %p), replica_groups={}",
        "  %ag-start = (bf16[4,8]{1,0}, bf16[16,8]{1,0}) all-gather-start(bf16[4,8]{1,0} %x), dimensions={0}",
        "  %ag-done = bf16[16,8]{1,0} all-gather-done((bf16[4,8]{1,0}, bf16[16,8]{1,0}) %ag-start)",
        "  %rs = (f32[2]{0}, f32[3]{0}) reduce-scatter(f32[8]{0} %a, f32[12]{0} %b), dimensions={0}",
        "  %add = f32[128,256]{1,0} add(f32[128,256]{1,0} %all-reduce.1, f32[128,256]{1,0} %q)",
    ])
    got = collective_bytes(hlo)
    assert got["all-reduce"] == 128 * 256 * 4
    assert got["all-gather"] == 16 * 8 * 2
    assert got["reduce-scatter"] == (2 + 3) * 4
    assert got["all-to-all"] == 0
    r = roofline(197e12 * 1e-3, 819e9 * 2e-3, 0.0, "v5e")  # 1 ms compute, 2 ms HBM
    assert r["bound"] == "hbm" and abs(r["step_s"] - 2e-3) < 1e-12 and abs(r["mfu"] - 0.5) < 1e-9
    assert roofline(1.0, 1.0, 1.0, "unknown-chip") == {}


def test_out_of_hbm_compile_error_is_read_as_a_verdict():
    from tools.aot_compile import _out_of_hbm

    message = ("RESOURCE_EXHAUSTED: Ran out of memory on HBM, the total memory required for HLO temporaries "
               "(43.35G) exceeds available HBM (15.75G).")
    assert _out_of_hbm(message) == (43.35, 15.75)
    assert _out_of_hbm("INTERNAL: something else") is None


def test_section_renders_compiled_reports_and_attempts_that_did_not_compile(tmp_path, monkeypatch):
    """A compiled report becomes a row of figures; a recorded failure (a compiler crash leaves no report) a row that
    says so; both commands are listed, and the raw file gets every entry."""
    import tools.aot_compile as aot
    from tools import bench_report

    written = {}
    monkeypatch.setattr(bench_report, "write_raw", lambda name, rows: written.setdefault("raw", rows))
    monkeypatch.setattr(bench_report, "write_section", lambda name, text: written.setdefault("section", text))
    compiled = {"label": "ok run", "program": "forward", "topology": "v5e:2x2", "mesh": {"data": 4, "expert": 1},
                "global_batch": 8, "per_chip_bytes": {"peak_estimate": 2**30}, "hbm_bytes": 16 * 2**30, "fits": True,
                "flops_per_chip": 2e12, "collective_bytes_per_chip": {"all-gather": 2**29},
                "roofline": {"step_s": 0.01, "bound": "hbm", "mfu": 0.25}, "command": "python tools/aot_compile.py --a"}
    failed = {"label": "crashed run", "program": "train_step", "topology": "v5e:16x16", "mesh": {"fsdp": 16, "expert": 16},
              "global_batch": 1024, "failure": "libtpu segfault", "command": "python tools/aot_compile.py --b"}
    paths = []
    for i, report in enumerate((compiled, failed)):
        paths.append(str(tmp_path / f"{i}.json"))
        with open(paths[-1], "w") as f:
            json.dump(report, f)
    assert aot.write_section_from(paths) == 0
    rows = [line for line in written["section"].splitlines() if line.startswith("| ok run") or line.startswith("| crashed")]
    assert rows[0] == "| ok run | forward | v5e:2x2 | data=4 | 8 | 1.00 | 16 | yes | 2.000 | 0.500 | 10.0 | hbm | 25% |"
    assert rows[1] == ("| crashed run | train_step | v5e:16x16 | fsdp=16 expert=16 | 1024 | - | - | did not compile: "
                       "libtpu segfault | - | - | - | - | - |")
    assert "`python tools/aot_compile.py --b`" in written["section"] and written["raw"] == [compiled, failed]


@needs_libtpu
@pytest.mark.slow  # one compilation for 4 TPU chips: ~1.5 min on the shared 2-core machine
def test_supernet_sandwich_step_with_the_predictor_compiles_under_fsdp():
    """The width-switched connectivity predictor at 4 examples per chip with fsdp-sharded parameters: without the
    optimization barrier in `ConnectivityPredictor` libtpu 0.0.42.1 fuses its small dots into one nested convolution
    fusion and crashes (SIGSEGV) emitting it."""
    proc = _aot("--config=configs/supernet.py:shapes", "--topology=v5e:2x2", "--config.train.batch_size=16",
                "--config.mesh.data=1", "--config.mesh.fsdp=4")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "verdict: fits" in proc.stdout


CRASH_ARTIFACT = os.path.join(REPO, "experiments", "libtpu_crash", "sandwich_step_no_barrier.jax_export.gz")


def test_libtpu_crash_artifact_is_the_sandwich_step_without_the_predictor_barrier():
    """The upstream reproducer loads with this JAX and is the TPU program that lacks the barrier."""
    from experiments.libtpu_crash.compile_export import load

    exported = load(CRASH_ARTIFACT)
    assert exported.platforms == ("tpu",) and exported.nr_devices == 4
    module = exported.mlir_module()
    assert "optimization_barrier" not in module
    assert module.count("stablehlo.case") >= 2  # the encoder's and the decoders' width switches


@needs_libtpu
@pytest.mark.slow  # one to three compilations for 4 TPU chips: ~1 min each on the shared 2-core machine
def test_libtpu_still_crashes_on_the_step_without_the_predictor_barrier():
    """When this fails, the installed libtpu compiles the reproducer: `sparse_attention._kept_apart` can go.

    libtpu 0.0.42.1 crashes on most compiles of the artifact, not all (experiments/libtpu_crash/results.jsonl), so
    the test passes on the first of up to three attempts that crashes."""
    env = dict(os.environ, TPU_WORKER_HOSTNAMES="localhost")
    env.pop("JAX_PLATFORMS", None)
    env.pop("LIBTPU_INIT_ARGS", None)
    returncodes = []
    for _ in range(3):
        proc = subprocess.run([sys.executable, "-m", "experiments.libtpu_crash.compile_export",
                               f"--artifact={CRASH_ARTIFACT}"], cwd=REPO, env=env, capture_output=True, text=True,
                              timeout=600)
        returncodes.append(proc.returncode)
        if proc.returncode == -11:  # SIGSEGV
            break
    assert returncodes[-1] == -11, (returncodes, proc.stdout[-2000:])
