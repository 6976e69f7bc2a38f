"""Multi-task MoE ViT (M3ViT) on `digits`: the quickstart ViT with MoE MLPs in blocks 1 and 3.

One router per task; 8 experts of hidden width 32 (a quarter of the dense MLP), top-2:

  python -m effjax.main --config=configs/moe_digits.py --workdir=/tmp/effjax/moe_digits

Variants (comma-separated): `topp` (top-p routing, p=0.4, with the entropy loss,
dropless), `shared` (one router for all tasks), `dense_dispatch`, `tiny` (a few steps).
The dense baseline is configs/quickstart.py.
"""

from effjax.config.base import base_config

VARIANTS = ("topp", "shared", "dense_dispatch", "tiny")


def moe_model(c, top_p: bool):
    m = c.model
    m.name = "moe_vit"
    m.num_experts = 8  # experts per MoE layer
    m.expert_dim = 32  # hidden width of each expert
    m.moe_every = 2  # MoE MLP in the last block of every 2 (blocks 1, 3, ...)
    m.top_k = 2  # default experts per token (SubnetConfig.moe_top_k overrides)
    m.capacity_factor = 1.25  # slots per expert = ceil(cf * tokens * k / E) per example; <= 0 is dropless
    m.dispatch = "gather"  # einsum | gather | ragged | dense (tools/bench_moe_dispatch.py)
    m.task_routing = "per_task"  # per_task (one router per task) | shared
    m.renormalize_gates = False  # M3ViT's code keeps the raw top-k probabilities
    m.balance_weight = 0.01  # load-balancing loss weight
    m.z_loss_weight = 1e-3  # router z-loss weight
    m.entropy_weight = 0.0  # router entropy loss weight (Huang et al. use 1e-4 with top-p)
    m.top_p = 0.0  # > 0: route top-p by default (SubnetConfig knobs override)
    m.router_groups = ()  # after merging: per MoE layer, router column -> merged expert
    if top_p:
        m.top_p = 0.4
        m.entropy_weight = 1e-4
        m.capacity_factor = 0.0
    return c


def parse_variants(arg, path: str) -> set:
    chosen = {v for v in (arg or "").split(",") if v}
    unknown = chosen - set(VARIANTS)
    if unknown:
        raise ValueError(f"{path}: unknown variant(s) {sorted(unknown)}; allowed: {list(VARIANTS)}")
    return chosen


def get_config(arg: str | None = None):
    variants = parse_variants(arg, "configs/moe_digits.py")
    c = base_config()
    c.data.name = "digits"
    c.model.patch_size = 2  # 8x8 digits -> 16 patches + class token
    c.train.num_steps = 600
    c.train.batch_size = 64
    c.eval.every_steps = 200
    c.checkpoint.every_steps = 200
    moe_model(c, "topp" in variants)
    if "shared" in variants:
        c.model.task_routing = "shared"
    if "dense_dispatch" in variants:
        c.model.dispatch = "dense"
    if "tiny" in variants:
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
