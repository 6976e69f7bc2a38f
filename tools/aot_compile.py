"""Compile the real effjax train step (or a subnet's forward pass) for a TPU topology on a CPU machine.

Needs libtpu (`pip install 'effjax[tpu]'`); no TPU is used. Prints, per chip, the
memory of the arguments, outputs and temporaries from XLA's memory analysis, the
FLOPs and bytes accessed from its cost analysis, the bytes moved by collectives
(summed over the all-reduce / all-gather / reduce-scatter / all-to-all /
collective-permute results of the partitioned program), whether the step fits the
chip's HBM, and a roofline step time: max(FLOPs / peak FLOP/s, bytes accessed / HBM
bandwidth, collective bytes / ICI bandwidth), with the MFU it implies
(compute time / step time). The peak figures are the vendor's per-chip numbers in
`PEAKS` (bf16 matmul peak; float32 programs run slower than that peak).

  python tools/aot_compile.py --config=configs/shapes_vit.py --topology=v5e:16x16 \
      --config.train.batch_size=1024 [--forward] [--json=out.json]
  python tools/aot_compile.py --write_section=a.json,b.json   # the `aot_compile` section of BENCHMARKS.md
"""

from __future__ import annotations

import json
import os
import re
import shlex
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from absl import app, flags  # noqa: E402
from ml_collections import config_flags  # noqa: E402

# HBM per chip in GiB, by the generation prefix of the topology name.
HBM_GIB = {"v4": 32, "v5e": 16, "v5litepod": 16, "v5p": 95, "v6e": 32}


def define_flags() -> None:
    """The command line's flags; defined only when this module runs as a program, so importing it beside
    `effjax.main` (which defines some of the same names) never clashes."""
    global _CONFIG, _TOPOLOGY, _CHIPS_PER_HOST, _HBM_GIB, _JSON, _FORWARD, _SUBNET, _LABEL, _WRITE_SECTION
    _CONFIG = config_flags.DEFINE_config_file("config", None, "effjax config file[:variant].")
    _TOPOLOGY = flags.DEFINE_string("topology", "v5e:2x2", "TPU topology, e.g. v5e:16x16 or v4:2x2x2.")
    _CHIPS_PER_HOST = flags.DEFINE_string("chips_per_host", "2,2,1", "Chips per host bounds (x,y,z).")
    _HBM_GIB = flags.DEFINE_float("hbm_gib", 0.0, "Per-chip HBM in GiB; 0 looks it up from the topology name.")
    _JSON = flags.DEFINE_string("json", "", "Also write the report to this JSON file.")
    _FORWARD = flags.DEFINE_bool("forward", False, "Compile the subnet's inference forward pass instead of the train step.")
    _SUBNET = flags.DEFINE_string("subnet", "", "SubnetConfig of --forward as JSON (default: the full model).")
    _LABEL = flags.DEFINE_string("label", "", "Name of this run in the BENCHMARKS.md table.")
    _WRITE_SECTION = flags.DEFINE_string("write_section", "", "Comma-separated --json reports: write them as the "
                                         "`aot_compile` section of BENCHMARKS.md (raw: benchmarks/aot_compile.json).")

# Per-chip vendor peaks (Google Cloud TPU system architecture pages): bf16 FLOP/s, HBM bytes/s,
# inter-chip interconnect bits/s.
PEAKS = {
    "v5e": {"flops": 197e12, "hbm_bytes_s": 819e9, "ici_bits_s": 1600e9},
    "v5litepod": {"flops": 197e12, "hbm_bytes_s": 819e9, "ici_bits_s": 1600e9},
    "v5p": {"flops": 459e12, "hbm_bytes_s": 2765e9, "ici_bits_s": 4800e9},
    "v6e": {"flops": 918e12, "hbm_bytes_s": 1640e9, "ici_bits_s": 3584e9},
}
COLLECTIVES = ("all-reduce", "all-gather", "reduce-scatter", "all-to-all", "collective-permute")
_DTYPE_BYTES = {"pred": 1, "s8": 1, "u8": 1, "s16": 2, "u16": 2, "f16": 2, "bf16": 2, "s32": 4, "u32": 4, "f32": 4,
                "s64": 8, "u64": 8, "f64": 8, "s4": 0.5, "u4": 0.5}
