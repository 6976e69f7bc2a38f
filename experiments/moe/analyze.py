"""Evidence for the MoE issue: accuracy vs the dense baseline, expert usage per task, top-p vs hardness,
MC-SMoE merging, MC# bit allocation and single-task FLOPs. Reads trained workdirs; writes
experiments/moe/results.json and usage_<dataset>_{topk,topp}.png (tables.py prints the README tables).

  python -m experiments.moe.analyze --runs=/tmp/moe/runs --datasets=digits,shapes

Workdirs expected under --runs: dense_<ds> (configs/quickstart.py or shapes_vit.py),
moe_<ds> (configs/moe_<ds>.py) and moe_<ds>_topp (configs/moe_<ds>.py:topp), each name
followed by --suffix; a missing top-p workdir is skipped. Seeds / schedules: --runs and --suffix pick the
workdirs, --results and --tag keep each seed's results and plots apart (README, Commands).
"""

from __future__ import annotations

import argparse
import json
import os

import jax
import jax.numpy as jnp
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from scipy.stats import spearmanr  # noqa: E402

from effjax.compress import cost_elastic, expert_bits, expert_merging  # noqa: E402
from effjax.config.load import load_config  # noqa: E402
from effjax.models.moe import MOE_STATS_COLLECTION  # noqa: E402
from effjax.train import trainer  # noqa: E402
from effjax.train import step as step_lib  # noqa: E402
from effjax.train.setup import load_run  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
CONFIGS = {"digits": ("quickstart.py", "moe_digits.py"), "shapes": ("shapes_vit.py", "moe_shapes.py")}
CALIBRATION_EXAMPLES = 256
RANDOM_BIT_SEEDS = 5
_COMPILED: dict = {}  # (kind, id(setup)[, subnet]) -> (setup kept alive, jitted function)


def run_config(name: str, variant: str = ""):
    """configs/<name>[:variant], progress bar off."""
    c = load_config(os.path.join(REPO, "configs", name) + (f":{variant}" if variant else ""))
    c.log.progress_bar = False
    return c


def restore_run(config, workdir):
    """(Setup, params) of the latest checkpoint in `workdir`, on one device."""
    run = load_run(workdir, config)
    return run.setup, run.params


def _batches(setup, split, limit=None):
    arrays = setup.dataset.splits[split]
    n = setup.dataset.num_examples(split) if limit is None else min(limit, setup.dataset.num_examples(split))
    for start in range(0, n, 128):
        yield {k: v[start:min(start + 128, n)] for k, v in arrays.items()}


def per_example_loss(task, pred, target):
    """Per-example loss (hardness definitions A and B): cross-entropy, mean pixel cross-entropy, or depth MAE."""
    if task.kind == "classification":
        p = jax.nn.log_softmax(pred, -1)
        return -np.take_along_axis(np.asarray(p), np.asarray(target)[:, None], -1)[:, 0]
    if task.kind == "segmentation":
        p = np.asarray(jax.nn.log_softmax(pred, -1))
        return -np.take_along_axis(p, np.asarray(target)[..., None], -1)[..., 0].mean((1, 2))
    return np.abs(np.asarray(pred) - np.asarray(target)).mean((1, 2))


def predictions_and_stats(setup, params, split, subnet=None, limit=None):
    """Per-task predictions and the moe_stats collections of every batch of a split."""
    kwargs = {} if subnet is None else {"subnet": subnet}
    key = ("apply", id(setup), subnet)
    if key not in _COMPILED:  # one compilation per setup, however many parameter sets are evaluated
        _COMPILED[key] = (setup, jax.jit(lambda p, x: setup.model.apply({"params": p}, x, mutable=[MOE_STATS_COLLECTION],
                                                                         **kwargs)))
    apply = _COMPILED[key][1]
    preds, stats, targets = [], [], []
    for batch in _batches(setup, split, limit):
        out, mutated = apply(params, batch["image"])
        preds.append(jax.device_get(out))
        stats.append(jax.device_get(mutated.get(MOE_STATS_COLLECTION, {})))
        targets.append(batch)
    return preds, stats, targets


def per_example_experts(stats, num_tasks):
    """[task] -> per-example experts/token averaged over MoE layers."""
    result = {}
    for r in range(num_tasks):
        per_layer = []
        for layer, routed in expert_merging.accumulate_routing_stats(stats, max_logit_rows=0).items():
            per_layer.append(np.asarray(routed.experts_per_token[r]))
        result[r] = np.mean(per_layer, axis=0)
    return result


