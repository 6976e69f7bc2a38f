"""Post-training PVQ of a trained effjax run: per-task metrics float vs PVQ, bits/weight, packed size.

Van der Ouderaa et al.'s (2024) PVQ applied to effjax models (see `effjax/quant/pvq_model.py`). Run from
the repository root on a workdir of `python -m effjax.main`:

    python tools/pvq_ptq.py --workdir=/tmp/effjax/quickstart --pulses=12 --group_size=8 --scale_bits=4
    python tools/pvq_ptq.py --workdir=/tmp/effjax/shapes --pulses=13 --hessian --rotate --keep_first_last_float

Flags left out take the run's `config.pvq` if it has one, else `default_pvq_config()`. The packed
checkpoint goes to `--output_dir` (default `<workdir>/pvq`) with `pvq_report.json` beside it; the
PVQ metrics are measured on the parameters reloaded from that checkpoint.
"""

from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--workdir", required=True, help="workdir of a finished python -m effjax.main run")
    p.add_argument("--group_size", type=int, help="L: input features per group")
    p.add_argument("--pulses", type=int, help="K: pulses per group")
    p.add_argument("--scale_bits", type=int, help="b_s: bits per group gain")
    p.add_argument("--rotate", action="store_true", default=None, help="random Hadamard rotation of each kernel")
    p.add_argument("--hessian", action="store_true", default=None, help="Hessian-aware PVQ with calibration inputs")
    p.add_argument("--damping", type=float, help="Hessian-aware: lambda relative to mean(diag(X^T X))")
    p.add_argument("--seed", type=int, help="rotation seed")
    p.add_argument("--calibration_examples", type=int, help="calibration images (Hessian-aware path)")
    p.add_argument("--calibration_split", help="split of the calibration images")
    p.add_argument("--calibration_inputs", choices=("float", "quantized"),
                   help="Hessian-aware: inputs of the float network, or layer by layer behind the quantized layers")
    p.add_argument("--keep_first_last_float", action="store_true", default=None, help="leave first/last layers in float")
    p.add_argument("--first_last_pulses", type=int, help="K of the first and last layers")
    p.add_argument("--index_coding", choices=("fixed", "mixed_radix"), help="packed index coding")
    p.add_argument("--splits", help="comma-separated splits to evaluate (default test)")
    p.add_argument("--output_dir", help="where the packed checkpoint goes (default <workdir>/pvq)")
    return p.parse_args(argv)


def pvq_overrides(args: argparse.Namespace) -> dict:
    fields = ("group_size", "pulses", "scale_bits", "rotate", "hessian", "damping", "seed", "calibration_examples",
              "calibration_split", "calibration_inputs", "keep_first_last_float", "first_last_pulses", "index_coding")
    overrides = {f: getattr(args, f) for f in fields if getattr(args, f) is not None}
    if args.splits:
        overrides["eval_splits"] = tuple(s.strip() for s in args.splits.split(",") if s.strip())
    return overrides


def format_result(result: dict) -> str:
    pvq = result["pvq"]
    setting = f"L={pvq['group_size']} K={pvq['pulses']} b_s={pvq['scale_bits']}"
    if pvq["rotate"]:
        setting += " +Hadamard"
    if pvq["hessian"]:
        setting += " +Hessian" + (" (sequential)" if pvq["calibration_inputs"] == "quantized" else "")
    if pvq["keep_first_last_float"]:
        setting += ", first/last layers float"
    if pvq["first_last_pulses"]:
        setting += f", first/last layers K={pvq['first_last_pulses']}"
    lines = [f"PVQ {setting} of {result['workdir']} (step {result['step']})", ""]
    for split, tasks in result["metrics"].items():
        lines += [f"split {split}:", "| task | metric | float | PVQ | retained |", "|---|---|---|---|---|"]
        for name, m in tasks.items():
            lines.append(f"| {name} | {m['metric']} | {m['float']:.4f} | {m['pvq']:.4f} | {100 * m['retained']:.1f}% |")
        lines.append("")
    sizes = result["sizes"]
    kernels = sizes["kernels"]
    lines += [
        f"quantized kernels: {result['quantized_weights']} weights in {len(result['layers'])} layers, "
        f"{result['kernel_bits_per_weight']:.4f} bits/weight ((ceil(log2 N) + b_s)/L, padding included), "
        f"{kernels['log2N_bits_per_weight']:.4f} at log2 N",
        f"packed kernels: {kernels['file_bytes']} bytes = {kernels['code_bytes']} codes + {kernels['codebook_bytes']} "
        f"codebooks + {kernels['header_bytes']} header ({kernels['file_bits_per_weight']:.3f} bits/weight)",
        f"float leaves kept: {sizes['float_params']} parameters, {sizes['float_param_bytes']} bytes",
        f"model: {sizes['pvq_model_bytes']} bytes PVQ vs {sizes['float32_model_bytes']} float32 "
        f"({sizes['model_bits_per_param']:.3f} bits/parameter, {sizes['float32_model_bytes'] / sizes['pvq_model_bytes']:.1f}x smaller)",
        f"checkpoint: {result['output_dir']}",
    ]
    return "\n".join(lines)


def main(argv=None) -> int:
    args = parse_args(argv)
    from effjax.quant.pvq_model import run_pvq_ptq

    try:
        result = run_pvq_ptq(args.workdir, pvq_overrides(args), args.output_dir)
    except ValueError as e:
        print(f"pvq_ptq: error: {e}", file=sys.stderr)
        return 2
    print(format_result(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
