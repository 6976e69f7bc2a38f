"""The main job's supernet (`super_vit`): slimmable widths, Sparsifiner attention, MoE and QAT bits at once.

Same argument as `configs/slim_vit.py` (a dataset, `digits` or `shapes`, and variants,
e.g. `digits,tiny`); this file swaps in the supernet and the menus the sandwich step
samples (and the search later picks from):

  python -m effjax.main --config=configs/supernet.py:digits --workdir=workdirs/supernet_digits

Knobs: encoder width and one decoder width per task (`model.width_menu`), attention keep
ratio in the `model.sparse_layers` (`slim.keep_ratios`), experts per token in the MoE
blocks (`slim.top_ks`; every `model.moe_every`-th block), body weight bits
(`slim.weight_bits`, 32 = float; patch embedding and heads at max(bits, 8)).

Objective: the sandwich rule with every sampled config trained on the labels (the `labels`
variant of `configs/slim_vit.py`: in-place KD 0, CIKD 0, label weight 1). With in-place KD
and CIKD (US-Nets / ECMT) the shapes supernet's full config reached 0.29 mIoU / 1.64 RMSE
against 0.40 / 1.08 on the labels (experiments/controllable_mtl, experiments/pipeline). To
train with distillation instead: `--config.slim.inplace_kd_weight=1 --config.slim.cikd_weight=1
--config.slim.label_weight_small=0`.
"""

from effjax.config.load import sibling
from effjax.subnet.overprovision import served_model


def get_config(arg: str | None = None, config_file: str = "configs/supernet.py"):
    c = sibling(__file__, "slim_vit.py").get_config((arg or "digits") + ",labels", config_file)
    c.model.name = "super_vit"
    c.model.sparse_layers = tuple(range(c.model.num_layers))  # a connectivity predictor in every block
    c.model.predictor_channels = 4
    c.model.predictor_token_reduction = 4  # 17 tokens -> rank 4
    c.model.predictor_distill_weight = 1.0
    c.model.moe_every = 2  # block 1 (of 0..2) has the MoE MLP
    c.model.num_experts = 4
    # top-2 of these costs what the served dense MLP costs; not slimmed, so `wide=<f>` leaves it at the served size
    c.model.expert_dim = served_model(c.model).mlp_dim // 2
    c.model.top_k = 2
    c.model.capacity_factor = 1.25
    c.slim.keep_ratios = (0.25, 0.5, 1.0)
    c.slim.top_ks = (1, 2)
    c.slim.weight_bits = (4, 8, 32)
    if c.data.name == "shapes":  # selected on validation over 0.003, confirmed on fresh seeds (experiments/supernet_recipes)
        c.train.learning_rate = 0.006
    return c