def metric_of(setup, params, split="test"):
    key = ("eval", id(setup))
    if key not in _COMPILED:
        _COMPILED[key] = (setup, jax.jit(step_lib.make_eval_step(setup.model, setup.dataset.tasks),
                                         in_shardings=(setup.state_shardings.params, setup.batch_sharding)))
    return trainer.evaluate(setup, params, split, eval_step=_COMPILED[key][1])


def kl_to(reference_preds, setup, params, tasks, split="test"):
    """Mean KL(reference || model) of the class distributions of every non-depth task (fidelity of a compressed model)."""
    preds, _, _ = predictions_and_stats(setup, params, split)
    kls = {}
    for t in tasks:
        if t.kind == "depth":
            continue
        total, count = 0.0, 0
        for ref, new in zip(reference_preds, preds):
            p = np.asarray(jax.nn.log_softmax(ref[t.name], -1))
            q = np.asarray(jax.nn.log_softmax(new[t.name], -1))
            kl = (np.exp(p) * (p - q)).sum(-1)
            total += float(kl.sum())
            count += kl.size
        kls[t.name] = total / count
    return kls


def usage_plot(routing, tasks, path, title):
    layers = list(routing)
    fig, axes = plt.subplots(1, len(layers), figsize=(5 * len(layers), 3.2), squeeze=False)
    for ax, layer in zip(axes[0], layers):
        s = routing[layer]
        e = s.expert_tokens.shape[1]
        width = 0.8 / len(tasks)
        for r, t in enumerate(tasks):
            ax.bar(np.arange(e) + r * width, s.frequency(r), width, label=t.name)
        ax.set_title(f"{title}: {layer}")
        ax.set_xlabel("expert")
        ax.set_ylabel("fraction of assignments")
        ax.set_xticks(np.arange(e) + 0.4 - width / 2, [str(i) for i in range(e)])
    axes[0][-1].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


BOOTSTRAP_RESAMPLES = 2000


def per_example_sums(task, pred, target):
    """Per-example sufficient statistics of the task metric (as `losses.metric_sums`, one row per example)."""
    pred, target = np.asarray(pred), np.asarray(target)
    if task.kind == "classification":
        return (pred.argmax(-1) == target).astype(np.float64)
    if task.kind == "segmentation":
        c = task.num_classes
        idx = target.reshape(len(target), -1) * c + pred.argmax(-1).reshape(len(target), -1)
        return np.stack([np.bincount(row, minlength=c * c) for row in idx]).reshape(-1, c, c).astype(np.float64)
    return ((pred.reshape(target.shape) - target) ** 2).reshape(len(target), -1).sum(-1)


def metric_from_sums(task, sums, pixels_per_example=1):
    """[R, n, ...] resampled per-example statistics -> [R] metric values (accuracy, mIoU, RMSE)."""
    if task.kind == "classification":
        return sums.mean(1)
    if task.kind == "segmentation":
        c = sums.sum(1)
        inter = np.diagonal(c, axis1=1, axis2=2)
        union = c.sum(1) + c.sum(2) - inter
        iou = np.where(union > 0, inter / np.maximum(union, 1), np.nan)  # classes absent from a resample are skipped
        return np.nanmean(iou, axis=1)
    return np.sqrt(sums.sum(1) / (sums.shape[1] * pixels_per_example))


def paired_bootstrap(tasks, preds_a, preds_b, targets, resamples=BOOTSTRAP_RESAMPLES):
    """95% interval of metric(b) - metric(a) over test examples resampled with replacement (same resample for
    both models): the test-set sampling noise of a difference, not the training-seed noise."""
    rng = np.random.default_rng(0)
    out = {}
    for t in tasks:
        a = np.concatenate([per_example_sums(t, p[t.name], b[t.name]) for p, b in zip(preds_a, targets)])
        b_ = np.concatenate([per_example_sums(t, p[t.name], b[t.name]) for p, b in zip(preds_b, targets)])
        n = len(a)
        pixels = int(np.prod(np.asarray(targets[0][t.name]).shape[1:])) if t.kind == "depth" else 1
        diffs = []
        for chunk in np.array_split(np.arange(resamples), 20):
            idx = rng.integers(0, n, (len(chunk), n))
            diffs.append(metric_from_sums(t, b_[idx], pixels) - metric_from_sums(t, a[idx], pixels))
        diffs = np.concatenate(diffs)
        full = np.arange(n)[None]
        out[t.name] = {"difference": float(metric_from_sums(t, b_[full], pixels)[0] - metric_from_sums(t, a[full], pixels)[0]),
                       "ci95": [float(np.quantile(diffs, 0.025)), float(np.quantile(diffs, 0.975))]}
    return out


def total_variation(p, q):
    return 0.5 * float(np.abs(p - q).sum())


