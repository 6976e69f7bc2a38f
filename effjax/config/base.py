"""The base experiment config: every field effjax reads, with its default and meaning.

Config files in `configs/` start from `base_config()` and override what differs,
so a field is documented once, here. Mesh axes follow MaxText's naming: `data`
(pure data parallel), `fsdp` (data parallel with sharded parameters), `tensor`
(model parallel over heads / MLP width) and `expert` (MoE experts).
"""

from __future__ import annotations

import ml_collections
from ml_collections import config_dict

MESH_AXES = ("data", "fsdp", "tensor", "expert")

# logical axis name -> mesh axes. Parameters and activations use different names so
# a batch dimension and a parameter dimension may both use `fsdp`.
DEFAULT_LOGICAL_AXIS_RULES = (
    ("activation_batch", ("data", "fsdp", "expert")),  # the dense layers split the batch over the expert axis too
    ("activation_length", None),
    ("activation_embed", None),
    ("activation_heads", "tensor"),
    ("activation_mlp", "tensor"),
    ("activation_expert", "expert"),
    ("embed", "fsdp"),
    ("heads", "tensor"),
    ("mlp", "tensor"),
    ("kv", None),
    ("expert", "expert"),
    ("expert_mlp", "tensor"),
    ("decoder", "tensor"),
    ("classes", None),
    ("patch", None),
    ("position", None),
)


