"""Zero-shot search of a trained supernet's accuracy-FLOPs-bits Pareto front.

Every candidate is a `SubnetConfig` (encoder width, one decoder width per task,
weight bits, and for the `super_vit` supernet the attention keep ratio and MoE
top-k it was trained on). It is evaluated on the validation split with no retraining: the
supernet's weights sliced to the subnet and quantized after training (per-channel
symmetric weights, `weight_quant`). FLOPs come from the shared cost model and bits
from the export plan (exactly what an export writes), so only the score is
modeled by the search's GP; FLOPs and bits are computed objectives.

Post-training PVQ (van der Ouderaa et al. 2024; `config.search.pvq`, off by default):
each PVQ setting (group size L, pulses K, gain bits b_s, Hadamard rotation) is one more
value of the searched `weight_bits` Ordinal, named like "pvq_L8_K13_b4" and placed in
the menu by its bits per weight ((ceil(log2 N(L, K)) + b_s) / L) among the integer
bits, so the Ordinal stays ordered by model size. A PVQ point's SubnetConfig has
`weight_bits=None` (the body is not integer) and `first_last_bits=8` (patch embedding
and heads int8 per channel, as for int4); its PVQSpec is the point's "pvq" entry in
pareto.json (None for integer / float points). Its body kernels are PVQ-coded on their
active slice (`export.pvq_matrices`), the bits objective is `export.pvq_payload_bits`
(exactly what the export writes), and BOPs price the body at 32-bit weights (the decoded
float kernels the export computes with) and the first/last layers at 8.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import os
import threading
from typing import Any, Callable, Mapping, Sequence

import flax.linen as nn
import jax
import numpy as np

from effjax import search
from effjax.compress import export as export_lib
from effjax.compress.cost import total_cost
from effjax.compress.cost_elastic import model_layers
from effjax.data import pipeline
from effjax.data.specs import TaskSpec
from effjax.job import json_safe
from effjax.models.elastic_vit import ElasticViT
from effjax.quant.pvq import PVQSpec
from effjax.quant.pvq.counting import fits_uint64
from effjax.subnet import SubnetConfig
from effjax.train import losses
from effjax.train import mesh as mesh_lib
from effjax.train import step as step_lib
from effjax.train.trainer import Setup, evaluate

FLOAT_BITS = 32
PVQ_FIELDS = {"group_size": 8, "pulses": (13,), "scale_bits": 4, "rotate": False, "seed": 0}
PVQ_FIRST_LAST_BITS = 8


def task_score(task: TaskSpec, value: float) -> float:
    """A task metric on a higher-is-better [0, 1] scale: accuracy and mIoU as they are; depth RMSE
    as 1 - RMSE / std (the RMSE of predicting the mean is about 1 std)."""
    if task.kind == "depth":
        return max(0.0, 1.0 - value / task.value_std)
    return value


def config_score_weights(config) -> dict[str, float]:
    """`config.search.score_weights`, or {} (every task weighted 1) for a run trained without a search."""
    return dict(config.search.score_weights) if "search" in config else {}


def score(tasks, metrics: Mapping[str, float], weights: Mapping[str, float]) -> float:
    total = sum(float(weights.get(t.name, 1.0)) for t in tasks)
    return sum(float(weights.get(t.name, 1.0)) * task_score(t, metrics[t.name]) for t in tasks) / total


def _is_int(value) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def pvq_menu(config) -> dict[str, PVQSpec]:
    """The PVQ settings of `config.search.pvq` by menu name ({} when absent or None); bad fields raise ValueError.

    Fields: group_size (L, int >= 1), pulses (K, an int >= 1 or a list of them: one setting each),
    scale_bits (b_s, int in [1, 16]), rotate (bool), seed (int, of the rotation signs)."""
    search_config = config.get("search", None) if hasattr(config, "get") else None
    pvq = search_config.get("pvq", None) if search_config is not None else None
    if pvq is None:
        return {}
    given = dict(pvq.to_dict() if hasattr(pvq, "to_dict") else pvq)
    unknown = sorted(set(given) - set(PVQ_FIELDS))
    if unknown:
        raise ValueError(f"config.search.pvq: unknown fields {unknown}; allowed: {sorted(PVQ_FIELDS)}")
    knobs = {**PVQ_FIELDS, **given}
    group_size, scale_bits, rotate, seed = knobs["group_size"], knobs["scale_bits"], knobs["rotate"], knobs["seed"]
    pulses = (knobs["pulses"],) if _is_int(knobs["pulses"]) else tuple(knobs["pulses"])
    if not _is_int(group_size) or group_size < 1:
        raise ValueError(f"config.search.pvq.group_size={group_size!r}: must be an integer >= 1")
    if not pulses or not all(_is_int(k) and k >= 1 for k in pulses) or len(set(pulses)) != len(pulses):
        raise ValueError(f"config.search.pvq.pulses={knobs['pulses']!r}: must be an integer >= 1 or a list of distinct ones")
    if not _is_int(scale_bits) or not 1 <= scale_bits <= 16:
        raise ValueError(f"config.search.pvq.scale_bits={scale_bits!r}: must be an integer in [1, 16]")
    if not isinstance(rotate, (bool, np.bool_)):
        raise ValueError(f"config.search.pvq.rotate={rotate!r}: must be True or False")
    if not _is_int(seed) or seed < 0:
        raise ValueError(f"config.search.pvq.seed={seed!r}: must be an integer >= 0")
    menu = {}
    for k in sorted(pulses):
        if not fits_uint64(int(group_size), int(k)):
            raise ValueError(f"config.search.pvq: group_size={group_size}, pulses={k} has N(L, K) >= 2^64 codewords; "
                             "allowed: index_bits <= 64 (smaller L or K)")
        name = f"pvq_L{group_size}_K{k}_b{scale_bits}" + ("_rot" if rotate else "")
        menu[name] = PVQSpec(int(group_size), int(k), int(scale_bits), bool(rotate), int(seed))
    return menu


def pvq_of(params: Mapping[str, Any], menu: Mapping[str, PVQSpec]) -> PVQSpec | None:
    """The PVQSpec a search point's `weight_bits` value names (None for integer or float bits)."""
    value = params["weight_bits"]
    if not isinstance(value, str):
        return None
    if value not in menu:
        raise ValueError(f"weight_bits={value!r}: not a PVQ setting of config.search.pvq; allowed: {sorted(menu)}")
    return menu[value]


