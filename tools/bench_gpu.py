"""GPU benchmarks in one run: ceilings, trainer MFU in bf16, block-sparse attention, MoE dispatch, int8 serving.

Meant for one short lease of an accelerator host: every part runs in one process, in
order of importance, and the raw results are written after each part (a later failure
loses nothing). Then the `gpu` section of BENCHMARKS.md is written from that file on any
machine:

  python -m tools.bench_gpu --out=/tmp/gpu.json          # on the GPU host
  python -m tools.bench_gpu --report=benchmarks/gpu.json  # anywhere: the BENCHMARKS.md section

Parts (each time is the median of interleaved rounds, every round ending in
`block_until_ready`):
  - ceilings: an 8192^3 matmul in bf16, f32 (XLA's default precision) and int8 x int8 -> int32,
    and a device-to-device copy; the roofs the other figures are read against;
  - trainer: effjax's `train_and_evaluate` on a ViT-B/16 multi-task model at 224 x 224 (bf16
    compute), TFLOP/s as the trainer logs it (`train/tflops_per_s`: XLA's cost analysis of
    the lowered step) and MFU against the datasheet bf16 peak;
  - attention: dense (XLA einsums, cuDNN fused attention, the Pallas flash kernel of
    jax.experimental) against effjax's block-sparse path (XLA gathers + block matmuls) and its
    Pallas kernel, with the FLOPs ratio the block path computes;
  - moe: the dispatch paths of `tools.bench_moe_dispatch`, forward + backward, at its sizes and
    at ViT-B size;
  - serving: the exported shapes supernet, float predict vs integer predict (int8 x int8 Dense
    matmuls), and bare matmuls of a ViT-B MLP;
  - supernet: the trainer's figures for the supernet at that size (sandwich step: widths, Sparsifiner
    attention, MoE, QAT bits); last, as its compilation is the longest.

`--quick` shrinks every size so the whole script runs on a CPU in a few minutes (the check
that the script itself works; its figures mean nothing).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
import traceback

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402

from tools.bench_report import interleaved_seconds  # noqa: E402

BF16_DATASHEET_TFLOPS = {"H200": 989.0, "H100": 989.0, "A100": 312.0}  # dense bf16, vendor datasheets
PARTS = ("ceilings", "trainer", "attention", "moe", "serving", "supernet")
VIT_B = {"image_size": 224, "patch_size": 16, "hidden_dim": 768, "num_layers": 12, "num_heads": 12,
         "mlp_dim": 3072, "decoder_dim": 768}
SUPERNET_MOE = {False: {"num_experts": 16, "expert_dim": 1536}, True: {"num_experts": 4, "expert_dim": 64}}  # by quick
VIT_QUICK = {"image_size": 32, "patch_size": 8, "hidden_dim": 64, "num_layers": 2, "num_heads": 4,
             "mlp_dim": 128, "decoder_dim": 64}


def timed(fns: dict, rounds: int, iters: int = 1) -> dict[str, float]:
    """Median seconds per call of each zero-argument fn, over interleaved rounds of `iters` calls."""
    for fn in fns.values():
        jax.block_until_ready(fn())
    return {name: statistics.median(s) for name, s in interleaved_seconds(fns, rounds, iters).items()}


def device_info() -> dict:
    dev = jax.devices()[0]
    info = {"platform": dev.platform, "kind": getattr(dev, "device_kind", dev.platform),
            "count": jax.device_count(), "jax": jax.__version__}
    try:
        import flax

        info["flax"] = flax.__version__
    except ImportError:
        pass
    return info


def datasheet_peak(kind: str) -> float | None:
    return next((v * 1e12 for k, v in BF16_DATASHEET_TFLOPS.items() if k in kind), None)


# ---------------------------------------------------------------- ceilings

def ceilings(quick: bool) -> dict:
    n = 512 if quick else 8192
    keys = jax.random.split(jax.random.PRNGKey(0), 2)
    a32, b32 = (jax.random.normal(k, (n, n), jnp.float32) for k in keys)
    a16, b16 = a32.astype(jnp.bfloat16), b32.astype(jnp.bfloat16)
    a8, b8 = (jnp.clip(jnp.round(x * 40), -127, 127).astype(jnp.int8) for x in (a32, b32))
    mm = jax.jit(lambda a, b: a @ b)
    mm8 = jax.jit(lambda a, b: jax.lax.dot_general(a, b, (((1,), (0,)), ((), ())), preferred_element_type=jnp.int32))
    copy_elems = (1 << 20) if quick else (1 << 30)  # 2 GiB of bf16
    x = jnp.ones((copy_elems,), jnp.bfloat16)
    copy = jax.jit(lambda x: x + jnp.asarray(1, x.dtype))
    t = timed({"bf16": lambda: mm(a16, b16), "f32": lambda: mm(a32, b32), "int8": lambda: mm8(a8, b8),
               "copy": lambda: copy(x)}, rounds=5, iters=5)
    ops = 2 * n**3
    return {"n": n, "bf16_tflops": ops / t["bf16"] / 1e12, "f32_tflops": ops / t["f32"] / 1e12,
            "int8_tops": ops / t["int8"] / 1e12, "copy_tb_per_s": 2 * 2 * copy_elems / t["copy"] / 1e12,
            "ms": {k: 1e3 * v for k, v in t.items()}}


# ---------------------------------------------------------------- trainer

def _trainer_config(spec: str, dtype: str, batch: int, steps: int, quick: bool, extra: dict):
    from effjax.config.load import load_config

    c = load_config(spec)
    dims = VIT_QUICK if quick else VIT_B
    c.data.image_size = dims["image_size"]
    for key in ("patch_size", "hidden_dim", "num_layers", "num_heads", "mlp_dim", "decoder_dim"):
        setattr(c.model, key, dims[key])
    for key, value in extra.items():
        setattr(c.model, key, value)
    if c.model.sparse_layers:  # a connectivity predictor in every block, whatever the depth
        c.model.sparse_layers = tuple(range(c.model.num_layers))
    c.model.dtype = dtype
    c.data.num_train, c.data.num_val, c.data.num_test = 2 * batch, 8, 8
    c.train.batch_size = batch
    c.train.num_steps = steps
    c.eval.every_steps = c.checkpoint.every_steps = 10**9
    c.log.every_steps = 10
    c.log.progress_bar = False
    return c


def _train_once(config) -> dict:
    from effjax.train.trainer import train_and_evaluate
    from tests.scale.procs import tensorboard_scalars

    with tempfile.TemporaryDirectory() as workdir:
        start = time.perf_counter()
        train_and_evaluate(config, workdir, devices=jax.devices()[:1])
        wall = time.perf_counter() - start
        step_s = tensorboard_scalars(workdir, "train/step_time_s")
        tflops = tensorboard_scalars(workdir, "train/tflops_per_s")
    later = sorted(step_s)[1:]  # the first window holds compilation
    return {"step_ms": 1e3 * statistics.median(step_s[s] for s in later),
            "tflops_per_s": statistics.median(tflops[s] for s in later), "wall_s": wall,
            "first_window_step_ms": 1e3 * step_s[min(step_s)]}


def lowered_train_flops(config) -> float:
    """FLOPs of one step of the trainer's own train step for `config`, from its lowered program (any backend)."""
    from effjax.train import objectives
    from effjax.train.setup import build
    from effjax.train.trainer import step_flops

    setup = build(config, jax.devices()[:1])
    batch = {k: jax.ShapeDtypeStruct((config.train.batch_size,) + v.shape[1:], v.dtype)
             for k, v in setup.dataset.splits["train"].items()}
    step = jax.jit(objectives.build_train_step(setup, config))
    return step_flops(step.lower(setup.abstract_state, batch, jax.random.PRNGKey(0)))


