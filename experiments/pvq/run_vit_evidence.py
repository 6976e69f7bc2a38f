"""Evidence for issue 10 step 5: post-training PVQ of trained effjax ViTs (digits and shapes).

Needs two finished runs (commands in experiments/pvq/README.md, section "PVQ on trained effjax ViTs"):

    python -m effjax.main --config=configs/quickstart.py --workdir=/tmp/pvqeng/quickstart
    python -m effjax.main --config=configs/shapes_vit.py --workdir=/tmp/pvqeng/shapes

Then, from the repository root:

    python experiments/pvq/run_vit_evidence.py --digits=/tmp/pvqeng/quickstart --shapes=/tmp/pvqeng/shapes

writes experiments/pvq/vit_results.{md,json} and vit_sqnr_vs_bits.png:
1. SQNR of PVQ vs round-to-nearest (per-group absmax) over 2-5 bits/weight on all trained kernels;
2. every task's test metric at ~3.25 bits/weight vs float (and at 2.25), with the retained fraction;
3. Hessian-aware vs plain PVQ per layer: output SQNR on held-out inputs (val images; H from train images).
Everything is seeded; bits per weight are measured over the quantized kernels, padding included.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

import flax  # noqa: E402
import jax  # noqa: E402
import matplotlib  # noqa: E402
import numpy as np  # noqa: E402

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from effjax.quant import pvq_model  # noqa: E402
from effjax.quant.pvq import rtn_quantize  # noqa: E402
from effjax.quant.pvq.ptq import kernel_paths  # noqa: E402
from effjax.train import step as step_lib  # noqa: E402
from effjax.train.setup import load_run  # noqa: E402
from effjax.train.trainer import evaluate  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
# (group_size, scale_bits, pulses): the largest K at each ceil-rate, 2 to 5.5 bits per weight (L=8)
PVQ_FAMILIES = {
    "PVQ L=8, b_s=4": {"group_size": 8, "scale_bits": 4, "pulses": (4, 5, 6, 8, 10, 13, 16, 19, 24, 29, 36, 44, 54, 65, 80)},
    "PVQ L=8, b_s=4 +Hadamard": {"group_size": 8, "scale_bits": 4, "rotate": True,
                                 "pulses": (4, 5, 6, 8, 10, 13, 16, 19, 24, 29, 36, 44, 54, 65, 80)},
    "PVQ L=16, b_s=5": {"group_size": 16, "scale_bits": 5, "pulses": (9, 11, 14, 21, 26, 31, 38, 46, 56)},
}
RTN_FAMILIES = {"RTN absmax g64": 64, "RTN absmax g32": 32}
RTN_BITS = (2, 3, 4, 5)
HEADLINE_K = 13  # L=8, b_s=4: (ceil(log2 N(8, 13)) + 4) / 8 = 3.25 bits per weight
LOW_K = 5  # 2.25 bits per weight


def flat(tree):
    return flax.traverse_util.flatten_dict(flax.core.unfreeze(tree), sep="/")


def rtn_params(params, bits: int, group_size: int):
    """Every kernel round-to-nearest quantized; returns (params, bits/weight incl. fp16 scales and padding)."""
    tree, total_bits, total_weights = flat(params), 0.0, 0
    for path in kernel_paths(params):
        kernel = tree[path]
        matrix = kernel.reshape(-1, kernel.shape[-1])
        dequantized, _ = rtn_quantize(matrix, bits, group_size)
        tree[path] = dequantized.reshape(kernel.shape).astype(kernel.dtype)
        groups = -(-matrix.shape[0] // group_size) * matrix.shape[1]
        total_bits += bits * matrix.size + 16 * groups
        total_weights += matrix.size
    return flax.traverse_util.unflatten_dict(tree, sep="/"), total_bits / total_weights


def aggregate_sqnr(original, quantized, paths) -> float:
    """10 log10(sum ||W||^2 / sum ||W - W_hat||^2) over the kernels."""
    a, b = flat(original), flat(quantized)
    signal = sum(float(np.sum(np.asarray(a[p], np.float64) ** 2)) for p in paths)
    error = sum(float(np.sum((np.asarray(a[p], np.float64) - np.asarray(b[p], np.float64)) ** 2)) for p in paths)
    return float(10 * np.log10(signal / error))


class Model:
    """A trained run with its Setup and one compiled eval step."""

    def __init__(self, name: str, workdir: str):
        self.name = name
        self.run = load_run(workdir)
        self.run.params = jax.tree.map(np.asarray, self.run.params)
        self.setup = self.run.setup
        self.eval_step = jax.jit(step_lib.make_eval_step(self.setup.model, self.setup.dataset.tasks),
                                 in_shardings=(self.setup.state_shardings.params, self.setup.batch_sharding))
        self.tasks = {t.name: t for t in self.setup.dataset.tasks}
        self.paths = kernel_paths(self.run.params)
        self.weights = sum(int(np.prod(flat(self.run.params)[p].shape)) for p in self.paths)

    def metrics(self, params, split="test"):
        return evaluate(self.setup, params, split, self.eval_step)

    def quantize(self, pvq):
        return pvq_model.quantize_model(self.setup.model, self.run.params, self.setup.dataset, pvq)


def sqnr_section(models, lines, results):
    lines += ["## 1. SQNR vs bits per weight on trained ViT kernels", "",
              "SQNR = 10 log10(sum ||W||^2 / sum ||W - W_hat||^2) over every dense kernel of the model; bits/weight measured "
              "over the same kernels (PVQ: (ceil(log2 N) + b_s)/L per group; RTN: b + 16 bits of float16 scale per group; "
              "padding of short input axes included).", ""]
    fig, axes = plt.subplots(1, len(models), figsize=(6 * len(models), 4.5), squeeze=False)
    for ax, model in zip(axes[0], models):
        lines += [f"### {model.name}: {len(model.paths)} kernels, {model.weights} weights", "",
                  "| quantizer | setting | bits/weight | SQNR dB |", "|---|---|---|---|"]
        rows = []
        for family, spec in PVQ_FAMILIES.items():
            curve = []
            for K in spec["pulses"]:
                config = {k: v for k, v in spec.items() if k != "pulses"} | {"pulses": K}
                q = model.quantize(config)
                bits = q.report["bits_per_weight"]
                sqnr = aggregate_sqnr(model.run.params, q.params, model.paths)
                curve.append((bits, sqnr))
                rows.append({"quantizer": family, "setting": f"K={K}", "bits_per_weight": bits, "sqnr_db": sqnr})
            ax.plot(*zip(*curve), "o-", label=family)
        for family, group in RTN_FAMILIES.items():
            curve = []
            for bits in RTN_BITS:
                params, measured_bits = rtn_params(model.run.params, bits, group)
                sqnr = aggregate_sqnr(model.run.params, params, model.paths)
                curve.append((measured_bits, sqnr))
                rows.append({"quantizer": family, "setting": f"int{bits}", "bits_per_weight": measured_bits, "sqnr_db": sqnr})
            ax.plot(*zip(*curve), "s--", label=family)
        lines += [f"| {r['quantizer']} | {r['setting']} | {r['bits_per_weight']:.3f} | {r['sqnr_db']:.2f} |" for r in rows]
        lines += ["", "At matched bits: PVQ SQNR linearly interpolated (in bits/weight) at each RTN point.", "",
                  "| RTN | bits/weight | RTN dB | PVQ L=8 dB | PVQ L=8 +Hadamard dB | PVQ L=16 dB | best PVQ - RTN dB |",
                  "|---|---|---|---|---|---|---|"]
        for r in rows:
            if not r["quantizer"].startswith("RTN"):
                continue
            at = [interpolate(rows, family, r["bits_per_weight"]) for family in PVQ_FAMILIES]
            best = max((v for v in at if v is not None), default=None)
            cells = " | ".join("n/a" if v is None else f"{v:.2f}" for v in at)
            gap = "n/a" if best is None else f"{best - r['sqnr_db']:+.2f}"
            lines.append(f"| {r['quantizer']} {r['setting']} | {r['bits_per_weight']:.3f} | {r['sqnr_db']:.2f} | {cells} | {gap} |")
        lines.append("")
        results.setdefault("sqnr", {})[model.name] = rows
        ax.set(title=f"{model.name} ({model.weights} kernel weights)", xlabel="bits per weight", ylabel="SQNR (dB)", xlim=(1.8, 5.7))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(os.path.join(HERE, "vit_sqnr_vs_bits.png"), dpi=120)
    lines += ["![SQNR vs bits per weight on trained ViTs](vit_sqnr_vs_bits.png)", ""]


def interpolate(rows, family: str, bits: float):
    """SQNR of a PVQ family at `bits` (linear between its measured points); None outside their range."""
    points = sorted((r["bits_per_weight"], r["sqnr_db"]) for r in rows if r["quantizer"] == family)
    xs, ys = zip(*points)
    return float(np.interp(bits, xs, ys)) if xs[0] <= bits <= xs[-1] else None


def metric_variants():
    base = {"group_size": 8, "scale_bits": 4}
    variants = []
    for K in (HEADLINE_K, LOW_K):
        variants += [
            (f"PVQ L=8 K={K} b_s=4", base | {"pulses": K}),
            (f"PVQ L=8 K={K} b_s=4 +Hadamard", base | {"pulses": K, "rotate": True}),
            (f"PVQ L=8 K={K} b_s=4 +Hessian", base | {"pulses": K, "hessian": True}),
            (f"PVQ L=8 K={K} b_s=4 +Hadamard +Hessian", base | {"pulses": K, "rotate": True, "hessian": True}),
            (f"PVQ L=8 K={K} b_s=4 +Hessian (sequential)", base | {"pulses": K, "hessian": True, "calibration_inputs": "quantized"}),
            (f"PVQ L=8 K={K} b_s=4, first/last float", base | {"pulses": K, "keep_first_last_float": True}),
        ]
    return variants


def metrics_section(models, lines, results):
    lines += ["## 2. Task metrics at ~3.25 and 2.25 bits per weight (test split)", "",
              "retained = PVQ / float for accuracy and mIoU, float / PVQ for depth RMSE (lower is better). "
              "Hessian-aware rows use 256 training images for H: each layer's inputs in the float network, or, for "
              "'(sequential)', its inputs once every earlier layer is quantized (layer by layer, as GPTQ). bits/weight = over the quantized kernels; "
              "'first/last float' leaves patch_embed and every head's output layer in float32 (not counted in bits/weight).", ""]
    for model in models:
        names = list(model.tasks)
        header = " | ".join(f"{n} ({model.tasks[n].metric})" for n in names)
        lines += [f"### {model.name}", "", f"| weights | bits/weight | {header} | mean retained | min retained |",
                  "|---|---|" + "---|" * (len(names) + 2)]
        float_metrics = model.metrics(model.run.params)
        rows = [{"weights": "float32", "bits_per_weight": 32.0, "metrics": float_metrics}]
        for label, config in metric_variants():
            started = time.perf_counter()
            q = model.quantize(config)
            rows.append({"weights": label, "bits_per_weight": q.report["bits_per_weight"], "metrics": model.metrics(q.params),
                         "seconds": time.perf_counter() - started})
        for bits in (3, 2):
            params, measured = rtn_params(model.run.params, bits, 64)
            rows.append({"weights": f"RTN int{bits} absmax g64", "bits_per_weight": measured, "metrics": model.metrics(params)})
        for row in rows:
            retained = {n: pvq_model.retained_fraction(model.tasks[n], float_metrics[n], row["metrics"][n]) for n in names}
            row["retained"] = retained
            cells = " | ".join(f"{row['metrics'][n]:.4f}" for n in names)
            lines.append(f"| {row['weights']} | {row['bits_per_weight']:.3f} | {cells} | "
                         f"{100 * np.mean(list(retained.values())):.1f}% | {100 * min(retained.values()):.1f}% |")
        lines.append("")
        results.setdefault("metrics", {})[model.name] = rows


def hessian_section(models, lines, results, examples: int = 256):
    lines += ["## 3. Hessian-aware vs plain PVQ per layer", "",
              f"H = X^T X from the layer inputs of {examples} training images (float network); output SQNR = "
              f"10 log10(||X W||^2 / ||X (W - W_hat)||^2) with X the layer inputs of {examples} held-out validation images. "
              "damping 0.01, no rotation.", ""]
    for model in models:
        held_out = pvq_model.calibration_images(model.setup.dataset, "val", examples)
        inputs = pvq_model.collect_layer_inputs(model.setup.model, model.run.params, held_out)
        original = flat(model.run.params)
        rows = []
        for K in (HEADLINE_K, LOW_K):
            config = {"group_size": 8, "scale_bits": 4, "pulses": K, "calibration_examples": examples}
            plain, hessian = flat(model.quantize(config).params), flat(model.quantize(config | {"hessian": True}).params)
            for path in model.paths:
                x, w = inputs[path].astype(np.float64), original[path].astype(np.float64).reshape(inputs[path].shape[1], -1)
                signal = np.linalg.norm(x @ w)

                def out_db(q):
                    return float(20 * np.log10(signal / np.linalg.norm(x @ (np.asarray(q, np.float64).reshape(w.shape) - w))))

                def weight_db(q):
                    return float(20 * np.log10(np.linalg.norm(w) / np.linalg.norm(np.asarray(q, np.float64).reshape(w.shape) - w)))

                rows.append({"layer": path[: -len("/kernel")], "K": K, "plain_out_db": out_db(plain[path]),
                             "hessian_out_db": out_db(hessian[path]), "plain_weight_db": weight_db(plain[path]),
                             "hessian_weight_db": weight_db(hessian[path])})
        results.setdefault("hessian", {})[model.name] = rows
        lines += [f"### {model.name}: summary by layer kind", "",
                  "| K (bits/weight) | layer kind | layers | plain output dB (mean) | Hessian output dB (mean) | gain dB mean | gain dB min | gain dB max |",
                  "|---|---|---|---|---|---|---|---|"]
        for K in (HEADLINE_K, LOW_K):
            for kind in layer_kinds(rows):
                chosen = [r for r in rows if r["K"] == K and kind_of(r["layer"]) == kind]
                gains = [r["hessian_out_db"] - r["plain_out_db"] for r in chosen]
                lines.append(f"| {K} ({3.25 if K == HEADLINE_K else 2.25}) | {kind} | {len(chosen)} | "
                             f"{np.mean([r['plain_out_db'] for r in chosen]):.2f} | {np.mean([r['hessian_out_db'] for r in chosen]):.2f} | "
                             f"{np.mean(gains):+.2f} | {min(gains):+.2f} | {max(gains):+.2f} |")
            every = [r["hessian_out_db"] - r["plain_out_db"] for r in rows if r["K"] == K]
            lines.append(f"| {K} | **all** | {len(every)} | | | **{np.mean(every):+.2f}** | {min(every):+.2f} | {max(every):+.2f} |")
        lines += ["", f"### {model.name}: every layer", "",
                  "| layer | K | plain output dB | Hessian output dB | gain dB | plain weight dB | Hessian weight dB |",
                  "|---|---|---|---|---|---|---|"]
        lines += [f"| {r['layer']} | {r['K']} | {r['plain_out_db']:.2f} | {r['hessian_out_db']:.2f} | "
                  f"{r['hessian_out_db'] - r['plain_out_db']:+.2f} | {r['plain_weight_db']:.2f} | {r['hessian_weight_db']:.2f} |"
                  for r in rows]
        lines.append("")


def kind_of(layer: str) -> str:
    parts = layer.split("/")
    if parts[0].startswith("block"):
        return "/".join(parts[1:])
    if parts[0].startswith(("head_", "heads_")):  # naming scheme 1 (stored results) or 2
        return f"head {parts[-1]}"
    return parts[0]


def layer_kinds(rows) -> list[str]:
    seen = []
    for r in rows:
        if kind_of(r["layer"]) not in seen:
            seen.append(kind_of(r["layer"]))
    return seen


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--digits", default="/tmp/pvqeng/quickstart", help="workdir of configs/quickstart.py")
    p.add_argument("--shapes", default="/tmp/pvqeng/shapes", help="workdir of configs/shapes_vit.py")
    p.add_argument("--sections", nargs="*", default=["sqnr", "metrics", "hessian"])
    p.add_argument("--out", default="vit_results", help="results file stem in experiments/pvq/")
    args = p.parse_args()
    models = [Model("digits ViT (quickstart)", args.digits), Model("shapes ViT (shapes_vit)", args.shapes)]
    lines = ["# PVQ on trained effjax ViTs (generated by experiments/pvq/run_vit_evidence.py)", ""]
    for model in models:
        lines.append(f"- {model.name}: {args.digits if 'digits' in model.name else args.shapes}, step {model.run.step}, "
                     f"{len(model.paths)} kernels, {model.weights} kernel weights")
    lines.append("")
    results = {}
    sections = {"sqnr": sqnr_section, "metrics": metrics_section, "hessian": hessian_section}
    for name in args.sections:
        started = time.perf_counter()
        sections[name](models, lines, results)
        print(f"section {name}: {time.perf_counter() - started:.0f} s", flush=True)
    with open(os.path.join(HERE, f"{args.out}.md"), "w") as f:
        f.write("\n".join(lines) + "\n")
    with open(os.path.join(HERE, f"{args.out}.json"), "w") as f:
        json.dump(pvq_model._jsonable(results), f, indent=1)
    print("\n".join(lines))


if __name__ == "__main__":
    main()
