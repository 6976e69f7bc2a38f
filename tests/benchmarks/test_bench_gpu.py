"""The GPU benchmark script: its FLOP count, its timing helper, and the BENCHMARKS.md section it writes."""

import json

import jax
import jax.numpy as jnp

from effjax.train.trainer import step_flops
from tools import bench_gpu


def test_step_flops_counts_matmuls_of_the_lowered_program():
    a = jax.ShapeDtypeStruct((64, 32), jnp.float32)
    b = jax.ShapeDtypeStruct((32, 16), jnp.float32)
    assert step_flops(jax.jit(lambda a, b: a @ b).lower(a, b)) == 2 * 64 * 32 * 16


def test_timed_reports_every_function():
    times = bench_gpu.timed({"add": lambda: jnp.ones(4) + 1, "mul": lambda: jnp.ones(4) * 2}, rounds=2, iters=2)
    assert set(times) == {"add", "mul"} and all(t > 0 for t in times.values())


def test_report_renders_measured_parts_and_names_the_missing_ones(tmp_path):
    raw = {"device": {"platform": "gpu", "kind": "NVIDIA H200", "count": 1, "jax": "0.11.2"}, "date": "2026-12-04",
           "quick": False, "notes": ["a note"],
           "parts": {"ceilings": {"n": 8192, "bf16_tflops": 745.0, "f32_tflops": 390.0, "int8_tops": 888.0,
                                  "copy_tb_per_s": 3.2},
                     "trainer": {"ViT-B/16 multi-task (mt_vit), bf16": {
                         "batch": 128, "step_ms": 50.0, "examples_per_s": 2560.0, "tflops_per_s": 247.3,
                         "mfu_vs_datasheet_bf16": 0.25}, "wall_s": 90.0},
                     "moe": {"rows": [{"case": [16, 1024, 768, 1536, 16, 2, 1.25], "dtype": "bfloat16",
                                       "ms": {"gather": 2.0, "sorted": 8.0}, "errors": {}}]}}}
    raw_path, md = tmp_path / "gpu.json", tmp_path / "BENCHMARKS.md"
    raw_path.write_text(json.dumps(raw))
    text = bench_gpu.report(str(raw_path), str(md))
    assert "NVIDIA H200" in text and "| 247.3 | 25.0% | 33.2% |" in text  # 247.3 / 745 of the measured matmul
    assert "| 4.00 |" in text  # sorted / gather
    assert "Not in the raw results: attention, serving, supernet" in text and "Note: a note" in text
    assert "<!-- begin:gpu -->" in md.read_text()