def recount(raw_path: str) -> None:
    """Rewrites the trainer rows of a raw file measured before the trainer counted FLOPs on the lowered
    program (a GPU's compiled program hides its library matmuls): TFLOP/s and MFU from the lowered count."""
    results = json.load(open(raw_path))
    peak = datasheet_peak(results["device"]["kind"])
    for part in ("trainer", "supernet"):
        for name, row in results["parts"].get(part, {}).items():
            if not isinstance(row, dict) or "step_ms" not in row:
                continue
            extra = SUPERNET_MOE[results["quick"]] if part == "supernet" else {}
            flops = lowered_train_flops(_trainer_config(row["config"], row["dtype"], row["batch"], row["steps"],
                                                        results["quick"], extra))
            row["compiled_count_tflops_per_s"] = row["tflops_per_s"]
            row["step_tflop"] = flops / 1e12
            row["tflops_per_s"] = flops / (row["step_ms"] / 1e3) / 1e12
            if peak:
                row["mfu_vs_datasheet_bf16"] = row["tflops_per_s"] * 1e12 / peak
            row["flops_recounted"] = f"lowered program, on {jax.default_backend()} with jax {jax.__version__}"
            print(name, row["step_tflop"], row["tflops_per_s"], flush=True)
    with open(raw_path, "w") as f:
        json.dump(results, f, indent=1)