def subnet_from_params(params: Mapping[str, Any], tasks) -> SubnetConfig:
    """The SubnetConfig of a search point (a PVQ point: float body bits, int8 first/last layers; see `pvq_of`)."""
    if isinstance(params["weight_bits"], str):
        return dataclasses.replace(subnet_from_params({**params, "weight_bits": FLOAT_BITS}, tasks),
                                   first_last_bits=PVQ_FIRST_LAST_BITS)
    bits = int(params["weight_bits"])
    return SubnetConfig(
        encoder_width=float(params["encoder_width"]),
        decoder_widths=tuple(sorted((t.name, float(params[f"decoder_width_{t.name}"])) for t in tasks)),
        attention_keep_ratio=float(params.get("attention_keep_ratio", 1.0)),
        moe_top_k=int(params.get("moe_top_k", 0)),
        weight_bits=None if bits >= FLOAT_BITS else bits,
        first_last_bits=None if bits >= FLOAT_BITS else max(bits, 8),
    )


def knob_menus(config) -> dict[str, list]:
    """The searched menus beyond widths and bits: the supernet's keep ratios and top-k (those it was trained on)."""
    slim = config.get("slim", None) or {}
    menus = {"attention_keep_ratio": sorted(float(r) for r in slim.get("keep_ratios", (1.0,))),
             "moe_top_k": sorted(int(k) for k in slim.get("top_ks", ()))}
    return {name: values for name, values in menus.items() if len(values) > 1}


def bits_values(bits_menu, pvq_settings: Mapping[str, PVQSpec] | None = None) -> list:
    """The `weight_bits` Ordinal's values: integer bits and PVQ setting names, ordered by bits per weight."""
    values = [(float(b), 1, int(b)) for b in bits_menu]
    values += [(spec.bits_per_weight, 0, name) for name, spec in (pvq_settings or {}).items()]
    return [value for _, _, value in sorted(values, key=lambda v: v[:2])]