_OP = re.compile(r"=\s*(.*?)\s(" + "|".join(COLLECTIVES) + r")(-start|-done)?\(")
_SHAPE = re.compile(r"\b(" + "|".join(_DTYPE_BYTES) + r")\[([0-9,]*)\]")


def collective_bytes(hlo_text: str) -> dict[str, int]:
    """Bytes of the results of every collective in a partitioned HLO module, by kind (per chip).

    Asynchronous pairs are counted once, at their `-done` (whose result is the output);
    `-start` ops are skipped.
    """
    totals = {kind: 0 for kind in COLLECTIVES}
    for line in hlo_text.splitlines():
        m = _OP.search(line)
        if not m or m.group(3) == "-start":
            continue
        size = 0.0
        for dtype, dims in _SHAPE.findall(m.group(1)):
            count = 1
            for d in filter(None, dims.split(",")):
                count *= int(d)
            size += count * _DTYPE_BYTES[dtype]
        totals[m.group(2)] += int(size)
    return totals


def roofline(flops: float, bytes_accessed: float, comm_bytes: float, generation: str) -> dict:
    """Roofline step-time estimate (s) and the MFU it implies, from the generation's PEAKS."""
    peak = PEAKS.get(generation)
    if peak is None:
        return {}
    times = {"compute_s": flops / peak["flops"], "hbm_s": bytes_accessed / peak["hbm_bytes_s"],
             "ici_s": comm_bytes * 8 / peak["ici_bits_s"]}
    step = max(times.values())
    return {**times, "step_s": step, "bound": max(times, key=times.get).removesuffix("_s"),
            "mfu": times["compute_s"] / step if step else 0.0, "peaks": peak}


def abstract_step_inputs(setup, batch_size: int):
    """The train step's batch and rng as sharded ShapeDtypeStructs (no data)."""
    import jax
    import jax.numpy as jnp

    from effjax.train import mesh as mesh_lib

    h, w, c = setup.dataset.image_shape
    sharded = setup.batch_sharding
    batch = {"image": jax.ShapeDtypeStruct((batch_size, h, w, c), jnp.float32, sharding=sharded)}
    for t in setup.dataset.tasks:
        batch[t.name] = jax.ShapeDtypeStruct((batch_size, h, w) if t.is_dense else (batch_size,),
                                             jnp.float32 if t.kind == "depth" else jnp.int32, sharding=sharded)
    return batch, jax.ShapeDtypeStruct((2,), jnp.uint32, sharding=mesh_lib.replicated(setup.mesh))


def compile_for_topology(config, topology: str, chips_per_host=(2, 2, 1), hbm_gib: float = 0.0,
                         forward: bool = False, subnet=None) -> dict:
    import flax.linen as nn
    import jax
    from jax.experimental import topologies

    from effjax.train import mesh as mesh_lib, objectives
    from effjax.train.trainer import build

    topo = topologies.get_topology_desc(platform="tpu", topology_name=topology, chip_config_name="default",
                                        chips_per_host_bounds=tuple(chips_per_host), num_slices=1)
    devices = topo.devices
    setup = build(config, devices)
    replicated = mesh_lib.replicated(setup.mesh)
    h = setup.dataset.image_shape[0]
    bs = config.train.batch_size
    batch, rng = abstract_step_inputs(setup, bs)
    step = None if forward else objectives.build_train_step(setup, config)  # builds constants on the host
    with jax.set_mesh(setup.mesh), nn.logical_axis_rules(setup.rules):
        if forward:
            params = setup.abstract_state.params
            kwargs = {} if subnet is None else {"subnet": subnet}
            compiled = jax.jit(lambda p, x: setup.model.apply({"params": p}, x, **kwargs),
                               in_shardings=(setup.state_shardings.params, setup.batch_sharding)
                               ).lower(params, batch["image"]).compile()
        else:
            compiled = jax.jit(step, in_shardings=(setup.state_shardings, setup.batch_sharding, replicated),
                               out_shardings=(setup.state_shardings, replicated), donate_argnums=(0,)
                               ).lower(setup.abstract_state, batch, rng).compile()
    mem = compiled.memory_analysis()
    cost = compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, (list, tuple)) else cost
    generation = topology.split(":")[0]
    hbm = hbm_gib or HBM_GIB.get(generation, 0.0)
    arguments, outputs = mem.argument_size_in_bytes, mem.output_size_in_bytes
    temporaries, aliased = mem.temp_size_in_bytes, mem.alias_size_in_bytes
    peak = arguments + outputs - aliased + temporaries
    flops, bytes_accessed = float(cost.get("flops", 0.0)), float(cost.get("bytes accessed", 0.0))
    comm = collective_bytes(compiled.as_text())
    return {
        "program": "forward" if forward else "train_step", "model": config.model.name,
        "subnet": None if subnet is None else subnet.to_dict(),
        "model_dims": {k: config.model.get(k) for k in ("hidden_dim", "num_layers", "num_heads", "mlp_dim",
                                                        "patch_size", "num_experts", "sparse_layers")},
        "image_size": h, "topology": topology, "chips": len(devices), "device_kind": devices[0].device_kind,
        "mesh": dict(setup.mesh.shape), "global_batch": bs,
        "bytes_accessed_per_chip": bytes_accessed, "collective_bytes_per_chip": comm,
        "roofline": roofline(flops, bytes_accessed, sum(comm.values()), generation),
        "per_chip_bytes": {"arguments": arguments, "outputs": outputs, "aliased": aliased, "temporaries": temporaries,
                           "peak_estimate": peak},
        "hbm_bytes": int(hbm * 2**30), "fits": bool(hbm) and peak <= hbm * 2**30,
        "flops_per_chip": flops,
    }