def _train_runs(runs: dict, quick: bool) -> dict:
    steps = 20 if quick else 40
    peak = datasheet_peak(device_info()["kind"])
    out = {}
    for name, (spec, dtype, batch, extra) in runs.items():
        try:
            row = _train_once(_trainer_config(spec, dtype, batch, steps, quick, extra))
            row.update({"config": spec, "dtype": dtype, "batch": batch, "steps": steps,
                        "examples_per_s": batch / (row["step_ms"] / 1e3)})
            if peak:
                row["mfu_vs_datasheet_bf16"] = row["tflops_per_s"] * 1e12 / peak
        except Exception as e:  # noqa: BLE001 - one failing model must not lose the others
            row = {"error": f"{type(e).__name__}: {e}", "traceback": traceback.format_exc()[-3000:]}
        print(name, {k: v for k, v in row.items() if k != "traceback"}, flush=True)
        out[name] = row
    return out


def trainer(quick: bool) -> dict:
    return _train_runs({"ViT-B/16 multi-task (mt_vit), bf16": ("configs/shapes_vit.py", "bfloat16",
                                                              8 if quick else 128, {})}, quick)


def supernet(quick: bool) -> dict:
    return _train_runs({"ViT-B/16 supernet sandwich (super_vit), bf16": ("configs/supernet.py:shapes", "bfloat16",
                                                                        8 if quick else 64, SUPERNET_MOE[quick])}, quick)


# ---------------------------------------------------------------- attention