def search_space(menu, tasks, bits_menu, extra_menus: Mapping[str, Sequence] | None = None,
                 pvq_settings: Mapping[str, PVQSpec] | None = None, constraints: Sequence = ()) -> search.Space:
    params = [search.Ordinal("encoder_width", list(menu))]
    params += [search.Ordinal(f"decoder_width_{t.name}", list(menu)) for t in tasks]
    params += [search.Ordinal(name, list(values)) for name, values in (extra_menus or {}).items()]
    params.append(search.Ordinal("weight_bits", bits_values(bits_menu, pvq_settings)))
    return search.Space(params, constraints)


def full_params(config, tasks) -> dict:
    """The search parameters of the full supernet (every width 1, dense, most experts, float)."""
    params = {"encoder_width": 1.0, "weight_bits": FLOAT_BITS, **{f"decoder_width_{t.name}": 1.0 for t in tasks}}
    params.update({name: max(values) for name, values in knob_menus(config).items()})
    return params


@dataclasses.dataclass
class SubnetEvaluator:
    """Prices and scores subnets of one trained supernet; caches one compiled eval per width config."""

    setup: Setup
    params: Any  # supernet parameters (global arrays)
    score_weights: Mapping[str, float]
    traced_knobs: bool = True  # one program per encoder width; False: one per configuration (the slower reference)
    programs: Mapping[float, Callable] | None = None  # from `precompile_knob_steps` on the same setup

    def __post_init__(self):
        self.tasks = self.setup.dataset.tasks
        self._traced = self.traced_knobs and isinstance(self.setup.model, ElasticViT)  # knob steps (`eval_step`)
        self.boxed = jax.eval_shape(lambda: self.setup.model.init(
            jax.random.PRNGKey(0), np.zeros((1,) + self.setup.dataset.image_shape, np.float32))["params"])
        self.host_params = jax.tree.map(np.asarray, jax.device_get(self.params))
        self.param_slots = export_lib.param_slots(self.boxed, self.tasks)
        self._layers: dict[SubnetConfig, list] = {}  # cost layers per subnet shape
        self._bits: dict[tuple, int] = {}  # export bits per (widths and bits, PVQ spec)
        self._eval_steps: dict[Any, Callable] = dict(self.programs or {})  # encoder width (traced knobs) or
        # SubnetConfig -> jitted step
        self.pvq_settings = pvq_menu(self.setup.config)
        self.pvq_cache: dict = {}  # PVQ codes of active kernel slices, shared by evaluation and export
        self._metrics: dict[tuple, dict[str, float]] = {}  # (subnet, split, PVQ spec) -> metrics

    @property
    def compiled_programs(self) -> int:
        """Evaluation programs compiled so far (one per encoder width with traced knobs, else one per configuration)."""
        return len(self._eval_steps)

    def candidate(self, params: Mapping[str, Any]) -> tuple[SubnetConfig, PVQSpec | None]:
        """(SubnetConfig, PVQSpec or None) of a search point."""
        return subnet_from_params(params, self.tasks), pvq_of(params, self.pvq_settings)

    def plan(self, subnet: SubnetConfig, pvq: PVQSpec | None = None):
        return export_lib.plan_slots(self.param_slots, self.setup.config.model, self.tasks, subnet, pvq)

    def cost(self, subnet: SubnetConfig, pvq: PVQSpec | None = None) -> dict[str, float]:
        """FLOPs, parameters, BOPs and export bits of a subnet. The layers are shared by every bit setting of a
        shape, the bits by every keep ratio and top-k of a width and bit setting (the search prices thousands)."""
        shape = subnet.without_bits()
        if shape not in self._layers:
            self._layers[shape] = model_layers(self.setup.config.model, self.setup.dataset.image_shape, self.tasks, shape)
        layers = self._layers[shape]
        c = total_cost(layers, dataclasses.replace(subnet, activation_bits=None))
        bops = c.bops if pvq is None else _decoded_float_bops(layers, subnet.first_last_bits)
        storage = (dataclasses.replace(subnet, attention_keep_ratio=1.0, token_keep_ratio=1.0, moe_top_k=0,
                                       moe_top_p=0.0), pvq)
        if storage not in self._bits:
            self._bits[storage] = export_lib.total_bits(self.plan(*storage))
        return {"flops": c.flops, "params": c.params, "bits": self._bits[storage], "bops": bops}

    def metrics(self, subnet: SubnetConfig, split: str, pvq: PVQSpec | None = None) -> dict[str, float]:
        """Every task's metric and the score of `subnet` on `split` (computed once per subnet, split and PVQ spec:
        the front's records reuse the search's validation runs)."""
        key = (subnet, split, pvq)
        if key not in self._metrics:
            params = export_lib.quantized_params(self.host_params, self.plan(subnet, pvq), self.pvq_cache)
            params = jax.device_put(params, self.setup.state_shardings.params)
            values = evaluate(self.setup, params, split, self.eval_step(subnet))
            values["score"] = score(self.tasks, values, self.score_weights)
            self._metrics[key] = values
        return dict(self._metrics[key])

    def eval_step(self, subnet: SubnetConfig) -> Callable:
        """The batch metric sums of `subnet` (its bits are in the parameters): one compiled program per
        encoder width, decoder widths (menu indices), keep ratio and top-k passed as traced values."""
        knobs = knob_args(self.setup, subnet) if self._traced else None
        if knobs is None:
            return self._static_eval_step(subnet.without_bits())
        if subnet.encoder_width not in self._eval_steps:
            self._eval_steps[subnet.encoder_width] = knob_step(self.setup, subnet.encoder_width)
        step = self._eval_steps[subnet.encoder_width]
        return lambda params, batch: step(params, batch, *knobs)

    def precompile(self, encoder_widths: Sequence[float]) -> None:
        """Start compiling the evaluation program of each encoder width in worker threads, in the given order.

        XLA compiles without holding the GIL, so the search evaluates and fits its model while the programs
        of widths it has not reached yet compile beside it; `eval_step` waits for a program only when it
        needs it. A no-op where programs are compiled per configuration."""
        if not self._traced:
            return
        widths = [float(w) for w in encoder_widths if float(w) not in self._eval_steps]
        self._eval_steps.update(precompile_knob_steps(self.setup, widths, workers=os.cpu_count() or 1))

    def _static_eval_step(self, subnet: SubnetConfig) -> Callable:
        if subnet not in self._eval_steps:
            self._eval_steps[subnet] = jax.jit(
                step_lib.make_eval_step(self.setup.model, self.tasks, subnet),
                in_shardings=(self.setup.state_shardings.params, self.setup.batch_sharding))
        return self._eval_steps[subnet]


