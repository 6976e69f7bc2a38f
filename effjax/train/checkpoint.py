"""Orbax checkpoints of the train state with the data iterator's state beside it.

The iterator's state (the position in the global batch stream, identical on every
process) is stored as JSON, so a checkpoint written by N processes restores in M.

Saves are asynchronous and atomic (Orbax renames a temporary directory on
commit) but Orbax does not verify content: a truncated or missing file in the
newest step makes `restore` raise. `restore_latest` therefore walks back from the
newest step, warning for each one that fails, until one restores. A step that
fails is moved aside (to `<workdir>/checkpoints_corrupt/`), never deleted, so the
run can write that step again and the damaged files stay available to inspect.
"""

from __future__ import annotations

import logging
import os
import shutil
import time
import warnings
from typing import Any, Optional

import grain
import orbax.checkpoint as ocp

log = logging.getLogger("effjax")


class Checkpointer:
    def __init__(self, directory: str, keep: int, async_save: bool = True):
        options = ocp.CheckpointManagerOptions(
            preservation_policy=ocp.checkpoint_managers.LatestN(keep),
            enable_async_checkpointing=async_save,
            create=True,
        )
        self.directory = os.path.abspath(directory)
        self.manager = ocp.CheckpointManager(self.directory, options=options, item_names=("state", "data"))
        self._last_saved_step = None

    def save(self, step: int, state: Any, data_iterator: Optional[grain.DatasetIterator] = None, wait: bool = False):
        if step == self._last_saved_step:
            if wait:
                self.manager.wait_until_finished()
            return
        self._last_saved_step = step
        items = {"state": ocp.args.StandardSave(state)}
        if data_iterator is not None:
            items["data"] = ocp.args.JsonSave(data_iterator.get_state())
        self.manager.save(step, args=ocp.args.Composite(**items), force=True)
        if wait:
            self.manager.wait_until_finished()

    def restore_latest(self, abstract_state: Any, data_iterator: Optional[grain.DatasetIterator] = None):
        """Returns (step, state) of the newest step that restores, or (None, None) if there is none."""
        steps = sorted(self.manager.all_steps(), reverse=True)
        for i, step in enumerate(steps):
            items = {"state": ocp.args.StandardRestore(abstract_state)}
            if data_iterator is not None:
                items["data"] = ocp.args.JsonRestore()
            try:
                restored = self.manager.restore(step, args=ocp.args.Composite(**items))
                if data_iterator is not None:
                    data_iterator.set_state(restored["data"])
                return step, restored["state"]
            except Exception as e:  # Orbax raises many types for damaged files
                nxt = f"falling back to step {steps[i + 1]}" if i + 1 < len(steps) else "no older checkpoint; starting from scratch"
                moved = self._quarantine(step)
                msg = (f"checkpoint step {step} in {self.directory} failed to restore ({type(e).__name__}: "
                       f"{str(e)[:200]}); moved it to {moved}; {nxt}")
                log.warning(msg)
                warnings.warn(msg, RuntimeWarning, stacklevel=2)
        return None, None

    def _quarantine(self, step: int) -> str:
        import jax

        target = os.path.join(os.path.dirname(self.directory), "checkpoints_corrupt", f"{step}-{int(time.time())}")
        if jax.process_index() == 0:
            os.makedirs(os.path.dirname(target), exist_ok=True)
            shutil.move(os.path.join(self.directory, str(step)), target)
        self.manager.reload()
        return target

    def latest_params(self):
        """The parameters of the newest step as host numpy arrays (for tools and tests)."""
        step = self.manager.latest_step()
        if step is None:
            raise FileNotFoundError(f"no checkpoint in {self.directory}")
        restored = self.manager.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore()))
        return step, restored["state"]["params"]

    def wait(self):
        self.manager.wait_until_finished()

    def close(self):
        self.manager.wait_until_finished()
        self.manager.close()