def attention(quick: bool) -> dict:
    from effjax.models.block_sparse_kernel import block_sparse_attention_pallas
    from effjax.models import block_sparse as bs
    from effjax.models import sparse_attention as sa

    heads, d, dtype = (2, 32, jnp.float32) if quick else (12, 64, jnp.bfloat16)
    sizes = ((256, 2),) if quick else ((1024, 16), (4096, 4), (16384, 1))  # (tokens, batch): 16k tokens a step
    rhos, blocks = ((0.25,), (64,)) if quick else ((0.25, 0.1), (64, 128))
    interpret = jax.default_backend() == "cpu"
    scale = d**-0.5
    flash = _pallas_flash(scale)
    rows = []
    for n, batch in sizes:
        keys = jax.random.split(jax.random.PRNGKey(n), 4)
        q, k, v = (jax.random.normal(key, (batch, heads, n, d), dtype) for key in keys[:3])
        dense = lambda q, k, v: sa.dense_attention(q, k, v, scale)[0]  # noqa: E731
        grad = lambda f: jax.jit(jax.grad(lambda q, k, v, *r: jnp.sum(f(q, k, v, *r).astype(jnp.float32) ** 2),  # noqa: E731
                                          argnums=(0, 1, 2)))
        fns = {"dense xla fwd": (jax.jit(dense), (q, k, v)), "dense xla fwd+bwd": (grad(dense), (q, k, v))}
        bthd = lambda x: jnp.swapaxes(x, 1, 2)  # noqa: E731
        cudnn = lambda q, k, v: jax.nn.dot_product_attention(bthd(q), bthd(k), bthd(v), scale=scale,  # noqa: E731
                                                             implementation="cudnn")
        if not interpret:
            fns["dense cudnn fwd"] = (jax.jit(cudnn), (q, k, v))
            fns["dense cudnn fwd+bwd"] = (grad(cudnn), (q, k, v))
            if flash is not None:
                fns["dense pallas flash fwd"] = (jax.jit(flash), (q, k, v))
        selections = {(rho, b): bs.random_key_blocks(keys[3], (batch, heads), n, rho, b) for rho in rhos for b in blocks}
        for (rho, b), idx in selections.items():
            xla = lambda q, k, v, i, b=b: bs.block_sparse_attention(q, k, v, i, scale, b)[0]  # noqa: E731
            pal = lambda q, k, v, i, b=b: block_sparse_attention_pallas(q, k, v, i, scale, b,  # noqa: E731
                                                                        interpret=interpret)[0]
            fns[f"rho{rho} b{b} xla fwd"] = (jax.jit(xla), (q, k, v, idx))
            fns[f"rho{rho} b{b} xla fwd+bwd"] = (grad(xla), (q, k, v, idx))
            fns[f"rho{rho} b{b} pallas fwd"] = (jax.jit(pal), (q, k, v, idx))
        usable, errors = {}, {}
        for name, (fn, args) in fns.items():
            try:
                jax.block_until_ready(fn(*args))
                usable[name] = (lambda fn=fn, args=args: fn(*args))
            except Exception as e:  # noqa: BLE001 - a path this backend cannot compile is reported, not fatal
                errors[name] = f"{type(e).__name__}: {str(e)[:400]}"
        t = timed(usable, rounds=3 if quick else 7)
        row = {"n": n, "batch": batch, "heads": heads, "head_dim": d, "dtype": str(jnp.dtype(dtype)),
               "ms": {k: 1e3 * v for k, v in t.items()}, "errors": errors, "blocks": {}}
        for (rho, b), idx in selections.items():
            f = bs.block_sparse_flops(n, d, heads, rho, b)
            entry = {"kept_blocks": f["kept_blocks"], "dense_over_block_flops": f["dense_flops"] / f["block_flops"]}
            try:
                ref = bs.block_sparse_attention(q, k, v, idx, scale, b)[0].astype(jnp.float32)
                got = block_sparse_attention_pallas(q, k, v, idx, scale, b, interpret=interpret)[0]
                entry["pallas_vs_xla_rel_l2"] = float(jnp.linalg.norm(got.astype(jnp.float32) - ref)
                                                      / jnp.linalg.norm(ref))
            except Exception as e:  # noqa: BLE001
                entry["pallas_vs_xla_error"] = f"{type(e).__name__}: {str(e)[:300]}"
            row["blocks"][f"rho{rho} b{b}"] = entry
        print("attention", n, {k: round(v, 3) for k, v in row["ms"].items()}, errors or "", flush=True)
        rows.append(row)
    return {"rows": rows}


def _pallas_flash(scale: float):
    """jax.experimental's Pallas (Triton) flash attention as a dense fused baseline, where it imports."""
    try:
        from jax.experimental.pallas.ops.gpu import attention as flash_attention
    except ImportError:
        return None

    def run(q, k, v):
        out = flash_attention.mha(jnp.swapaxes(q, 1, 2), jnp.swapaxes(k, 1, 2), jnp.swapaxes(v, 1, 2),
                                  segment_ids=None, sm_scale=scale)
        return jnp.swapaxes(out, 1, 2)

    return run


# ---------------------------------------------------------------- moe

def moe_dispatch(quick: bool) -> dict:
    from effjax.models import moe
    from tools.bench_moe_dispatch import CASES, METHODS, _layer_fn

    cases = CASES[:1] if quick else CASES + ((16, 1024, 768, 1536, 16, 2, 1.25),)
    rows = []
    for case in cases:
        g, s, d, m, e, k, cf = case
        dtype = jnp.bfloat16 if d >= 768 else jnp.float32
        keys = jax.random.split(jax.random.PRNGKey(0), 4)
        x = jax.random.normal(keys[0], (g, s, d), dtype)
        router = (0.1 * jax.random.normal(keys[1], (d, e))).astype(dtype)
        w = moe.ExpertWeights(*(a.astype(dtype) for a in (0.1 * jax.random.normal(keys[2], (e, d, m)), jnp.zeros((e, m)),
                                                           0.1 * jax.random.normal(keys[3], (e, m, d)),
                                                           jnp.zeros((e, d)))))
        capacity = moe.expert_capacity(s, e, k, cf)
        fns, errors = {}, {}
        for method in METHODS:
            fn = _layer_fn(method, capacity)
            try:
                jax.block_until_ready(fn(x, router, w))
                fns[method] = (lambda fn=fn: fn(x, router, w))
            except Exception as err:  # noqa: BLE001
                errors[method] = f"{type(err).__name__}: {str(err)[:300]}"
        t = timed(fns, rounds=3 if quick else 15)
        rows.append({"case": list(case), "dtype": str(jnp.dtype(dtype)), "capacity": capacity,
                     "ms": {k: 1e3 * v for k, v in t.items()}, "errors": errors})
        print("moe", case, {k: round(1e3 * v, 3) for k, v in t.items()}, errors or "", flush=True)
    return {"rows": rows}