def _gib(x):
    return f"{x / 2**30:.3f} GiB"


def main(argv):
    del argv
    from effjax.config.validate import ConfigError

    if _WRITE_SECTION.value:
        return write_section_from(_WRITE_SECTION.value.split(","))
    if _CONFIG.value is None:
        print("aot_compile: error: --config is required", file=sys.stderr)
        return 2
    try:
        subnet = None
        if _SUBNET.value:
            from effjax.subnet import SubnetConfig
            subnet = SubnetConfig.from_dict(json.loads(_SUBNET.value))
        report = compile_for_topology(_CONFIG.value, _TOPOLOGY.value,
                                      [int(x) for x in _CHIPS_PER_HOST.value.split(",")], _HBM_GIB.value,
                                      _FORWARD.value, subnet)
    except (ConfigError, ValueError) as e:
        print(f"aot_compile: error: {e}", file=sys.stderr)
        return 2
    except Exception as e:  # noqa: BLE001  XLA refuses to compile a program that cannot fit
        needed = _out_of_hbm(str(e))
        if needed is None:
            raise
        print(f"verdict: DOES NOT FIT (XLA: HLO temporaries alone need {needed[0]:.2f} GiB, "
              f"{needed[1]:.2f} GiB of HBM available per chip)")
        return 1
    report["label"] = _LABEL.value
    report["command"] = "python tools/aot_compile.py " + shlex.join(sys.argv[1:])  # quoted: it reruns as printed
    m = report["per_chip_bytes"]
    print(f"topology {report['topology']}: {report['chips']} x {report['device_kind']}, mesh {report['mesh']}, "
          f"global batch {report['global_batch']}")
    print(f"per chip: arguments {_gib(m['arguments'])}, outputs {_gib(m['outputs'])} (aliased {_gib(m['aliased'])}), "
          f"temporaries {_gib(m['temporaries'])}, peak ~{_gib(m['peak_estimate'])} of {_gib(report['hbm_bytes'])} HBM")
    print(f"XLA FLOPs estimate per chip per step: {report['flops_per_chip']:.4g}")
    comm = report["collective_bytes_per_chip"]
    print("collectives per chip per step: " + ", ".join(f"{k} {_gib(v)}" for k, v in comm.items() if v)
          + f" (total {_gib(sum(comm.values()))})")
    r = report["roofline"]
    if r:
        print(f"roofline step time {1e3 * r['step_s']:.2f} ms ({r['bound']}-bound: compute {1e3 * r['compute_s']:.2f} ms, "
              f"HBM {1e3 * r['hbm_s']:.2f} ms, ICI {1e3 * r['ici_s']:.2f} ms), MFU {100 * r['mfu']:.1f}% "
              f"(peaks: {r['peaks']['flops'] / 1e12:.0f} TFLOP/s bf16, {r['peaks']['hbm_bytes_s'] / 1e9:.0f} GB/s HBM, "
              f"{r['peaks']['ici_bits_s'] / 1e9:.0f} Gbit/s ICI)")
    verdict = "fits" if report["fits"] else "DOES NOT FIT"
    print(f"verdict: {verdict} ({_gib(m['peak_estimate'])} needed, {_gib(report['hbm_bytes'])} per chip)")
    if _JSON.value:
        with open(_JSON.value, "w") as f:
            json.dump(report, f, indent=2)
    return 0 if report["fits"] else 1


