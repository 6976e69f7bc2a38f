"""Multi-task MoE ViT (M3ViT) on `digits`: the quickstart ViT with MoE MLPs in blocks 1 and 3.

One router per task; 8 experts of hidden width 32 (a quarter of the dense MLP), top-2:

  python -m effjax.main --config=configs/moe_digits.py --workdir=/tmp/effjax/moe_digits

Variants (comma-separated): `topp` (top-p routing, p=0.4, with the entropy loss,
dropless), `shared` (one router for all tasks), `dense_dispatch`, `tiny` (a few steps).
The dense baseline is configs/quickstart.py.
"""

from effjax.config.base import base_config
from effjax.config.variants import parse_arg

VARIANTS = ("topp", "shared", "dense_dispatch", "tiny")


def parse_variants(arg: str | None, config_file: str):
    return parse_arg(arg, config_file, **{name: False for name in VARIANTS})


def moe_model(c, top_p: bool):
    """M3ViT on this ViT: the `model.*` MoE fields of effjax/config/base.py that differ from their defaults."""
    m = c.model
    m.name = "moe_vit"
    m.expert_dim = 32  # a quarter of the dense MLP
    m.moe_every = 2  # MoE MLP in blocks 1, 3, ...
    if top_p:
        m.top_p = 0.4
        m.entropy_weight = 1e-4
        m.capacity_factor = 0.0  # dropless
    return c


def get_config(arg: str | None = None):
    variants = parse_variants(arg, "configs/moe_digits.py")
    c = base_config()
    c.data.name = "digits"
    c.model.patch_size = 2  # 8x8 digits -> 16 patches + class token
    c.train.num_steps = 600
    c.train.batch_size = 64
    c.eval.every_steps = 200
    c.checkpoint.every_steps = 200
    moe_model(c, variants.topp)
    if variants.shared:
        c.model.task_routing = "shared"
    if variants.dense_dispatch:
        c.model.dispatch = "dense"
    if variants.tiny:
        c.model.hidden_dim = 32
        c.model.mlp_dim = 64
        c.model.decoder_dim = 32
        c.model.expert_dim = 16
        c.model.num_experts = 4
        c.model.num_layers = 2
        c.train.num_steps = 10
        c.train.warmup_steps = 2
        c.train.batch_size = 32
        c.eval.every_steps = 10
        c.checkpoint.every_steps = 10
        c.log.every_steps = 5
    return c
