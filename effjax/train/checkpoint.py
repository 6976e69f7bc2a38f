"""Orbax checkpoints of the train state with the data iterator's state beside it.

The iterator's state (the position in the global batch stream, identical on every
process) is stored as JSON, so a checkpoint written by N processes restores in M;
`Checkpointer.progress` (the last logged train loss) is stored beside it, so a rerun
of a finished workdir can still report it.

Saves are asynchronous and atomic (Orbax renames a temporary directory on
commit) but Orbax does not verify content. Each step therefore carries a manifest
of its files' sizes and SHA-256 digests (`checkpoint_manifest`), written just
before the commit and checked before every restore, so a truncated, emptied or
missing file is detected instead of read. `restore_latest` walks back from the
newest step, warning for each one that fails verification or restore, until one
restores. A step that fails is moved aside (to `<workdir>/checkpoints_corrupt/`),
never deleted, so the run can write that step again and the damaged files stay
available to inspect. Temporary directories of saves cut short are removed when
the next run opens the directory (the workdir lock guarantees no save is running).
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import sys
import time
import warnings
from typing import Any, Optional

import grain
import jax
import orbax.checkpoint as ocp

from effjax.models import param_names
from effjax.train import checkpoint_manifest

log = logging.getLogger("effjax")

TMP_MARKER = ".orbax-checkpoint-tmp"
ITERATOR_KEY = "iterator"  # in the JSON item: the data iterator's state; the other keys are `Checkpointer.progress`


class CheckpointCorrupt(RuntimeError):
    """A step's files do not match the checksums written when it was saved."""


class CheckpointSaveError(OSError):
    """A save that could not be written (a full disk, a removed directory, ...); earlier committed steps are intact."""

    def __init__(self, step, directory: str, cause: BaseException):
        code = getattr(cause, "errno", None)
        found = re.search(r"os_error_code='?(\d+)", str(cause))  # TensorStore's way of carrying errno
        code = code or (int(found.group(1)) if found else None)
        reason = os.strerror(code) if code else f"{type(cause).__name__}: {' '.join(str(cause).split())[:200]}"
        super().__init__(code or 0, f"checkpoint step {step} could not be written: {reason}", directory)


def quiet_failed_write_noise() -> None:
    """When one write of a save fails (a full disk), the save raises it (`CheckpointSaveError`), but TensorStore's
    other writes still in flight complete later into the asyncio loop Orbax has closed: each raises "Event loop is
    closed" through `sys.unraisablehook`, and asyncio logs each unretrieved task error, dozens of tracebacks around
    the one-line error. This drops exactly those two messages and passes every other one on; once per process."""
    previous = sys.unraisablehook
    if getattr(previous, "drops_closed_loop", False):
        return

    def hook(unraisable):
        if not (isinstance(unraisable.exc_value, RuntimeError) and str(unraisable.exc_value) == "Event loop is closed"):
            previous(unraisable)

    def keep(record):  # asyncio's log of an unretrieved task error: dropped for Orbax's array writes
        message = record.getMessage()
        return not (message.startswith("Task exception was never retrieved") and "orbax" in message)

    hook.drops_closed_loop = True
    sys.unraisablehook = hook
    logging.getLogger("asyncio").addFilter(keep)


