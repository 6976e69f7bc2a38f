"""Evidence for issue 10 (PVQ of weights): search exactness, SQNR vs bits, digits-MLP accuracy, GPTQ-PVQ.

Run from the repository root:

    python experiments/pvq/run_evidence.py            # writes experiments/pvq/results.{md,json}, sqnr_vs_bits.png
    python experiments/pvq/run_evidence.py --sections packing accuracy   # some sections, printed only

Everything is seeded; the tables in experiments/pvq/README.md are copied from results.md.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

import flax.linen as nn  # noqa: E402
import jax  # noqa: E402
import matplotlib  # noqa: E402
import numpy as np  # noqa: E402
from effjax.train.full_batch import fit_classifier  # noqa: E402
from sklearn.datasets import load_digits  # noqa: E402

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from effjax.quant.pvq import (  # noqa: E402
    PVQSpec,
    brute_force_search,
    correlation_objective,
    dequantize_matrix,
    gptq_quantize_matrix,
    input_hessian,
    load_checkpoint,
    num_codewords,
    quantize_matrix,
    quantize_params,
    rtn_quantize,
    save_checkpoint,
    search_reference,
    sqnr_db,
)
from effjax.quant.pvq.packing import INDEX_CODINGS  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
# (group_size, scale_bits, pulses): the largest K at each ceil-rate, 2 to 5 bits per weight
PVQ_FAMILIES = {
    "PVQ L=8, b_s=4": [(8, 4, K) for K in (4, 5, 6, 8, 10, 13, 16, 19, 24, 29, 36, 44, 54)],
    "PVQ L=16, b_s=5": [(16, 5, K) for K in (9, 11, 14, 21, 26, 31, 38, 46, 56)],
}
RTN_FAMILIES = {"RTN absmax g64": 64, "RTN absmax g128": 128}


def search_exactness(lines, results):
    rng = np.random.default_rng(0)
    lines += [
        "## Search against brute force",
        "",
        "2000 Gaussian vectors + 500 vectors with integer entries in [-3, 3] (ties) per (L, K); gap = 1 - found/optimal of (x.y)^2/(y.y).",
        "",
        "| L | K | N(L,K) | greedy exact | greedy max gap | refined exact | refined max gap |",
        "|---|---|---|---|---|---|---|",
    ]
    for L, K in [(4, 7), (6, 5), (8, 4), (8, 8), (5, 12), (3, 20), (6, 10), (10, 4)]:
        x = np.concatenate([rng.standard_normal((2000, L)), rng.integers(-3, 4, (500, L)).astype(float)])
        optimal = correlation_objective(x, brute_force_search(x, K))
        row = {"L": L, "K": K}
        for name, refine in (("greedy", False), ("refined", True)):
            found = correlation_objective(x, search_reference(x, K, refine=refine))
            gap = np.where(optimal > 0, 1 - found / np.where(optimal > 0, optimal, 1), 0.0)
            row[name] = (float(np.mean(gap <= 1e-12)), float(gap.max()))
        results.setdefault("search", []).append(row)
        lines.append(
            f"| {L} | {K} | {num_codewords(L, K)} | {100 * row['greedy'][0]:.2f}% | {row['greedy'][1]:.2e} "
            f"| {100 * row['refined'][0]:.2f}% | {row['refined'][1]:.1e} |"
        )
    lines.append("")


class DigitsMLP(nn.Module):
    @nn.compact
    def __call__(self, x, return_inputs=False):
        inputs = []
        for width in (128, 128):
            inputs.append(x)
            x = nn.relu(nn.Dense(width)(x))
        inputs.append(x)
        out = nn.Dense(10)(x)
        return (out, inputs) if return_inputs else out


def train_digits_mlp():
    digits = load_digits()
    images, labels = (digits.data / 16.0).astype(np.float32), digits.target
    order = np.random.default_rng(0).permutation(len(labels))
    train, test = order[:1400], order[1400:]
    model = DigitsMLP()
    params = fit_classifier(model, images[train], labels[train], steps=600, learning_rate=3e-3)
    return model, params, images, labels, train, test


def mlp_kernels(params):
    return [np.asarray(params["params"][f"Dense_{i}"]["kernel"], np.float64) for i in range(3)]


def joint_sqnr(references, approximations):
    signal = sum((r**2).sum() for r in references)
    error = sum(((r - a) ** 2).sum() for r, a in zip(references, approximations))
    return float(10 * np.log10(signal / error))


def sqnr_curves(lines, results, mlp_params):
    gaussian = [np.random.default_rng(1).standard_normal((256, 1024))]
    sources = {"Gaussian 256x1024": gaussian, "digits MLP kernels": mlp_kernels(mlp_params)}
    curves = {}
    for source, matrices in sources.items():
        for family, configs in PVQ_FAMILIES.items():
            for L, scale_bits, K in configs:
                spec = PVQSpec(L, K, scale_bits)
                coded = [quantize_matrix(m, spec) for m in matrices]
                db = joint_sqnr(matrices, [dequantize_matrix(c) for c in coded])
                fractional = (np.log2(float(num_codewords(L, K))) + scale_bits) / L
                curves.setdefault(source, {}).setdefault(family, []).append((spec.bits_per_weight, db, fractional, K))
        for family, group_size in RTN_FAMILIES.items():
            for bits in (2, 3, 4, 5):
                outs = [rtn_quantize(m, bits, group_size) for m in matrices]
                curves[source].setdefault(family, []).append((outs[0][1], joint_sqnr(matrices, [o[0] for o in outs]), None, bits))
    results["sqnr"] = curves
    for source, families in curves.items():
        lines += [f"## SQNR vs bits per weight: {source}", "", "| quantizer | setting | bits/weight (ceil index) | log2 N rate | SQNR dB |", "|---|---|---|---|---|"]
        for family, points in families.items():
            for bpw, db, fractional, knob in points:
                setting = f"K={knob}" if family.startswith("PVQ") else f"int{knob}"
                rate = f"{fractional:.3f}" if fractional is not None else ""
                lines.append(f"| {family} | {setting} | {bpw:.4g} | {rate} | {db:.2f} |")
        lines.append("")
    figure, axes = plt.subplots(1, len(curves), figsize=(6 * len(curves), 4.5))
    for axis, (source, families) in zip(np.atleast_1d(axes), curves.items()):
        for family, points in families.items():
            points = sorted(points)
            style = "o-" if family.startswith("PVQ") else "s--"
            axis.plot([p[0] for p in points], [p[1] for p in points], style, label=family, markersize=4)
        axis.set_xlabel("bits per weight (indices + scales)")
        axis.set_ylabel("SQNR (dB)")
        axis.set_title(source)
        axis.set_xlim(1.9, 5.4)
        axis.grid(alpha=0.3)
        axis.legend()
    figure.tight_layout()
    figure.savefig(os.path.join(HERE, "sqnr_vs_bits.png"), dpi=120)


def accuracy_table(lines, results, mlp):
    model, params, images, labels, train, test = mlp

    def accuracy(p):
        return float((np.asarray(model.apply(p, images[test])).argmax(-1) == labels[test]).mean())

    _, inputs = model.apply(params, images[train], return_inputs=True)
    calibration = {f"params/Dense_{i}": np.asarray(x) for i, x in enumerate(inputs)}
    rows = [("float32", 32.0, accuracy(params), "")]
    for L, K, scale_bits in [(8, 13, 4), (8, 12, 4), (8, 5, 4), (8, 4, 4)]:
        for rotate in (False, True):
            for hessian in (False, True):
                config = {"group_size": L, "pulses": K, "scale_bits": scale_bits, "rotate": rotate}
                if hessian:
                    config["calibration"] = calibration
                quantized, report = quantize_params(params, config)
                label = f"PVQ L={L} K={K} b_s={scale_bits}" + (" +Hadamard" if rotate else "") + (" +GPTQ" if hessian else "")
                mean_db = np.mean([v["sqnr_db"] for v in report["layers"].values()])
                rows.append((label, report["bits_per_weight"], accuracy(quantized), f"{mean_db:.2f}"))
    for bits, group_size in [(3, 64), (2, 64)]:
        quantized = jax.tree.map(lambda a: a, params)
        for i in range(3):
            kernel = params["params"][f"Dense_{i}"]["kernel"]
            quantized["params"][f"Dense_{i}"]["kernel"] = rtn_quantize(kernel, bits, group_size)[0].astype(np.float32)
        rows.append((f"RTN int{bits} absmax g{group_size}", bits + 16 / group_size, accuracy(quantized), ""))
    results["accuracy"] = rows
    lines += [
        f"## Digits MLP (64-128-128-10, {len(train)} train / {len(test)} test digits): accuracy",
        "",
        "GPTQ calibration = each layer's float inputs on the training digits; mean layer SQNR over the 3 kernels.",
        "",
        "| weights | bits/weight | test accuracy | mean weight SQNR dB |",
        "|---|---|---|---|",
    ]
    lines += [f"| {name} | {bpw:.4g} | {100 * acc:.2f}% | {db} |" for name, bpw, acc, db in rows]
    lines.append("")


def hessian_table(lines, results, mlp):
    model, params, images, labels, train, test = mlp
    _, calibration_inputs = model.apply(params, images[train], return_inputs=True)
    _, held_out_inputs = model.apply(params, images[test], return_inputs=True)
    rng = np.random.default_rng(2)
    mixing = rng.standard_normal((256, 256)) / 16
    synthetic = {
        "synthetic 256x1024, correlated inputs": (
            rng.standard_normal((256, 1024)) * 0.05,
            rng.standard_normal((2048, 256)) @ mixing + 0.3 * rng.standard_normal((2048, 256)),
            rng.standard_normal((2048, 256)) @ mixing + 0.3 * rng.standard_normal((2048, 256)),
        )
    }
    layers = {
        f"digits MLP Dense_{i}": (mlp_kernels(params)[i], np.asarray(calibration_inputs[i]), np.asarray(held_out_inputs[i]))
        for i in range(3)
    }
    lines += [
        "## Hessian-aware (GPTQ) vs plain PVQ: layer output SQNR on held-out inputs",
        "",
        "Output SQNR = 10 log10(||X W||^2 / ||X W - X W_hat||^2) with X held-out inputs (not used for H); damping 0.01.",
        "",
        "| layer | PVQ setting | bits/weight | plain output dB | GPTQ output dB | gain dB | plain weight dB | GPTQ weight dB |",
        "|---|---|---|---|---|---|---|---|",
    ]
    rows = []
    for name, (kernel, calibration, held_out) in {**layers, **synthetic}.items():
        for L, K, scale_bits in [(8, 13, 4), (8, 5, 4)]:
            spec = PVQSpec(L, K, scale_bits)
            plain = dequantize_matrix(quantize_matrix(kernel, spec))
            hessian = dequantize_matrix(gptq_quantize_matrix(kernel, input_hessian(calibration, kernel.shape[0]), spec))
            reference = held_out @ kernel
            plain_db, hessian_db = sqnr_db(reference, held_out @ plain), sqnr_db(reference, held_out @ hessian)
            row = (name, f"L={L} K={K} b_s={scale_bits}", spec.bits_per_weight, plain_db, hessian_db, sqnr_db(kernel, plain), sqnr_db(kernel, hessian))
            rows.append(row)
            lines.append(
                f"| {row[0]} | {row[1]} | {row[2]:.4g} | {row[3]:.2f} | {row[4]:.2f} | {row[4] - row[3]:+.2f} | {row[5]:.2f} | {row[6]:.2f} |"
            )
    results["hessian"] = rows
    lines.append("")


def packing_table(lines, results, mlp):
    _, params, *_ = mlp
    lines += [
        f"## Checkpoint size on disk: digits MLP kernels ({sum(k.size for k in mlp_kernels(params)):,} weights)",
        "",
        "| PVQ setting | index coding | (ceil log2 N + b_s)/L | (log2 N + b_s)/L | file bits/weight | codes bits/weight | header + codebooks bytes | reload bit-exact |",
        "|---|---|---|---|---|---|---|---|",
    ]
    rows = []
    with tempfile.TemporaryDirectory() as directory:
        for L, K, scale_bits in [(8, 12, 4), (8, 13, 4), (16, 26, 5)]:
            _, report = quantize_params(params, {"group_size": L, "pulses": K, "scale_bits": scale_bits})
            for coding in INDEX_CODINGS:
                path = os.path.join(directory, f"{L}_{K}_{coding}.pvq")
                sizes = save_checkpoint(path, report["quantized"], index_coding=coding)
                reloaded = load_checkpoint(path)
                exact = all(
                    np.array_equal(dequantize_matrix(reloaded[k]).view(np.uint32), dequantize_matrix(q).view(np.uint32))
                    for k, q in report["quantized"].items()
                )
                row = (f"L={L} K={K} b_s={scale_bits}", coding, sizes, exact)
                rows.append(row)
                lines.append(
                    f"| {row[0]} | {coding} | {sizes['formula_bits_per_weight']:.4f} | {sizes['log2N_bits_per_weight']:.4f} "
                    f"| {sizes['file_bits_per_weight']:.4f} | {sizes['code_bits_per_weight']:.4f} "
                    f"| {sizes['header_bytes'] + sizes['codebook_bytes']} | {exact} |"
                )
    results["packing"] = rows
    lines.append("")


SECTIONS = ("search", "sqnr", "accuracy", "hessian", "packing")


def main():
    parser = argparse.ArgumentParser(description="PVQ evidence tables")
    parser.add_argument("--sections", nargs="+", choices=SECTIONS, default=list(SECTIONS))
    args = parser.parse_args()
    started = time.time()
    lines = ["# PVQ evidence (generated by experiments/pvq/run_evidence.py)", ""]
    results = {}
    if "search" in args.sections:
        search_exactness(lines, results)
    mlp = train_digits_mlp()
    if "sqnr" in args.sections:
        sqnr_curves(lines, results, mlp[1])
    if "accuracy" in args.sections:
        accuracy_table(lines, results, mlp)
    if "hessian" in args.sections:
        hessian_table(lines, results, mlp)
    if "packing" in args.sections:
        packing_table(lines, results, mlp)
    lines.append(f"Total run time {time.time() - started:.0f} s.")
    print("\n".join(lines))
    if set(args.sections) == set(SECTIONS):
        with open(os.path.join(HERE, "results.md"), "w") as f:
            f.write("\n".join(lines) + "\n")
        with open(os.path.join(HERE, "results.json"), "w") as f:
            json.dump(results, f, indent=1, default=str)


if __name__ == "__main__":
    main()
