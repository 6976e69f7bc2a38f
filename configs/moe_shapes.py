"""Multi-task MoE ViT (M3ViT) on `shapes` (segmentation, depth, count); MoE MLPs in blocks 1 and 3.

32x32 scenes, patch 4 (64 tokens + class token), one router per task, 8 experts of
hidden width 32, top-2:

  python -m effjax.main --config=configs/moe_shapes.py --workdir=/tmp/effjax/moe_shapes

Variants (comma-separated): `topp`, `shared`, `dense_dispatch`, `tiny` (as in
configs/moe_digits.py). The dense baseline is configs/shapes_vit.py.
"""

from effjax.config.base import base_config
from effjax.config.load import sibling

def get_config(arg: str | None = None):
    moe_digits = sibling(__file__, "moe_digits.py")
    chosen = moe_digits.parse_variants(arg, "configs/moe_shapes.py")
    c = base_config()
    c.data.name = "shapes"
    c.data.image_size = 32
    c.model.patch_size = 4
    c.model.hidden_dim = 64
    c.model.num_layers = 4
    c.model.decoder_dim = 64
    c.train.num_steps = 1500
    c.train.batch_size = 64
    c.eval.every_steps = 500
    c.checkpoint.every_steps = 500
    moe_digits.moe_model(c, chosen.topp)
    m = c.model
    if chosen.shared:
        m.task_routing = "shared"
    if chosen.dense_dispatch:
        m.dispatch = "dense"
    if chosen.tiny:
        c.data.num_train, c.data.num_val, c.data.num_test = 256, 64, 64
        m.hidden_dim, m.mlp_dim, m.decoder_dim, m.num_layers = 32, 64, 32, 2
        m.expert_dim, m.num_experts = 16, 4
        c.train.num_steps = 12
        c.train.warmup_steps = 2
        c.train.batch_size = 32
        c.eval.every_steps = 6
        c.checkpoint.every_steps = 6
        c.log.every_steps = 3
    return c