class Checkpointer:
    def __init__(self, directory: str, keep: int, async_save: bool = True):
        # Saves always go through Orbax's async checkpointer, whose post-finalization
        # callback runs before the commit rename: that is where the manifest is written.
        # `async_save=False` waits for every save to commit.
        options = ocp.CheckpointManagerOptions(
            preservation_policy=ocp.checkpoint_managers.LatestN(keep),
            enable_async_checkpointing=True,
            async_options=ocp.AsyncOptions(post_finalization_callback=self._write_manifest),
            cleanup_tmp_directories=True,
            create=True,
        )
        quiet_failed_write_noise()
        self.directory = os.path.abspath(directory)
        self.async_save = async_save
        self._saving_step = None
        self.manager = ocp.CheckpointManager(
            self.directory, options=options,
            item_handlers={"state": ocp.StandardCheckpointHandler(), "data": ocp.JsonCheckpointHandler()})
        self._last_saved_step = None
        self.progress: dict = {}  # JSON-able facts saved with each step (the last logged train loss); restored with it

    def _write_manifest(self) -> None:
        """Orbax's post-finalization callback: the step's files are complete but not yet renamed."""
        step = self._saving_step
        if step is None or jax.process_index() != 0:
            return
        prefix = f"{step}{TMP_MARKER}"
        candidates = [n for n in os.listdir(self.directory) if n.startswith(prefix)]
        if len(candidates) == 1:
            checkpoint_manifest.write(os.path.join(self.directory, candidates[0]))
        elif os.path.isdir(os.path.join(self.directory, str(step))):  # storage that writes in place
            checkpoint_manifest.write(os.path.join(self.directory, str(step)))
        else:
            log.warning("checkpoint step %d in %s: no directory to write its manifest in (found %s); "
                        "it will restore unverified", step, self.directory, candidates)

    def save(self, step: int, state: Any, data_iterator: Optional[grain.DatasetIterator] = None, wait: bool = False):
        if step == self._last_saved_step:
            if wait:
                self.wait()
            return
        self._last_saved_step = step
        items = {"state": ocp.args.StandardSave(state)}
        if data_iterator is not None:
            items["data"] = ocp.args.JsonSave({ITERATOR_KEY: data_iterator.get_state(), **self.progress})
        self.wait()  # the previous save's manifest callback reads _saving_step
        self._saving_step = step
        try:
            self.manager.save(step, args=ocp.args.Composite(**items), force=True)
        except Exception as e:  # Orbax and TensorStore raise ValueError, OSError, ... for a failed write
            raise CheckpointSaveError(step, self.directory, e) from e
        if wait or not self.async_save:
            self.wait()

    def wait(self) -> None:
        """Waits for the save in flight; its failure raises CheckpointSaveError."""
        try:
            self.manager.wait_until_finished()
        except Exception as e:
            raise CheckpointSaveError(self._saving_step, self.directory, e) from e

    def check_compatible(self, abstract_state: Any) -> None:
        """Raises ValueError when the newest checkpoint holds arrays of other shapes than the model's.

        Called before restoring, so a model or config change never gets treated as
        damage (which would move the checkpoint aside): the run stops and names the
        first mismatching parameter instead.
        """
        step = self.manager.latest_step()
        if step is None:
            return
        try:
            saved = self.manager.item_metadata(step)["state"]
        except Exception:  # unreadable metadata: leave the verdict to restore_latest
            return
        if saved is None:
            return
        if hasattr(saved, "get") and hasattr(saved.get("params"), "keys"):
            param_names.check_scheme(saved["params"], f"the checkpoint at step {step} in {self.directory}")

        def name(path):  # the saved tree is plain dicts; the model's has dataclasses and named tuples
            return "/".join(str(getattr(k, "key", getattr(k, "name", getattr(k, "idx", k)))) for k in path)

        saved_flat = {name(p): getattr(x, "shape", None) for p, x in jax.tree_util.tree_flatten_with_path(saved)[0]}
        model_flat = {name(p): x.shape for p, x in jax.tree_util.tree_flatten_with_path(abstract_state)[0]}
        for path, shape in model_flat.items():
            if path not in saved_flat or (saved_flat[path] is not None and tuple(saved_flat[path]) != tuple(shape)):
                found = "missing" if path not in saved_flat else f"shape {tuple(saved_flat[path])}"
                raise ValueError(
                    f"the checkpoint at step {step} in {self.directory} does not match this model: {path} is {found} "
                    f"there but {tuple(shape)} here; use a new --workdir or restore the original config")

    def restore_latest(self, abstract_state: Any, data_iterator: Optional[grain.DatasetIterator] = None):
        """Returns (step, state) of the newest step that restores, or (None, None) if there is none."""
        steps = sorted(self.manager.all_steps(), reverse=True)
        for i, step in enumerate(steps):
            items = {"state": ocp.args.StandardRestore(abstract_state)}
            if data_iterator is not None:
                items["data"] = ocp.args.JsonRestore()
            try:
                self.verify(step)
                restored = self.manager.restore(step, args=ocp.args.Composite(**items))
                if data_iterator is not None:
                    data = dict(restored["data"])
                    if ITERATOR_KEY in data:
                        data_iterator.set_state(data.pop(ITERATOR_KEY))
                        self.progress = data
                    else:  # written before progress was stored beside the iterator state
                        data_iterator.set_state(data)
                return step, restored["state"]
            except Exception as e:  # Orbax raises many types for damaged files
                nxt = f"falling back to step {steps[i + 1]}" if i + 1 < len(steps) else "no older checkpoint; starting from scratch"
                moved = self._quarantine(step)
                msg = (f"checkpoint step {step} in {self.directory} failed to restore ({type(e).__name__}: "
                       f"{str(e)[:200]}); moved it to {moved}; {nxt}")
                log.warning(msg)
                warnings.warn(msg, RuntimeWarning, stacklevel=2)
        return None, None

    def verify(self, step: int) -> None:
        """Raises CheckpointCorrupt when a file of `step` differs from its manifest (warns when it has none)."""
        step_dir = os.path.join(self.directory, str(step))
        if not os.path.exists(os.path.join(step_dir, checkpoint_manifest.MANIFEST)):
            log.warning("checkpoint step %d in %s has no checksum manifest (written before effjax recorded them); "
                        "restoring it unverified", step, self.directory)
            return
        problem = checkpoint_manifest.verify(step_dir)
        if problem is not None:
            raise CheckpointCorrupt(f"checksum mismatch: {problem}")

    def _quarantine(self, step: int) -> str:
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
        try:
            self.verify(step)
        except CheckpointCorrupt as e:
            raise CheckpointCorrupt(f"checkpoint step {step} in {self.directory}: {e}") from None
        restored = self.manager.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore()))
        return step, param_names.upgrade_params(restored["state"]["params"])

    def close(self):
        self.wait()
        self.manager.close()
