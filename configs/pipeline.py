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
menu: the variant `pvq` (e.g. `configs/pipeline.py:digits,pvq`) sets `search.pvq` (effjax/config/base.py);
each of its pulse counts K is one more `weight_bits` value ("pvq_L8_K8_b4", ...) whose
body kernels are PVQ-coded (patch embedding and heads int8). Off by default.
"""

import ml_collections

from effjax.config.base import search_section
from effjax.config.load import sibling


def get_config(arg: str | None = None):
    parts = [p.strip() for p in (arg or "digits").split(",") if p.strip()]
    with_pvq = "pvq" in parts
    arg = ",".join(p for p in parts if p != "pvq") or "digits"
    c = sibling(__file__, "supernet.py").get_config(arg, "configs/pipeline.py")
    c.search = search_section()
    if with_pvq:
        c.search.pvq = ml_collections.ConfigDict(dict(group_size=8, pulses=(8, 13), scale_bits=4, rotate=False, seed=0))
    if "tiny" in parts:
        c.search.budget = 6
        c.search.batch_size = 2
    c.log.progress_bar = True
    return c
