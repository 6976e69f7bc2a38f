"""Multi-task MoE ViT (M3ViT) on `shapes` (segmentation, depth, count); MoE MLPs in blocks 1 and 3.

32x32 scenes, patch 4 (64 tokens + class token), one router per task, 8 experts of
hidden width 32, top-2:

  python -m effjax.main --config=configs/moe_shapes.py --workdir=/tmp/effjax/moe_shapes

Variants (comma-separated): `topp`, `shared`, `dense_dispatch`, `tiny` (as in
configs/moe_digits.py). The dense baseline is configs/shapes_vit.py.
"""

from effjax.config.base import base_config

VARIANTS = ("topp", "shared", "dense_dispatch", "tiny")


def get_config(arg: str | None = None):
    chosen = {v for v in (arg or "").split(",") if v}
    if chosen - set(VARIANTS):
        raise ValueError(f"configs/moe_shapes.py: unknown variant(s) {sorted(chosen - set(VARIANTS))}; allowed: {list(VARIANTS)}")
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
    m = c.model
    m.name = "moe_vit"
    m.num_experts = 8  # experts per MoE layer
    m.expert_dim = 32  # hidden width of each expert
    m.moe_every = 2  # MoE MLP in blocks 1 and 3
    m.top_k = 2  # default experts per token (SubnetConfig.moe_top_k overrides)
    m.capacity_factor = 1.25  # slots per expert = ceil(cf * tokens * k / E) per example; <= 0 is dropless
    m.dispatch = "gather"  # einsum | gather | ragged | dense
    m.task_routing = "per_task"  # per_task | shared
    m.renormalize_gates = False
    m.balance_weight = 0.01  # load-balancing loss weight
    m.z_loss_weight = 1e-3  # router z-loss weight
    m.entropy_weight = 0.0  # router entropy loss weight
    m.top_p = 0.0  # > 0: route top-p by default (SubnetConfig knobs override)
    m.router_groups = ()  # after merging: per MoE layer, router column -> merged expert
    if "topp" in chosen:
        m.top_p, m.entropy_weight, m.capacity_factor = 0.4, 1e-4, 0.0
    if "shared" in chosen:
        m.task_routing = "shared"
    if "dense_dispatch" in chosen:
        m.dispatch = "dense"
    if "tiny" in chosen:
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