def base_config() -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.seed = 0  # seeds parameter init, data order and every per-step random draw

    c.data = ml_collections.ConfigDict()
    c.data.name = "digits"  # one of effjax.data.DATASET_NAMES: digits, shapes, npz, tfds, grain
    c.data.seed = 0  # shapes: generator seed; npz: split seed when the file has no splits
    c.data.image_size = 32  # shapes: scene height = width in pixels
    c.data.num_train = 2000  # shapes: training scenes
    c.data.num_val = 500  # shapes: validation scenes
    c.data.num_test = 500  # shapes: test scenes
    c.data.path = ""  # npz: path of the .npz file
    c.data.tasks = ()  # npz: task list, "name:kind[:num_classes]" each
    c.data.tfds_name = ""  # tfds: dataset name (needs effjax[tfds] and internet)
    c.data.grain_source = ""  # grain: "module.path:function" returning effjax.data.grain_source.GrainSources

    c.model = ml_collections.ConfigDict()
    c.model.name = "mt_vit"  # one of effjax.models.model_names(): the presets, or a model of your own
    c.model.module = ""  # dotted module that registers model.name (effjax.models.register_model); docs/your_model.md
    c.model.patch_size = 2  # pixels per patch side; must divide the image size
    c.model.hidden_dim = 64  # token width
    c.model.num_layers = 4  # encoder blocks
    c.model.num_heads = 4  # attention heads; must divide hidden_dim
    c.model.mlp_dim = 128  # MLP hidden width
    c.model.decoder_dim = 64  # task-head hidden width
    c.model.dtype = "float32"  # compute dtype: float32 or bfloat16 (parameters stay float32)
    # the elastic model (effjax.models.elastic_vit; presets mt_vit, slim_vit, sparse_vit, super_vit)
    c.model.width_menu = (0.25, 0.5, 0.75, 1.0)  # encoder / decoder width multipliers the sandwich step samples and the search picks from
    c.model.image_head = "class_token"  # how image-level heads read the tokens: class_token | mean_pool (hidden layer on every token, averaged)
    c.model.decoder_blocks = 0  # slimmable transformer blocks per task before its head, slimmed by the decoder width
    c.model.private_norms = False  # encoder LayerNorms keep one affine (scale, bias) per menu width
    # f: the supernet has f x the heads, token, MLP and decoder widths of the largest configuration it serves, and
    # its width menu is the served one / f plus 1.0 (effjax.subnet.overprovision; set by `widen`, variant `wide=<f>`)
    c.model.width_overprovision = 1
    # Sparsifiner attention (Wei et al., CVPR 2023) and token pruning
    c.model.sparse_layers = ()  # blocks with a connectivity predictor; () none
    c.model.predictor_channels = 4  # c: reduced query / key channels of the predictor (paper: d_h / 2)
    c.model.predictor_token_reduction = 8  # r: predictor rank M = N // r (paper: 6-8)
    c.model.predictor_top_coefficients = 4  # basis coefficients kept per row (paper: 8)
    c.model.predictor_basis_threshold = 0.02  # basis entries below this magnitude are zero in the mask map
    c.model.predictor_distill_weight = 1.0  # weight of the predictor's distillation to the dense attention (sown aux loss)
    c.model.attention_block = 0  # > 0: keep whole key blocks of this size (effjax.models.block_sparse.BLOCK_SIZES)
    c.model.mask_scores = "predictor"  # what chooses the kept keys: predictor | random (the baseline)
    c.model.attention_path = "auto"  # auto (masked while training or capturing, gathered otherwise) | masked | gathered
    c.model.token_pruning_layers = ()  # blocks after which only the most attended patch tokens go on
    c.model.attention_keep_ratio = 1.0  # attention keep ratio when a call gives no subnet
    c.model.token_keep_ratio = 1.0  # token keep ratio when a call gives no subnet
    # mixture of experts (the elastic model's MoE blocks; moe_vit, M3ViT)
    c.model.moe_every = 0  # every moe_every-th block has an MoE MLP (blocks moe_every-1, 2*moe_every-1, ...); 0 none
    c.model.num_experts = 8  # experts per MoE layer
    c.model.expert_dim = 64  # hidden width of each expert
    c.model.top_k = 2  # experts per token when the subnet sets none
    c.model.capacity_factor = 1.25  # slots per expert = ceil(cf * tokens * k / experts) per example; <= 0 dropless
    c.model.balance_weight = 0.01  # load-balancing loss weight
    c.model.z_loss_weight = 1e-3  # router z-loss weight
    c.model.top_p = 0.0  # moe_vit: > 0 routes top-p by default (SubnetConfig knobs override)
    c.model.dispatch = "gather"  # moe_vit: einsum | gather | ragged | dense | sorted (tools/bench_moe_dispatch.py)
    c.model.task_routing = "per_task"  # moe_vit: per_task (one router and encoder pass per task, M3ViT) | shared
    c.model.renormalize_gates = False  # moe_vit: rescale each token's kept gates to sum to 1 (M3ViT keeps them raw)
    c.model.entropy_weight = 0.0  # moe_vit: router entropy loss weight (Huang et al. use 1e-4 with top-p)
    c.model.router_groups = ()  # moe_vit, after expert merging: per MoE layer, router column -> merged expert

    c.loss = ml_collections.ConfigDict()
    c.loss.task_weights = ml_collections.ConfigDict()  # task name -> loss weight (default 1.0)

    c.train = ml_collections.ConfigDict()
    c.train.batch_size = 64  # global batch size, split over the data-parallel devices
    c.train.num_steps = 300  # optimizer steps
    c.train.optimizer = "adamw"  # adamw | sgd
    c.train.learning_rate = 3e-3  # peak learning rate
    c.train.schedule = "cosine"  # cosine | constant
    c.train.warmup_steps = 20  # linear warm-up steps
    c.train.weight_decay = 1e-4  # decoupled weight decay (adamw)
    c.train.momentum = 0.9  # sgd momentum
    c.train.grad_clip_norm = 1.0  # global-norm clipping; 0 disables
    c.train.objective = "multitask"  # train-step builder in effjax.train.objectives
    c.train.subnet = ml_collections.ConfigDict()  # objective fixed_subnet: the SubnetConfig trained alone (its to_dict() fields; empty = full float)
    c.train.init_from = ""  # workdir whose latest checkpoint initializes the parameters (fine-tuning)
    c.train.halt_after_steps = 0  # save and stop after this many steps in one launch (time-limited slots); 0 never
    c.train.max_skipped_steps = 10  # stop when this many consecutive steps have non-finite updates
    c.train.on_schedule_change = "refuse"  # a resume that changes the lr schedule: refuse | new (follow the new one)

    # objective "sandwich" (effjax/train/sandwich.py): a slimmable supernet's max config trains on the labels,
    # the min config and `num_random` random configs on the weighted sum below; one update from all gradients
    c.slim = ml_collections.ConfigDict()
    c.slim.num_random = 2  # random configs per step besides max and min (US-Nets: 2)
    c.slim.inplace_kd_weight = 1.0  # in-place distillation to the max config's detached predictions (US-Nets: 1)
    c.slim.cikd_weight = 1.0  # Configuration-Invariant KD on encoder tokens (ECMT; weight our choice)
    c.slim.label_weight_small = 0.0  # label loss of the non-max configs (US-Nets: 0)
    c.slim.max_loss_weight = 1.0  # weight of the max config's label loss (MatFormer-style weighting of the nested losses)
    c.slim.kd_temperature = 1.0  # softmax temperature of the class / per-pixel soft targets (loss times T^2)
    c.slim.kd_depth = "l1"  # depth distillation: "l1" (raw units), "std" (L1 in training depth-std units) or "l2std" (half squared error in std units)
    c.slim.kd_tasks = ()  # tasks distilled (e.g. ("count",)); () distills every task
    c.slim.kd_warmup_steps = 0  # KD and CIKD weights ramp linearly from 0 to 1 over these steps (BigNAS-style warm-up)
    # OFA progressive shrinking: () samples every menu from step 0; otherwise 4 non-decreasing fractions of
    # train.num_steps at which the menus of widths, keep ratios, top-k and weight bits open (before the first,
    # only the full config trains; a closed menu stays at its max value)
    c.slim.progressive_opens = ()
    # NASViT: the sub-configs' summed gradient loses its component along the max config's gradient when the two
    # point apart (negative dot product over all parameters); the step logs their cosine either way
    c.slim.gradient_projection = False
    c.slim.keep_ratios = (1.0,)  # attention keep ratios sampled (super_vit)
    c.slim.top_ks = ()  # MoE experts per token sampled (super_vit); () keeps the model's top_k
    c.slim.weight_bits = (32,)  # body weight bits sampled; 32 is float (QAT otherwise)

    c.eval = ml_collections.ConfigDict()
    c.eval.batch_size = 256  # global eval batch size
    c.eval.every_steps = 100  # evaluate on val every this many steps (and at the end)
    c.eval.final_split = "test"  # split evaluated after training

    c.checkpoint = ml_collections.ConfigDict()
    c.checkpoint.every_steps = 100  # save every this many steps (and at the end)
    c.checkpoint.keep = 3  # most recent checkpoints kept
    c.checkpoint.async_save = True  # save in the background while training continues

    c.log = ml_collections.ConfigDict()
    c.log.every_steps = 10  # write training scalars every this many steps
    c.log.progress_bar = True  # tqdm bar on process 0

    c.profile_steps = 0  # trace this many steps (after compilation) with jax.profiler; 0 disables

    c.mesh = ml_collections.ConfigDict()
    c.mesh.data = -1  # data-parallel axis; -1 takes the devices left over by the other axes
    c.mesh.fsdp = 1  # fully-sharded data-parallel axis
    c.mesh.tensor = 1  # tensor-parallel axis
    c.mesh.expert = 1  # expert-parallel axis
    c.logical_axis_rules = DEFAULT_LOGICAL_AXIS_RULES  # logical axis -> mesh axes
    return c