def analyze(dataset: str, runs: str, out: dict, suffix: str = "", light: bool = False, tag: str = ""):
    dense_name, moe_name = CONFIGS[dataset]
    res = out.setdefault(dataset, {})
    dense_setup, dense_params = restore_run(run_config(dense_name), os.path.join(runs, f"dense_{dataset}{suffix}"))
    tasks = dense_setup.dataset.tasks
    image_shape = dense_setup.dataset.image_shape
    res["tasks"] = {t.name: t.metric for t in tasks}
    res["accuracy"] = {"dense": metric_of(dense_setup, dense_params)}
    dense_cost = cost_elastic.elastic_cost(dense_setup.config.model, image_shape, tasks)
    res["flops"] = {"dense (all tasks)": dense_cost.flops}
    res["params"] = {"dense": dense_cost.params}

    # per-example hardness: the dense baseline's per-example loss on the test split
    dense_preds, _, targets = predictions_and_stats(dense_setup, dense_params, "test")
    hardness = {t.name: np.concatenate([per_example_loss(t, p[t.name], b[t.name]) for p, b in zip(dense_preds, targets)])
                for t in tasks}

    for variant in ("", "topp"):
        key = "moe_topp" if variant else "moe_topk"
        workdir = os.path.join(runs, f"moe_{dataset}" + ("_topp" if variant else "") + suffix)
        if not os.path.isdir(workdir):
            continue
        config = run_config(moe_name, variant)
        setup, params = restore_run(config, workdir)
        res["accuracy"][key] = metric_of(setup, params)
        model_preds, stats, _ = predictions_and_stats(setup, params, "test")
        res.setdefault("paired_bootstrap", {})[key] = paired_bootstrap(tasks, dense_preds, model_preds, targets)
        routing = expert_merging.accumulate_routing_stats(stats, max_logit_rows=0)
        experts = per_example_experts(stats, len(tasks))
        mean_k = float(np.mean([experts[r].mean() for r in range(len(tasks))]))
        res.setdefault("experts_per_token", {})[key] = {t.name: float(experts[r].mean()) for r, t in enumerate(tasks)}
        model_cost = cost_elastic.elastic_cost(config.model, image_shape, tasks, experts_per_token=mean_k)
        res["flops"][f"{key} (all tasks)"] = model_cost.flops
        res["params"][key] = model_cost.params
        for r, t in enumerate(tasks):
            single = cost_elastic.elastic_cost(config.model, image_shape, tasks, task=t.name,
                                               experts_per_token=float(experts[r].mean()))
            res["flops"][f"{key} single-task {t.name}"] = single.flops
        res.setdefault("usage_tv", {})[key] = {
            layer: {f"{a.name}-{b.name}": total_variation(s.frequency(i), s.frequency(j))
                    for i, a in enumerate(tasks) for j, b in enumerate(tasks) if i < j}
            for layer, s in routing.items()}
        usage_plot(routing, tasks, os.path.join(HERE, f"usage_{dataset}{tag}_{'topp' if variant else 'topk'}.png"),
                   f"{dataset} {'top-p' if variant else 'top-k'}")
        if variant == "topp":
            res["top_p_vs_hardness"] = hardness_table(tasks, experts, hardness, targets)
            own_loss = {t.name: np.concatenate([per_example_loss(t, p[t.name], b[t.name])
                                                for p, b in zip(model_preds, targets)]) for t in tasks}
            res["top_p_vs_own_loss"] = hardness_table(tasks, experts, own_loss, targets)
            token_tables = {}
            for name, preds in (("dense baseline loss", dense_preds), ("top-p model's own loss", model_preds)):
                table = token_hardness_table(tasks, stats, preds, targets, config.model.top_p, config.model.patch_size)
                if table:
                    token_tables[name] = table
            if token_tables:
                res["top_p_vs_token_loss"] = token_tables
        else:
            res["all_experts_active_flops"] = cost_elastic.elastic_cost(
                config.model, image_shape, tasks, experts_per_token=config.model.num_experts).flops
        if not variant and not light:
            res["merging"] = merging(config, setup, params, tasks)
            res["bits"] = bit_allocation(config, setup, params, tag)


def hardness_table(tasks, experts, hardness, targets):
    table = {}
    for r, t in enumerate(tasks):
        h, k = hardness[t.name], experts[r]
        quartile = np.digitize(h, np.quantile(h, [0.25, 0.5, 0.75]))
        rho, pval = spearmanr(h, k)
        table[t.name] = {"experts_by_hardness_quartile": [float(k[quartile == q].mean()) for q in range(4)],
                         "spearman": float(rho), "p_value": float(pval)}
        if t.name == "count":  # shapes: a scene with more objects is a harder scene
            objects = np.concatenate([b["count"] for b in targets]) + 1
            table[t.name]["experts_by_objects"] = {int(n): float(k[objects == n].mean()) for n in np.unique(objects)}
    return table


