"""The learning-rate schedule a checkpointed run was started with, checked when it resumes.

An optax schedule is a function of the step: resuming step 20 of a 20-step cosine
schedule with `num_steps=30` silently jumps the learning rate from the old curve's
tail to the new curve's value at step 20. The fields that define the schedule are
recorded in `<workdir>/schedule.json` when a run starts from scratch; a resume that
changes them is refused with the fields named, unless `config.train.on_schedule_change`
is "new" (follow the new schedule from the restored step on; the record is updated).
"""

from __future__ import annotations

import json
import logging
import os

from effjax.config.validate import ConfigError

RECORD_FILE = "schedule.json"
FIELDS = ("num_steps", "learning_rate", "warmup_steps", "schedule", "optimizer")
log = logging.getLogger("effjax")


def schedule_of(train_config) -> dict:
    """The fields the learning rate at each step depends on (a constant schedule ignores num_steps)."""
    return {field: train_config[field] for field in FIELDS
            if not (field == "num_steps" and train_config.schedule == "constant")}


def _write(path: str, record: dict) -> None:
    tmp = f"{path}.tmp"
    with open(tmp, "w") as f:
        json.dump(record, f, indent=1)
    os.replace(tmp, path)


def check(workdir: str, train_config, restored_step: int | None, write: bool) -> None:
    """Refuses (ConfigError) a resume below the checkpoint's step or with a changed schedule; records the schedule.

    `write`: this process writes the record (JAX process 0).
    """
    choice = train_config.get("on_schedule_change", "refuse")  # checked by validate.validate_static
    path = os.path.join(workdir, RECORD_FILE)
    current = schedule_of(train_config)
    if restored_step:
        if train_config.num_steps < restored_step:
            raise ConfigError(
                f"config.train.num_steps={train_config.num_steps}: below step {restored_step} of the checkpoint in "
                f"{workdir}; nothing would be trained and the results would not be those of {train_config.num_steps} "
                f"steps; set num_steps >= {restored_step} or use a new --workdir")
        try:
            with open(path) as f:
                recorded = json.load(f)
        except (OSError, ValueError):
            recorded = None  # a workdir from before schedules were recorded: nothing to compare with
        if recorded is not None:
            changed = [f"train.{k}: {recorded.get(k)!r} -> {current.get(k)!r}" for k in FIELDS
                       if recorded.get(k) != current.get(k)]
            if changed and choice == "refuse":
                raise ConfigError(
                    f"resuming step {restored_step} of {workdir} with a different learning-rate schedule "
                    f"({'; '.join(changed)}); set --config.train.on_schedule_change=new to follow the new schedule "
                    f"from step {restored_step} on, or use a new --workdir")
            if changed:
                log.warning("resuming step %d with a new learning-rate schedule (%s): it applies from step %d on",
                            restored_step, "; ".join(changed), restored_step)
            elif recorded == current:
                return
    if write:
        _write(path, current)