def max_top_k(setup: Setup) -> int:
    """The supernet's most experts per token over the searched menu (0: a model without the knob)."""
    if not setup.model.moe_every:
        return 0
    default = setup.model.default_top_k
    return max(knob_menus(setup.config).get("moe_top_k", [default]) + [default])


def knob_args(setup: Setup, subnet: SubnetConfig) -> tuple | None:
    """The traced arguments of `subnet` for its encoder width's knob step (decoder menu indices, keep ratio,
    top-k), or None when a decoder width is off the menu."""
    menu = tuple(sorted(float(w) for w in setup.model.width_menu))
    decoder_widths = [subnet.decoder_width(t.name) for t in setup.dataset.tasks]
    if any(w not in menu for w in decoder_widths):
        return None
    return (np.asarray([menu.index(w) for w in decoder_widths], np.int32), np.float32(subnet.attention_keep_ratio),
            np.int32(subnet.moe_top_k or setup.model.default_top_k))


def knob_step(setup: Setup, encoder_width: float) -> Callable:
    """The jitted evaluation step of one encoder width with the other knobs traced (`make_knob_eval_step`)."""
    menu = tuple(sorted(float(w) for w in setup.model.width_menu))
    return jax.jit(make_knob_eval_step(setup.model, setup.dataset.tasks, encoder_width, menu, max_top_k(setup)),
                   in_shardings=(setup.state_shardings.params, setup.batch_sharding)
                   + (mesh_lib.replicated(setup.mesh),) * 3)