# Optional sections: a config that has one turns the feature on (the trainer builds the AQT provider from
# `quant`, the Sparsifiner objectives read `sparsifiner`, the main job searches after training with `search`).


def quant_section(bits: int | None = None) -> ml_collections.ConfigDict:
    """`config.quant`: quantization-aware training with AQT or qwix (`effjax.quant.aqt_config`)."""
    q = ml_collections.ConfigDict()
    q.backend = "aqt"  # aqt | qwix: the library that quantizes every dot_general
    q.weight_bits = config_dict.placeholder(int)  # body weight bits (4 or 8); None keeps the model float
    q.activation_bits = config_dict.placeholder(int)  # body activation bits (4 or 8); None keeps activations float
    q.first_last_bits = 8  # bits of the patch embedding and the task heads (paper: 8)
    q.activation_calibration = "absmax"  # absmax | absmean (per-token bound activation_clip_scale * mean|x|)
    q.activation_clip_scale = 3.0  # absmean multiplier (paper: 3 * mean|x|)
    q.bwd_bits = config_dict.placeholder(int)  # bits of the backward matmuls; None keeps gradients float
    q.rounding = "nearest"  # nearest | stochastic (of quantized gradients; needs bwd_bits)
    q.weight_bits = bits
    q.activation_bits = bits
    return q


def sparsifiner_section(keep_ratio: float = 1.0, token_keep_ratio: float = 1.0) -> ml_collections.ConfigDict:
    """`config.sparsifiner`: the two training stages of Sparsifiner (`effjax.train.sparsifiner_steps`)."""
    s = ml_collections.ConfigDict()
    s.predictor_loss_weight = 0.01  # stage 1: weight of the sum-MSE attention distillation
    s.distill_logits_weight = 0.5  # stage 2: weight of KL(teacher || student) of the task outputs
    s.distill_tokens_weight = 0.5  # stage 2: weight of the final-token MSE
    s.train_keep_ratio = keep_ratio  # stage 2: rho of the masks while fine-tuning
    s.train_token_keep_ratio = token_keep_ratio  # stage 2: token keep ratio while fine-tuning
    s.teacher_from = ""  # stage 2: teacher workdir; "" uses train.init_from
    return s


def search_section() -> ml_collections.ConfigDict:
    """`config.search`: the main job's zero-shot multi-objective search (`effjax.job.subnet_search`)."""
    s = ml_collections.ConfigDict()
    s.budget = 40  # configurations evaluated (zero-shot, on the validation split)
    s.batch_size = 4  # proposals per round (qLogNEHVI batch)
    s.bits = (4, 8, 32)  # weight bits menu; 32 is float32
    s.max_flops = config_dict.placeholder(float)  # constraint: FLOPs per example <= this
    s.max_bits = config_dict.placeholder(float)  # constraint: model size in bits <= this
    s.score_weights = ml_collections.ConfigDict()  # task -> weight of the score (default 1 each)
    # s.pvq (variant `pvq`): post-training PVQ codes in the bits menu, one per pulse count K:
    #   group_size (L: consecutive input features per group), pulses (K values), scale_bits (b_s: bits of each
    #   group's gain code), rotate (random Hadamard rotation of each kernel's input axis), seed (of the rotation)
    return s
