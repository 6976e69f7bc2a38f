"""Slimmable multi-task ViT supernet trained with the sandwich rule (ECMT / US-Nets), and its baselines.

The argument is a comma-separated list: a dataset (`digits` or `shapes`, default
digits) and optional variants.

  # the supernet (sandwich rule, in-place distillation, CIKD)
  python -m effjax.main --config=configs/slim_vit.py:digits --workdir=/tmp/effjax/slim_digits
  python -m effjax.main --config=configs/slim_vit.py:shapes --workdir=/tmp/effjax/slim_shapes
  # the same without Configuration-Invariant KD
  python -m effjax.main --config=configs/slim_vit.py:shapes,nocikd --workdir=/tmp/effjax/slim_shapes_nocikd
  # one width trained alone (a plain mt_vit with the widths of encoder/decoder multiplier 0.5)
  python -m effjax.main --config=configs/slim_vit.py:shapes,alone=0.5 --workdir=/tmp/effjax/alone_0.5
  # a single-task baseline for delta_m (full width, the other tasks' loss weights 0)
  python -m effjax.main --config=configs/slim_vit.py:shapes,single=depth --workdir=/tmp/effjax/single_depth

Variants: `tiny` (a few steps, for tests), `nocikd`, `labels` (every config on the labels, no
distillation), `bignas` (in-place distillation as BigNAS does it), `shrink` (OFA progressive
shrinking), `project` (NASViT's gradient projection), `max_weight=<w>` (weight of the max config's label loss), `kd_count` (in-place KD of `count`
only, shapes), `alone=<w>`, `single=<task>`, `seed=<n>`, `steps=<n>`,
`label_small=<w>` (label weight of the non-max configs), `head=<class_token|mean_pool>` (how
image-level decoders read the tokens: the class token, or every token averaged after the hidden
layer, so that decoder width acts on all tokens), `decoder=<n>` (max decoder width),
`decoder_blocks=<n>` (slimmable transformer blocks per task before its head; the decoder width
multiplier slims their heads and MLP as the encoder width slims the encoder's), `layers=<n>`
(encoder blocks), `private_norms` (the encoder's LayerNorms keep one scale / bias per menu width),
`wide=<f>` (a supernet f times wider than the configurations it serves, `model.width_overprovision`;
the menu is rescaled so that every served configuration keeps its dims, experiments/supernet_recipes).
"""


from effjax.config.base import base_config
from effjax.config.variants import parse_arg
from effjax.models.vit import check_decoder_blocks, check_image_head
from effjax.subnet import decoder_width, encoder_widths
from effjax.subnet.overprovision import widen

TASKS = {"digits": ("digit", "parity", "ge5"), "shapes": ("segmentation", "depth", "count")}
# variant `bignas`: in-place KD only on the sub-configs, temperature-softened class / per-pixel targets, depth
# distilled in units of its std, KD weight ramped from 0 over the first steps; sub-configs on KD only (BigNAS)
BIGNAS_TEMPERATURE = 1.0
BIGNAS_WARMUP_STEPS = 100
BIGNAS_LABEL_WEIGHT = 0.0
# variant `shrink`: the full config alone until 20% of the steps, then the width menus, then at 50% the keep
# ratios, top-k and bits (OFA's order: elastic width before the other knobs)
SHRINK_OPENS = (0.2, 0.5, 0.5, 0.5)