def precompile_knob_steps(setup: Setup, encoder_widths: Sequence[float], workers: int = 1,
                          start: threading.Event | None = None) -> dict[float, Callable]:
    """Lower and compile the evaluation program of each encoder width in `workers` threads, in the given order.

    Needs only the setup's shapes, so the main job starts it before training: the search's programs compile
    while the train step compiles. `start`, when given, holds the work back until it is set (the main job sets
    it once the train step is traced). Each returned step waits for its program when first called. Empty for a
    model without traced knobs (not an ElasticViT)."""
    if not isinstance(setup.model, ElasticViT) or not encoder_widths:
        return {}
    params = jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, np.float32), setup.abstract_state.params)
    knobs = (np.zeros(len(setup.dataset.tasks), np.int32), np.float32(1.0), np.int32(setup.model.default_top_k))
    bs = setup.config.eval.batch_size
    local = next(iter(pipeline.eval_batches(setup.dataset, "val", bs)))

    def compiled(width: float):
        if start is not None:
            start.wait()
        with jax.set_mesh(setup.mesh), nn.logical_axis_rules(setup.rules):
            batch = pipeline.to_global(local, setup.batch_sharding, bs)
            return knob_step(setup, width).lower(params, batch, *knobs).compile()

    pool = concurrent.futures.ThreadPoolExecutor(max_workers=max(1, min(len(encoder_widths), workers)))
    steps = {float(w): _Compiling(pool.submit(compiled, float(w))) for w in encoder_widths}
    pool.shutdown(wait=False)
    return steps


class _Compiling:
    """A program compiling in a worker thread; calling it waits for the compiled executable."""

    def __init__(self, future: concurrent.futures.Future):
        self.future = future

    def __call__(self, *args):
        return self.future.result()(*args)


def make_knob_eval_step(model, tasks: Sequence[TaskSpec], encoder_width: float, menu: Sequence[float],
                        max_top_k: int) -> Callable:
    """`eval_step(params, batch, decoder_index, keep_ratio, top_k)` -> metric sums per task.

    The encoder width fixes the program's shapes; each task's decoder width is one branch of a
    `lax.switch` over the width menu (`decoder_index[i]` picks task i's); the supernet's keep ratio and
    top-k are traced scalars (the masked attention path, as in the sandwich step). So the search
    compiles one program per encoder width, not one per configuration.
    """

    def decoder_branch(task: str, width: float, image_hw) -> Callable:
        return lambda params, tokens: model.apply({"params": params}, tokens, task, width, image_hw, method="decode")

    def eval_step(params, batch, decoder_index, keep_ratio, top_k):
        images = batch["image"]
        knobs = (keep_ratio, top_k, max_top_k) if max_top_k else ()
        tokens = model.apply({"params": params}, images, encoder_width, *knobs, method="encode")
        hw = images.shape[1:3]
        preds = {t.name: jax.lax.switch(decoder_index[i], [decoder_branch(t.name, w, hw) for w in menu], params, tokens)
                 for i, t in enumerate(tasks)}
        return {t.name: losses.metric_sums(t, preds[t.name], batch[t.name], batch["mask"]) for t in tasks}

    return eval_step


def _decoded_float_bops(layers, first_last_bits: int) -> float:
    """BOPs of a PVQ point: float activations, body weights decoded to float32, first/last layers integer."""
    return sum((layer.macs * (first_last_bits if layer.group in ("embed", "head") and not layer.activation_only
                              else FLOAT_BITS) * FLOAT_BITS for layer in layers), 0.0)


def cost_limits(search_config) -> dict[str, float]:
    """`config.search.max_flops` / `max_bits` (None: no limit) as {cost key: limit}; bad values raise ValueError."""
    limits = {}
    for field, key in (("max_flops", "flops"), ("max_bits", "bits")):
        value = search_config.get(field, None) if hasattr(search_config, "get") else None
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not np.isfinite(value) or value <= 0:
            raise ValueError(f"config.search.{field}={value!r}: must be a number > 0 or None (no limit)")
        limits[key] = float(value)
    return limits