# ---------------------------------------------------------------- serving

def serving(quick: bool) -> dict:
    from tools.bench_int_export import serving_rows

    out = {}
    for batch in ((8,) if quick else (4096,)):
        rows, mc = serving_rows(batch, 3 if quick else 15)
        out[f"batch {batch}"] = [{k: v for k, v in r.items() if k != "samples_ms"} for r in rows]
    m, kdim, ndim = (512, 64, 128) if quick else (16 * 197 * 16, 768, 3072)  # a ViT-B MLP matmul, 256 images
    keys = jax.random.split(jax.random.PRNGKey(0), 2)
    x, w = jax.random.normal(keys[0], (m, kdim)), jax.random.normal(keys[1], (kdim, ndim))
    x8, w8 = (jnp.clip(jnp.round(a * 30), -127, 127).astype(jnp.int8) for a in (x, w))
    x16, w16 = x.astype(jnp.bfloat16), w.astype(jnp.bfloat16)
    mm = jax.jit(lambda a, b: a @ b)
    mm8 = jax.jit(lambda a, b: jax.lax.dot_general(a, b, (((1,), (0,)), ((), ())), preferred_element_type=jnp.int32))
    t = timed({"f32": lambda: mm(x, w), "bf16": lambda: mm(x16, w16), "int8 x int8": lambda: mm8(x8, w8)},
              rounds=3 if quick else 15, iters=5)
    out["bare_matmul"] = {"shape": [m, kdim, ndim], "ms": {k: 1e3 * v for k, v in t.items()}}
    print("serving matmul", out["bare_matmul"], flush=True)
    return out


RUNNERS = {"ceilings": ceilings, "trainer": trainer, "attention": attention, "moe": moe_dispatch, "serving": serving,
           "supernet": supernet}


def measure(out_path: str, parts: list[str], quick: bool) -> None:
    results = {"device": device_info(), "date": time.strftime("%Y-%m-%d"), "quick": quick, "parts": {}}
    print(results["device"], flush=True)
    for part in parts:
        start = time.perf_counter()
        try:
            results["parts"][part] = RUNNERS[part](quick)
        except Exception as e:  # noqa: BLE001 - keep the other parts' figures
            results["parts"][part] = {"error": f"{type(e).__name__}: {e}", "traceback": traceback.format_exc()[-4000:]}
            print(part, "FAILED", results["parts"][part]["traceback"], flush=True)
        results["parts"][part]["wall_s"] = time.perf_counter() - start
        with open(out_path, "w") as f:
            json.dump(results, f, indent=1)
        print(f"== {part} done in {results['parts'][part]['wall_s']:.0f} s", flush=True)


# ---------------------------------------------------------------- report

def _fmt(x, digits=2) -> str:
    return "-" if x is None else f"{x:.{digits}f}"


def _pct(x) -> str:
    return "-" if x is None else f"{100 * x:.1f}%"