def get_config(arg: str | None = None, config_file: str = "configs/slim_vit.py"):
    v = parse_arg(arg, config_file, dataset=tuple(TASKS), tiny=False, labels=False, nocikd=False,
                  bignas=False, shrink=False, project=False, max_weight=float, kd_count=False, kd_depth=str, alone=float, single=str, seed=int,
                  steps=int, label_small=float, head=str, decoder=int, decoder_blocks=int, layers=int,
                  private_norms=False, wide=int)
    dataset = v.dataset
    c = base_config()
    c.data.name = dataset
    c.model.name = "slim_vit"
    c.model.hidden_dim = 64
    c.model.num_layers = 3
    c.model.num_heads = 4  # head size 16: widths 0.25..1.0 keep 1..4 heads
    c.model.mlp_dim = 128
    c.model.decoder_dim = 64
    c.train.objective = "sandwich"
    if dataset == "digits":
        c.model.patch_size = 2  # 16 patches + class token
    else:
        c.data.image_size = 16  # CPU scale: 16x16 scenes
        c.data.num_train, c.data.num_val, c.data.num_test = 2000, 500, 500
        c.model.patch_size = 4  # 16 patches + class token; each decodes 4x4 pixels
    c.train.num_steps = 500
    c.train.batch_size = 64
    c.eval.every_steps = 200
    c.checkpoint.every_steps = 200
    c.log.progress_bar = False

    # applied in this order: tiny (later variants scale its widths), the recipes (labels, bignas, shrink, then
    # the options that refine them), the architecture, then alone / single (which slice the result)
    if v.tiny:
        c.model.hidden_dim, c.model.mlp_dim, c.model.decoder_dim, c.model.num_layers = 32, 64, 32, 2
        c.data.num_train, c.data.num_val, c.data.num_test = 128, 64, 64
        c.train.num_steps, c.train.warmup_steps, c.train.batch_size = 6, 2, 16
        c.eval.every_steps = c.checkpoint.every_steps = 3
        c.log.every_steps = 3
        c.eval.batch_size = 64
    if v.seed is not None:
        c.seed = v.seed
    if v.steps is not None:
        c.train.num_steps = v.steps
    if v.labels:  # every config trains on the labels; no in-place KD, no CIKD
        c.slim.inplace_kd_weight, c.slim.cikd_weight, c.slim.label_weight_small = 0.0, 0.0, 1.0
    if v.bignas:  # in-place distillation as BigNAS does it (experiments/supernet_recipes)
        c.slim.inplace_kd_weight, c.slim.cikd_weight, c.slim.label_weight_small = 1.0, 0.0, BIGNAS_LABEL_WEIGHT
        c.slim.kd_temperature, c.slim.kd_depth, c.slim.kd_warmup_steps = BIGNAS_TEMPERATURE, "std", BIGNAS_WARMUP_STEPS
    if v.shrink:  # OFA progressive shrinking, distilled from the full config (experiments/supernet_recipes)
        c.slim.inplace_kd_weight, c.slim.cikd_weight, c.slim.label_weight_small = 1.0, 0.0, 1.0
        c.slim.kd_temperature, c.slim.kd_depth = BIGNAS_TEMPERATURE, "std"
        c.slim.progressive_opens = SHRINK_OPENS
    if v.project:  # NASViT gradient projection (experiments/supernet_recipes)
        c.slim.gradient_projection = True
    if v.max_weight is not None:  # weight of the max config's label loss (experiments/supernet_recipes)
        c.slim.max_loss_weight = v.max_weight
    if v.kd_count:  # in-place KD of the classification task only, on top of the labels (the shapes diagnosis)
        c.slim.inplace_kd_weight, c.slim.kd_tasks = 1.0, ("count",)
    if v.nocikd:
        c.slim.cikd_weight = 0.0
    if v.kd_depth is not None:  # how depth is distilled (after bignas / shrink, which set "std")
        c.slim.kd_depth = v.kd_depth
    if v.label_small is not None:  # label weight of the non-max configs
        c.slim.label_weight_small = v.label_small
    if v.head is not None:
        c.model.image_head = check_image_head(v.head)
    if v.decoder is not None:
        c.model.decoder_dim = v.decoder
    if v.decoder_blocks is not None:
        c.model.decoder_blocks = check_decoder_blocks(v.decoder_blocks)
    if v.layers is not None:
        c.model.num_layers = v.layers
    if v.private_norms:
        c.model.private_norms = True
    if v.wide is not None:
        if v.alone is not None or v.single is not None:
            raise ValueError(f"{config_file}: wide=<f> widens a supernet; alone / single train one model")
        widen(c.model, v.wide)
    if v.alone is not None:
        heads, hidden, mlp = encoder_widths(c.model.hidden_dim, c.model.num_heads, c.model.mlp_dim, v.alone)
        c.model.name = "mt_vit"
        c.model.num_heads, c.model.hidden_dim, c.model.mlp_dim = heads, hidden, mlp
        c.model.decoder_dim = decoder_width(c.model.decoder_dim, v.alone)
        c.train.objective = "multitask"
    if v.single is not None:
        if v.single not in TASKS[dataset]:
            raise ValueError(f"{config_file}: single={v.single!r}: allowed tasks of {dataset}: {TASKS[dataset]}")
        c.model.name = "mt_vit"
        c.train.objective = "multitask"
        for task in TASKS[dataset]:
            c.loss.task_weights[task] = 1.0 if task == v.single else 0.0
    return c