def run_search(evaluator: SubnetEvaluator, search_config, workdir: str, seed: int) -> search.SearchResult:
    tasks = evaluator.tasks
    cache: dict[tuple[SubnetConfig, PVQSpec | None], dict] = {}

    def cost_of(params):
        candidate = evaluator.candidate(params)
        if candidate not in cache:
            cache[candidate] = evaluator.cost(*candidate)
        return cache[candidate]

    limits = cost_limits(search_config)
    constraints = [lambda p, key=key, limit=limit: cost_of(p)[key] <= limit for key, limit in limits.items()]
    space = search_space(evaluator.setup.config.model.width_menu, tasks, search_config.bits,
                         knob_menus(evaluator.setup.config), evaluator.pvq_settings, constraints)

    def fn(params):
        subnet, pvq = evaluator.candidate(params)
        return {"score": evaluator.metrics(subnet, "val", pvq)["score"]}

    objectives = [search.Objective("score", "max"),
                  search.Objective("flops", "min", fn=lambda p: cost_of(p)["flops"]),
                  search.Objective("bits", "min", fn=lambda p: cost_of(p)["bits"])]
    # the full supernet at the widest and the narrowest integer bits of the menu go first: the
    # score-maximizing corner anchors the front's accurate end, which a budget of a few dozen
    # evaluations in thousands of configurations may otherwise never reach
    bits = sorted(int(b) for b in search_config.bits)
    evaluator.precompile(sorted(evaluator.setup.config.model.width_menu, reverse=True))  # the corners are at width 1
    corners = [dict(full_params(evaluator.setup.config, tasks), weight_bits=b) for b in dict.fromkeys((bits[-1], bits[0]))]
    corners = [p for p in corners if space.is_feasible(space.validate(p))]
    return search.optimize(fn, space, objectives, budget=int(search_config.budget), seed=seed,
                           workdir=os.path.join(workdir, "search"), batch_size=int(search_config.batch_size),
                           progress=jax.process_index() == 0, initial_params=corners)


def pareto_points(evaluator: SubnetEvaluator, result: search.SearchResult) -> list[dict]:
    """Every evaluated config with val (and, for the front, test) metrics, cost and the Pareto flag."""
    history = list(result.history)
    values = np.array([[e.values["score"], -e.values["flops"], -e.values["bits"]] for e in history])
    front = search.non_dominated_mask(values) if len(history) else np.zeros(0, bool)  # ties: all flagged
    points = []
    for e, on_front in zip(history, front):
        subnet, pvq = evaluator.candidate(e.params)
        metrics = _split_metrics(evaluator, subnet, ("val", "test") if on_front else ("val",), pvq)
        points.append({"id": int(e.id), "config": subnet.to_dict(), "params": dict(e.params), "metrics": metrics,
                       "cost": evaluator.cost(subnet, pvq), "pareto": bool(on_front), "pvq": pvq_dict(pvq)})
    return points


def pvq_dict(pvq: PVQSpec | None) -> dict | None:
    """A point's "pvq" entry: the PVQSpec fields plus bits_per_weight (None for integer / float points)."""
    return None if pvq is None else {**dataclasses.asdict(pvq), "bits_per_weight": pvq.bits_per_weight}


def pvq_from_point(point: Mapping[str, Any]) -> PVQSpec | None:
    entry = point.get("pvq")
    return PVQSpec(**{f.name: entry[f.name] for f in dataclasses.fields(PVQSpec)}) if entry else None


def full_point(evaluator: SubnetEvaluator, config) -> dict:
    """The full supernet (every width 1, dense, most experts, float) as a pareto.json record: its config,
    val and test metrics (never used for selection) and cost."""
    subnet = subnet_from_params(full_params(config, evaluator.tasks), evaluator.tasks)
    return {"config": subnet.to_dict(), "metrics": _split_metrics(evaluator, subnet, ("val", "test")),
            "cost": evaluator.cost(subnet)}


def _split_metrics(evaluator: SubnetEvaluator, subnet: SubnetConfig, splits: Sequence[str],
                   pvq: PVQSpec | None = None) -> dict:
    """`{split}_{metric}` of each split, and "score": the validation score (what points are selected on)."""
    metrics = {f"{split}_{k}": v for split in splits for k, v in evaluator.metrics(subnet, split, pvq).items()}
    metrics["score"] = metrics["val_score"]
    return metrics