def _per_pixel_loss(task, pred, target):
    """[B, H, W] loss of a dense-prediction task: cross-entropy (segmentation) or |error| (depth)."""
    if task.kind == "segmentation":
        p = np.asarray(jax.nn.log_softmax(pred, -1))
        return -np.take_along_axis(p, np.asarray(target)[..., None], -1)[..., 0]
    return np.abs(np.asarray(pred) - np.asarray(target)).reshape(np.asarray(target).shape[:3])


def _per_patch(pixel_loss, patch):
    """[B, H, W] -> [B, (H/p)*(W/p)] mean over each patch, in the token order of `vit.patchify`."""
    b, h, w = pixel_loss.shape
    return pixel_loss.reshape(b, h // patch, patch, w // patch, patch).mean((2, 4)).reshape(b, -1)


def top_p_counts(logits, p):
    """[..., E] router logits -> experts per token under top-p routing (as `moe.top_p_routing`, unmerged router)."""
    z = np.asarray(logits, np.float64)
    probs = np.exp(z - z.max(-1, keepdims=True))
    probs /= probs.sum(-1, keepdims=True)
    ordered = -np.sort(-probs, -1)
    mass_before = np.cumsum(ordered, -1) - ordered
    return np.maximum((mass_before < p).sum(-1), 1)


def per_token_experts(stats, router, p):
    """[num examples, patch tokens] experts per patch token of one task's router, averaged over MoE layers
    (class token dropped; recomputed from the sown router logits)."""
    per_layer = {}
    for tree in stats:
        for (layer, r), entries in expert_merging._iter_router_entries(tree):
            if r == router:
                per_layer.setdefault(layer, []).extend(top_p_counts(e["logits"], p)[:, 1:] for e in entries)
    return np.mean([np.concatenate(chunks) for chunks in per_layer.values()], axis=0)


def token_hardness_table(tasks, stats, preds, targets, p, patch):
    """Per patch token of the dense-prediction tasks: hardness = the loss of that patch's pixels."""
    table = {}
    for r, t in enumerate(tasks):
        if t.kind not in ("segmentation", "depth"):
            continue
        loss = np.concatenate([_per_patch(_per_pixel_loss(t, pr[t.name], b[t.name]), patch)
                               for pr, b in zip(preds, targets)])
        k = per_token_experts(stats, r, p)
        h, k = loss.reshape(-1), k.reshape(-1)
        quartile = np.digitize(h, np.quantile(h, [0.25, 0.5, 0.75]))
        rho, pval = spearmanr(h, k)
        within = [spearmanr(a, b)[0] for a, b in zip(loss, k.reshape(loss.shape)) if np.ptp(a) > 0 and np.ptp(b) > 0]
        table[t.name] = {"experts_by_hardness_quartile": [float(k[quartile == q].mean()) for q in range(4)],
                         "spearman": float(rho), "p_value": float(pval), "tokens": int(h.size),
                         "mean_within_image_spearman": float(np.mean(within)) if within else float("nan")}
    return table


def _with(config, **model_fields):
    c = config.copy_and_resolve_references()
    for k, v in model_fields.items():
        c.model[k] = v
    return c


def merging(config, setup, params, tasks):
    """E -> E/2 before any fine-tuning; every variant evaluated dropless so capacity is not a confound."""
    _, calib, _ = predictions_and_stats(setup, params, "train", limit=CALIBRATION_EXAMPLES)
    stats = expert_merging.accumulate_routing_stats(calib)
    host = jax.tree.map(np.asarray, params)
    e = config.model.num_experts
    dropless = _with(config, capacity_factor=0.0)
    dropless_setup = trainer.build(dropless, devices=jax.devices()[:1])
    reference, _, _ = predictions_and_stats(dropless_setup, params, "test")
    rows = {"original (E experts)": metric_of(dropless_setup, params)}
    for name, align, weighting in (("MC-SMoE: aligned + frequency-weighted", True, "frequency"),
                                   ("aligned + uniform", True, "uniform"),
                                   ("unaligned + frequency-weighted", False, "frequency"),
                                   ("plain averaging (unaligned, uniform)", False, "uniform")):
        merged, groups = expert_merging.merge_moe_params(host, stats, e // 2, align=align, weighting=weighting)
        merged_setup = trainer.build(_with(dropless, num_experts=e // 2, router_groups=tuple(tuple(g) for g in groups)),
                                     devices=jax.devices()[:1])
        rows[name] = metric_of(merged_setup, jax.tree.map(jnp.asarray, merged))
        rows[name]["kl_to_original"] = kl_to(reference, merged_setup, jax.tree.map(jnp.asarray, merged), tasks)
        rows[name]["groups"] = [list(g) for g in groups]
    return rows


def bit_allocation(config, setup, params, tag: str = ""):
    _, calib, _ = predictions_and_stats(setup, params, "train", limit=CALIBRATION_EXAMPLES)
    stats = expert_merging.accumulate_routing_stats(calib)
    host = jax.tree.map(np.asarray, params)
    layers = expert_merging.find_moe_layers(host)
    e = config.model.num_experts
    plans = {"uniform 4 bits": {p: (4,) * e for p in layers},
             "MC# avg 4 of {2,4,8}": expert_bits.allocate_model_bits(layers, stats, 4.0, (2, 4, 8)),
             "MC# avg 3 of {2,4,8}": expert_bits.allocate_model_bits(layers, stats, 3.0, (2, 4, 8)),
             "uniform 2 bits": {p: (2,) * e for p in layers},
             "MC# avg 3 of {2,4}": expert_bits.allocate_model_bits(layers, stats, 3.0, (2, 4))}
    expert_bits.save_bits(os.path.join(HERE, f"expert_bits_{config.data.name}{tag}.json"), plans["MC# avg 3 of {2,4,8}"], 3.0,
                          (2, 4, 8))
    mcsharp = plans["MC# avg 3 of {2,4,8}"]
    for seed in range(RANDOM_BIT_SEEDS):  # same budget and bit multiset, assigned blind to routing statistics
        rng = np.random.default_rng(seed)
        plans[f"random order of the MC# avg-3 bits, seed {seed}"] = {p: tuple(int(b) for b in rng.permutation(bits))
                                                                    for p, bits in mcsharp.items()}
    for p, bits in mcsharp.items():  # the most important experts get the fewest bits
        order = np.argsort(-expert_bits.expert_importance(stats[p].frequency(), stats[p].mean_gate()), kind="stable")
        reversed_bits = np.empty(e, int)
        reversed_bits[order] = np.sort(bits)
        plans.setdefault("reversed MC# avg-3 (important experts get fewest bits)", {})[p] = tuple(int(b) for b in reversed_bits)
    reference, _, _ = predictions_and_stats(setup, params, "test")
    rows = {}
    for name, plan in plans.items():
        quantized = expert_bits.fake_quantize_experts(layers, plan)
        tree = expert_merging.replace_layers(host, quantized)
        rows[name] = {"bits": {p: list(b) for p, b in plan.items()},
                      "metrics": metric_of(setup, jax.tree.map(jnp.asarray, tree)),
                      "kl_to_float": kl_to(reference, setup, jax.tree.map(jnp.asarray, tree), setup.dataset.tasks)}
    return rows


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", default="/tmp/moe/runs")
    parser.add_argument("--datasets", default="digits,shapes")
    parser.add_argument("--suffix", default="", help="workdir name suffix, e.g. 400 for dense_shapes400")
    parser.add_argument("--light", action="store_true", help="skip merging and bit allocation")
    parser.add_argument("--compression_only", action="store_true", help="only merging and bit allocation (top-k run)")
    parser.add_argument("--results", default=os.path.join(HERE, "results.json"))
    parser.add_argument("--tag", default="", help="added to the names of the usage plots and the expert-bits file, "
                        "e.g. 800_seed1 -> usage_shapes800_seed1_topk.png (one set per seed)")
    args = parser.parse_args()
    path = args.results
    out = json.load(open(path)) if os.path.exists(path) else {}
    for ds in args.datasets.split(","):
        if args.compression_only:
            config = run_config(CONFIGS[ds][1])
            setup, params = restore_run(config, os.path.join(args.runs, f"moe_{ds}{args.suffix}"))
            out.setdefault(ds, {})["merging"] = merging(config, setup, params, setup.dataset.tasks)
            out[ds]["bits"] = bit_allocation(config, setup, params, args.tag)
        else:
            analyze(ds, args.runs, out, args.suffix, args.light, args.tag)
        latest = json.load(open(path)) if os.path.exists(path) else {}  # keep what another run wrote meanwhile
        latest.setdefault(ds, {}).update(out[ds])
        out = latest
        with open(path, "w") as f:
            json.dump(out, f, indent=1)
    print(json.dumps(out, indent=1)[:4000])


if __name__ == "__main__":
    main()
