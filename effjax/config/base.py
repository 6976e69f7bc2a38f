"""The base experiment config: every field effjax reads, with its default and meaning.

Config files in `configs/` start from `base_config()` and override what differs,
so a field is documented once, here. Mesh axes follow MaxText's naming: `data`
(pure data parallel), `fsdp` (data parallel with sharded parameters), `tensor`
(model parallel over heads / MLP width) and `expert` (MoE experts).
"""

from __future__ import annotations

import ml_collections

MESH_AXES = ("data", "fsdp", "tensor", "expert")

# logical axis name -> mesh axes. Parameters and activations use different names so
# a batch dimension and a parameter dimension may both use `fsdp`.
DEFAULT_LOGICAL_AXIS_RULES = (
    ("activation_batch", ("data", "fsdp")),
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
    c.model.name = "mt_vit"  # one of effjax.models.MODEL_NAMES
    c.model.patch_size = 2  # pixels per patch side; must divide the image size
    c.model.hidden_dim = 64  # token width
    c.model.num_layers = 4  # encoder blocks
    c.model.num_heads = 4  # attention heads; must divide hidden_dim
    c.model.mlp_dim = 128  # MLP hidden width
    c.model.decoder_dim = 64  # task-head hidden width
    c.model.dtype = "float32"  # compute dtype: float32 or bfloat16 (parameters stay float32)

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
