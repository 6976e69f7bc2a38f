"""The main job: train a slimmable multi-task supernet once, search its accuracy-FLOPs-bits
Pareto front zero-shot, export the best point per budget.

  python -m effjax.main --config=configs/pipeline.py:digits --workdir=workdirs/pipeline_digits
  python -m effjax.main --config=configs/pipeline.py:shapes --workdir=workdirs/pipeline_shapes
  python -m effjax.job.export --workdir=workdirs/pipeline_digits --point=<id>

The supernet is `configs/slim_vit.py` (same argument: dataset and variants, e.g.
`digits,tiny`); this file adds the search. Knobs searched: encoder width, one
decoder width per task (the supernet's width menu) and weight bits (post-training,
per-channel symmetric; first and last layers at >= 8 bits).

Post-training PVQ (Pyramid Vector Quantization, van der Ouderaa et al. 2024) in the bits
menu: the variant `pvq` (e.g. `configs/pipeline.py:digits,pvq`) sets `search.pvq` below;
each of its pulse counts K is one more `weight_bits` value ("pvq_L8_K8_b4", ...) whose
body kernels are PVQ-coded (patch embedding and heads int8). Off by default.
"""

import os

import ml_collections

from effjax.config.load import load_config


def get_config(arg: str | None = None):
    parts = [p.strip() for p in (arg or "digits").split(",") if p.strip()]
    with_pvq = "pvq" in parts
    arg = ",".join(p for p in parts if p != "pvq") or "digits"
    c = load_config(os.path.join(os.path.dirname(os.path.abspath(__file__)), "supernet.py") + ":" + arg)
    c.search = ml_collections.ConfigDict()
    c.search.budget = 40  # configurations evaluated (zero-shot, on the validation split)
    c.search.batch_size = 4  # proposals per round (qLogNEHVI batch)
    c.search.bits = (4, 8, 32)  # weight bits menu; 32 is float32
    c.search.max_flops = ml_collections.config_dict.placeholder(float)  # constraint: FLOPs per example <= this
    c.search.max_bits = ml_collections.config_dict.placeholder(float)  # constraint: model size in bits <= this
    c.search.score_weights = ml_collections.ConfigDict()  # task -> weight of the score (default 1 each)
    # c.search.pvq = ml_collections.ConfigDict(dict(
    #     group_size=8,  # L: consecutive input features per group
    #     pulses=(8, 13),  # K: one PVQ setting per value ((ceil(log2 N(L, K)) + b_s) / L = 2.75, 3.25 bits/weight)
    #     scale_bits=4,  # b_s: bits of each group's gain code (Lloyd-Max codebook of 2^b_s per kernel)
    #     rotate=False,  # random Hadamard rotation of each kernel's input axis
    #     seed=0))  # seed of the rotation's signs
    if with_pvq:
        c.search.pvq = ml_collections.ConfigDict(dict(group_size=8, pulses=(8, 13), scale_bits=4, rotate=False, seed=0))
    if "tiny" in (arg or ""):
        c.search.budget = 6
        c.search.batch_size = 2
    c.log.progress_bar = True
    return c