def write_pareto_json(points, path: str, full: dict | None = None) -> None:
    """`{"points": [...], "full": {...}}`: every evaluated point (test metrics for the front) and the full supernet."""
    json_safe.dump({"points": points} if full is None else {"points": points, "full": full}, path)


def score_definition(tasks, weights: Mapping[str, float]) -> str:
    """`score` in words, for axis labels: the (weighted) mean of each task's metric on a [0, 1] scale."""
    terms = []
    for t in tasks:
        metric = f"(1 - RMSE/std) of {t.name}" if t.kind == "depth" else f"{t.name} {t.metric}"
        w = float(weights.get(t.name, 1.0))
        terms.append(metric if w == 1.0 else f"{w:g} x {metric}")
    weighted = any(float(weights.get(t.name, 1.0)) != 1.0 for t in tasks)
    return f"validation score = {'weighted ' if weighted else ''}mean of " + ", ".join(terms)


def _log_ticks(ax, values) -> None:
    """Major ticks at 1-2-5 x 10^k inside the data's range (at most 6), short engineering labels, no
    minor labels: matplotlib's default labels every minor tick of a log axis spanning under a decade,
    and those labels overlap."""
    from matplotlib.ticker import EngFormatter, FixedLocator, NullFormatter

    low, high = min(values), max(values)
    decades = range(int(np.floor(np.log10(low))) - 1, int(np.ceil(np.log10(high))) + 1)
    candidates = [mult * 10.0**k for mult in (1, 2, 5) for k in decades]
    ticks = sorted(t for t in candidates if low / 1.25 <= t <= high * 1.25)
    while len(ticks) > 6:
        ticks = ticks[::2]
    if len(ticks) < 2:
        ticks = [low, high] if high > low * 1.3 else [low]
    ax.xaxis.set_major_locator(FixedLocator(ticks))
    ax.xaxis.set_major_formatter(EngFormatter(places=0 if all(float(t).is_integer() for t in ticks) else 1, sep=""))
    ax.xaxis.set_minor_formatter(NullFormatter())


def pareto_figure(points, title: str, score_label: str = "validation score"):
    """The matplotlib figure of `plot_pareto` (the caller closes it)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.6))
    for ax, key, label in ((axes[0], "flops", "FLOPs per example"), (axes[1], "bits", "model size (bits)")):
        for pvq, marker, suffix in ((False, "o", ""), (True, "^", ", PVQ")):
            chosen = [p for p in points if bool(p.get("pvq")) == pvq]
            if pvq and not chosen:
                continue
            for on_front, size, color, name in ((False, 18, "0.6", "evaluated"),
                                                (True, 36, "C3", "Pareto front (3 objectives)")):
                shown = [p for p in chosen if bool(p["pareto"]) == on_front]
                ax.scatter([p["cost"][key] for p in shown], [p["metrics"]["score"] for p in shown], s=size, c=color,
                           marker=marker, label=name + suffix)
        ax.set_xscale("log")
        _log_ticks(ax, [p["cost"][key] for p in points])
        ax.set_xlabel(label)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("validation score")
    axes[0].legend(loc="lower right")
    fig.suptitle(title)
    fig.text(0.5, 0.01, score_label, ha="center", va="bottom", fontsize=9, wrap=True)
    fig.tight_layout(rect=(0, 0.05, 1, 1))
    return fig


def plot_pareto(points, path: str, title: str, score_label: str = "validation score") -> np.ndarray:
    """accuracy vs FLOPs and accuracy vs bits, the front highlighted; returns the image as HWC uint8.

    `score_label`: the definition of the score under the plots, e.g. `score_definition(tasks, weights)`."""
    import matplotlib.pyplot as plt

    fig = pareto_figure(points, title, score_label)
    fig.savefig(path, dpi=110)
    fig.canvas.draw()
    image = np.asarray(fig.canvas.buffer_rgba())[..., :3].copy()
    plt.close(fig)
    return image
