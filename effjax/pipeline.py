"""The main job the launcher runs: train the config, evaluate it, write a summary.

(The train -> search -> export pipeline of the supernet issue plugs in here.)
"""

from __future__ import annotations

import json
import os

from effjax.train.trainer import train_and_evaluate


def run_main_job(config, workdir: str) -> dict:
    result = train_and_evaluate(config, workdir)
    summary = {
        "workdir": os.path.abspath(workdir),
        "interrupted": result.interrupted,
        "start_step": int(result.start_step),
        "steps": int(result.state.step),
        "skipped_steps": int(result.state.skipped_total),
        "final_train_loss": result.train_losses[max(result.train_losses)] if result.train_losses else None,
        "metrics": result.metrics,
        "tensorboard": os.path.join(os.path.abspath(workdir), "tensorboard"),
        "checkpoints": os.path.join(os.path.abspath(workdir), "checkpoints"),
    }
    import jax

    if jax.process_index() == 0:
        with open(os.path.join(workdir, "summary.json"), "w") as f:
            json.dump(summary, f, indent=2)
    return summary