def _out_of_hbm(message: str):
    """(needed GiB, available GiB) from XLA's RESOURCE_EXHAUSTED compile error, or None."""
    m = re.search(r"RESOURCE_EXHAUSTED: Ran out of memory.*?\(([0-9.]+)G\) exceeds available HBM \(([0-9.]+)G\)",
                  message, re.S)
    return (float(m.group(1)), float(m.group(2))) if m else None


def write_section_from(paths) -> int:
    """Renders --json reports as the `aot_compile` section of BENCHMARKS.md."""
    from tools.bench_report import write_raw, write_section

    reports = []
    for path in paths:
        try:
            with open(path) as f:
                reports.append(json.load(f))
        except (OSError, json.JSONDecodeError) as e:
            print(f"aot_compile: error: --write_section: {path}: {e}", file=sys.stderr)
            return 2
    lines = ["## Ahead-of-time compilation for TPU topologies (tools/aot_compile.py)", "",
             "Compiled on this CPU with libtpu (no TPU used); per chip, from XLA's memory and cost analyses of the "
             "partitioned program. Collectives: result bytes of the all-reduce / all-gather / reduce-scatter / "
             "all-to-all / collective-permute ops. Roofline step = max(FLOPs / peak, bytes accessed / HBM bandwidth, "
             "collective bytes / ICI bandwidth); MFU = compute time / roofline step. Peaks per chip: "
             + "; ".join(f"{g} {p['flops'] / 1e12:.0f} TFLOP/s bf16, {p['hbm_bytes_s'] / 1e9:.0f} GB/s HBM, "
                         f"{p['ici_bits_s'] / 1e9:.0f} Gbit/s ICI" for g, p in PEAKS.items() if g != "v5litepod")
             + ". The programs are float32, so the bf16 peak flatters them. Raw: `benchmarks/aot_compile.json`.", "",
             "| run | program | topology | mesh | global batch | peak GiB / chip | HBM GiB | fits | TFLOP / chip | "
             "collective GiB / chip | roofline ms | bound | MFU |",
             "|---|---|---|---|---:|---:|---:|---|---:|---:|---:|---|---:|"]
    for r in reports:
        rf = r.get("roofline") or {}
        mesh = " ".join(f"{k}={v}" for k, v in r["mesh"].items() if v > 1)
        if r.get("failure"):  # an attempt that did not compile (a compiler crash leaves no report to write)
            lines.append(f"| {r['label']} | {r.get('program', 'train_step')} | {r['topology']} | {mesh} | "
                         f"{r['global_batch']} | - | - | did not compile: {r['failure']} | - | - | - | - | - |")
            continue
        lines.append(f"| {r.get('label') or r['model']} | {r.get('program', 'train_step')} | {r['topology']} | {mesh} | "
                     f"{r['global_batch']} | {r['per_chip_bytes']['peak_estimate'] / 2**30:.2f} | "
                     f"{r['hbm_bytes'] / 2**30:.0f} | {'yes' if r['fits'] else 'NO'} | {r['flops_per_chip'] / 1e12:.3f} | "
                     f"{sum(r.get('collective_bytes_per_chip', {}).values()) / 2**30:.3f} | "
                     f"{1e3 * rf.get('step_s', float('nan')):.1f} | {rf.get('bound', '-')} | "
                     f"{100 * rf.get('mfu', float('nan')):.0f}% |")
    commands = [f"- {r.get('label') or r['model']}: `{r['command']}`" for r in reports if r.get("command")]
    if commands:
        lines += ["", "Commands:", *commands]
    write_raw("aot_compile", reports)
    write_section("aot_compile", "\n".join(lines))
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    define_flags()
    app.run(lambda argv: sys.exit(main(argv)))