def _report_trainer(part: dict, ceil: dict) -> list[str]:
    measured = ceil.get("bf16_tflops")
    lines = ["**Trainer** (`train_and_evaluate`, 40 steps, median of the 10-step windows after the first; TFLOP/s from "
             "XLA's cost analysis of the lowered step, before the backend hands matmuls to libraries; it counts every "
             "configuration the sandwich step runs):", "",
             "| run | batch | ms / step | examples / s | TFLOP/s | MFU vs datasheet bf16 | vs measured bf16 matmul |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    for name, r in part.items():
        if not isinstance(r, dict) or name == "wall_s":
            continue
        if "error" in r:
            lines.append(f"| {name} | - | failed: {r['error'][:120]} | | | | |")
            continue
        vs = r["tflops_per_s"] / measured if measured else None
        mfu = r.get("mfu_vs_datasheet_bf16")
        lines.append(f"| {name} | {r['batch']} | {r['step_ms']:.1f} | {r['examples_per_s']:.0f} | "
                     f"{r['tflops_per_s']:.1f} | {_pct(mfu)} | {_pct(vs)} |")
    return lines


def _report_attention(part: dict) -> list[str]:
    lines = ["**Attention** (random block selections; speed-up = dense ms / block-sparse ms; FLOPs ratio = dense FLOPs / "
             "what the block path computes; target of the CPU issue, for reference: speed-up >= 0.7 x FLOPs ratio; "
             "`rel. L2` = the Pallas kernel's output against the XLA block path's):", ""]
    for row in part.get("rows", []):
        ms = row["ms"]
        dense = ms.get("dense xla fwd")
        fused = [v for k, v in ms.items() if k in ("dense cudnn fwd", "dense pallas flash fwd")]
        best_fused = min(fused) if fused else None
        lines += [f"N = {row['n']}, batch {row['batch']}, {row['heads']} heads of {row['head_dim']}, {row['dtype']}: "
                  f"dense XLA fwd {_fmt(dense)} ms / fwd+bwd {_fmt(ms.get('dense xla fwd+bwd'))} ms; cuDNN fused fwd "
                  f"{_fmt(ms.get('dense cudnn fwd'))} / fwd+bwd {_fmt(ms.get('dense cudnn fwd+bwd'))} ms; Pallas flash "
                  f"fwd {_fmt(ms.get('dense pallas flash fwd'))} ms"
                  + (f" (failed: {', '.join(sorted(row['errors']))})" if row.get("errors") else "") + ".", "",
                  "| rho, block | kept blocks | FLOPs ratio | XLA block fwd ms | speed-up vs dense XLA | XLA block fwd+bwd "
                  "ms | speed-up fwd+bwd | Pallas block fwd ms | speed-up vs dense XLA | vs best fused dense | rel. L2 |",
                  "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
        for key, b in row["blocks"].items():
            xf, xb, pf = ms.get(f"{key} xla fwd"), ms.get(f"{key} xla fwd+bwd"), ms.get(f"{key} pallas fwd")
            lines.append(f"| {key.replace('rho', '').replace(' b', ', ')} | {b['kept_blocks']} | "
                         f"{b['dense_over_block_flops']:.2f} | {_fmt(xf)} | {_fmt(dense and xf and dense / xf)} | "
                         f"{_fmt(xb)} | {_fmt(xb and ms.get('dense xla fwd+bwd', 0) / xb)} | {_fmt(pf)} | "
                         f"{_fmt(dense and pf and dense / pf)} | {_fmt(best_fused and pf and best_fused / pf)} | "
                         f"{_fmt(b.get('pallas_vs_xla_rel_l2'), 4)} |")
        lines.append("")
    return lines


def _report_moe(part: dict) -> list[str]:
    lines = ["**MoE dispatch** (forward + backward of one layer, top-2; `einsum` / `gather` capacity factor 1.25, "
             "`ragged` / `sorted` / `dense` dropless; ratio = method ms / gather ms):", "",
             "| examples x tokens | d | m | E | dtype | einsum | gather | ragged | sorted | dense | sorted / gather |",
             "|---|---:|---:|---:|---|---:|---:|---:|---:|---:|---:|"]
    for row in part.get("rows", []):
        g, s, d, m, e = row["case"][:5]
        ms = row["ms"]
        cells = " | ".join(_fmt(ms.get(k)) for k in ("einsum", "gather", "ragged", "sorted", "dense"))
        ratio = ms["sorted"] / ms["gather"] if "sorted" in ms and "gather" in ms else None
        lines.append(f"| {g} x {s} | {d} | {m} | {e} | {row['dtype']} | {cells} | {_fmt(ratio)} |")
    return lines + ["", "Times in ms."]


def _report_serving(part: dict) -> list[str]:
    lines = ["**Integer serving of an export** (the shapes main job's supernet, untrained; float predict vs int8 x int8 "
             "Dense matmuls; speed-up = median of per-round float / integer ratios):", "",
             "| batch | subnet | float ms | integer ms | speed-up | rel. L2 vs predict |", "|---|---|---:|---:|---:|---:|"]
    for key, rows in part.items():
        if not key.startswith("batch"):
            continue
        for r in rows:
            lines.append(f"| {key[6:]} | {r['subnet']} | {r['float_ms']:.2f} | {r['integer_ms']:.2f} | "
                         f"{r['speedup_paired']:.2f}x | {r['max_task_rel_l2']:.4f} |")
    mm = part.get("bare_matmul")
    if mm:
        ms = mm["ms"]
        lines += ["", f"Bare matmul {' x '.join(map(str, mm['shape']))} (a ViT-B MLP layer over 256 images): "
                  + ", ".join(f"{k} {v:.3f} ms" for k, v in ms.items())
                  + f"; int8 x int8 is {ms['bf16'] / ms['int8 x int8']:.2f}x bf16 and {ms['f32'] / ms['int8 x int8']:.2f}x f32."]
    return lines


def report(raw_path: str, path: str | None = None) -> str:
    """Writes the `gpu` section of BENCHMARKS.md (or of `path`) from a raw results file; returns its text."""
    from tools.bench_report import BENCHMARKS_PATH, write_section

    path = path or BENCHMARKS_PATH
    results = json.load(open(raw_path))
    dev, parts = results["device"], results["parts"]
    ceil = parts.get("ceilings", {})
    lines = ["## GPU: trainer MFU, block-sparse attention, MoE dispatch, integer serving (`tools/bench_gpu.py`)", "",
             f"measured {results['date']} on **{dev['kind']}** x{dev['count']} ({dev['platform']}), jax {dev['jax']}, "
             f"flax {dev.get('flax', '?')}; one lent machine, one process (`python -m tools.bench_gpu "
             f"--out=...`), section written by `python -m tools.bench_gpu --report={raw_path}`. Times are medians of "
             "interleaved rounds.", ""]
    if "error" not in ceil:
        lines += [f"**Ceilings** ({ceil['n']}^3 matmuls, 2 GiB copy): bf16 {ceil['bf16_tflops']:.0f} TFLOP/s, f32 "
                  f"(XLA default precision) {ceil['f32_tflops']:.0f} TFLOP/s, int8 x int8 -> int32 "
                  f"{ceil['int8_tops']:.0f} TOP/s; copy {ceil['copy_tb_per_s']:.2f} TB/s (read + write). Datasheet "
                  f"dense bf16 peak used for MFU: {', '.join(f'{k} {v:.0f}' for k, v in BF16_DATASHEET_TFLOPS.items())} "
                  "TFLOP/s.", ""]
    trained = {**parts.get("trainer", {}), **parts.get("supernet", {})}
    sections = (("trainer", lambda p: _report_trainer(trained, ceil)), ("attention", _report_attention),
                ("moe", _report_moe), ("serving", _report_serving))
    for name, fn in sections:
        part = parts.get(name)
        if part is None:
            continue
        if "error" in part:
            lines += [f"**{name}**: failed ({part['error'][:200]}).", ""]
            continue
        lines += fn(part) + [""]
    missing = [p for p in PARTS if p not in parts]
    if missing:
        lines.append(f"Not in the raw results: {', '.join(missing)} (the run ended before they finished).")
    lines += [f"Note: {note}" for note in results.get("notes", [])]
    text = "\n".join(lines)
    write_section("gpu", text, path)
    return text


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", help="measure here and write the raw results to this json")
    parser.add_argument("--report", help="write the BENCHMARKS.md section from this raw json")
    parser.add_argument("--parts", default=",".join(PARTS), help=f"comma-separated subset of {PARTS}")
    parser.add_argument("--quick", action="store_true", help="tiny sizes: checks the script, not the device")
    parser.add_argument("--recount", action="store_true",
                        help="with --report: first recount the trainer rows' FLOPs on the lowered program")
    args = parser.parse_args()
    if bool(args.out) == bool(args.report):
        parser.error("give exactly one of --out (measure) or --report (write BENCHMARKS.md)")
    if args.out:
        unknown = [p for p in args.parts.split(",") if p not in PARTS]
        if unknown:
            parser.error(f"unknown parts {unknown}; choose from {PARTS}")
        measure(args.out, args.parts.split(","), args.quick)
    else:
        if args.recount:
            recount(args.report)
        print(report(args.report))


if __name__ == "__main__":
    main()
