"""Every file of the newest step damaged in turn (cut to 10 bytes, emptied): the checksum manifest catches it,
the step is moved aside, and the previous step restores exactly as it was saved."""

import json
import os
import shutil
import warnings

import jax
import numpy as np
import pytest

from effjax.data import pipeline
from effjax.train.checkpoint import Checkpointer
from effjax.train.checkpoint_manifest import MANIFEST
from effjax.train.trainer import build, train_and_evaluate
from tests.foundation.helpers import tiny


def _config():
    c = tiny()
    c.train.halt_after_steps, c.checkpoint.every_steps = 10, 5
    return c


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    workdir = str(tmp_path_factory.mktemp("saved"))
    c = _config()
    train_and_evaluate(c, workdir, devices=jax.devices()[:1])
    setup = build(c, jax.devices()[:1])
    params = {}
    for step in (5, 10):
        ckpt = Checkpointer(os.path.join(workdir, "checkpoints"), keep=3, async_save=False)
        ckpt.manager.reload()
        restored = ckpt.manager.restore(step)
        params[step] = jax.device_get(restored["state"]["params"])
        ckpt.close()
    return workdir, setup, params


def _files(step_dir):
    return sorted(os.path.relpath(os.path.join(r, f), step_dir) for r, _, fs in os.walk(step_dir) for f in fs)


def _restore(workdir, setup):
    ckpt = Checkpointer(os.path.join(workdir, "checkpoints"), keep=3, async_save=False)
    data_iter = pipeline.train_iterator(setup.dataset, setup.config.train.batch_size, seed=setup.config.seed)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        step, state = ckpt.restore_latest(setup.abstract_state, data_iter)
    ckpt.close()
    return step, state, [str(w.message) for w in caught]


def test_manifest_lists_every_array_file(saved):
    workdir, _, _ = saved
    step_dir = os.path.join(workdir, "checkpoints", "10")
    listed = json.load(open(os.path.join(step_dir, MANIFEST)))["files"]
    data_files = [f for f in _files(step_dir) if "/d/" in f]
    assert data_files and set(data_files) <= set(listed)


@pytest.mark.parametrize("damage", ["cut to 10 bytes", "emptied"])
def test_array_file_cut_or_emptied_is_detected(saved, tmp_path, damage):
    workdir, setup, params = saved
    copy = str(tmp_path / "copy")
    shutil.copytree(workdir, copy)
    data = sorted(f for f in _files(os.path.join(copy, "checkpoints", "10")) if "/d/" in f)
    with open(os.path.join(copy, "checkpoints", "10", data[-1]), "r+b") as f:
        f.truncate(0 if damage == "emptied" else 10)
    step, state, messages = _restore(copy, setup)
    assert step == 5 and any("checksum mismatch" in m and "falling back to step 5" in m for m in messages), messages
    jax.tree.map(np.testing.assert_array_equal, params[5], jax.device_get(state.params))


@pytest.mark.slow
@pytest.mark.parametrize("damage", ["cut to 10 bytes", "emptied"])
def test_each_damaged_file_of_the_newest_step_falls_back_to_the_previous(saved, tmp_path, damage):
    workdir, setup, params = saved
    step_dir = os.path.join(workdir, "checkpoints", "10")
    listed = set(json.load(open(os.path.join(step_dir, MANIFEST)))["files"])
    checked = 0
    for rel in _files(step_dir):
        copy = str(tmp_path / f"copy{checked}")
        shutil.copytree(workdir, copy)
        victim = os.path.join(copy, "checkpoints", "10", rel)
        size = os.path.getsize(victim)
        with open(victim, "r+b") as f:
            f.truncate(0 if damage == "emptied" else min(10, max(size - 1, 0)))
        damaged_size = os.path.getsize(victim)
        if damaged_size == size:
            shutil.rmtree(copy)
            continue  # an empty file cannot be cut shorter
        step, state, messages = _restore(copy, setup)
        if rel in listed or rel == MANIFEST:
            assert step == 5, rel
            assert any("checkpoint step 10" in m and "falling back to step 5" in m for m in messages), (rel, messages)
        assert step in (5, 10), rel
        jax.tree.map(np.testing.assert_array_equal, params[step], jax.device_get(state.params))
        if step == 5:
            moved = os.listdir(os.path.join(copy, "checkpoints_corrupt"))
            assert len(moved) == 1 and moved[0].startswith("10-")  # moved aside, not deleted
            assert os.path.getsize(os.path.join(copy, "checkpoints_corrupt", moved[0], rel)) == damaged_size
        assert sorted(os.listdir(os.path.join(copy, "checkpoints"))) == (["5"] if step == 5 else ["10", "5"])
        shutil.rmtree(copy)
        checked += 1
    assert checked >= len(listed)


def test_step_without_manifest_restores_unverified_with_a_warning(saved, tmp_path, caplog):
    workdir, setup, params = saved
    copy = str(tmp_path / "old")
    shutil.copytree(workdir, copy)
    os.remove(os.path.join(copy, "checkpoints", "10", MANIFEST))
    step, state, _ = _restore(copy, setup)
    assert step == 10 and "has no checksum manifest" in caplog.text
    jax.tree.map(np.testing.assert_array_equal, params[10], jax.device_get(state.params))


def test_leftover_tmp_directory_of_a_cut_save_is_removed(saved, tmp_path):
    workdir, setup, _ = saved
    copy = str(tmp_path / "tmpdir")
    shutil.copytree(workdir, copy)
    leftover = os.path.join(copy, "checkpoints", "15.orbax-checkpoint-tmp-1234")
    shutil.copytree(os.path.join(copy, "checkpoints", "10"), leftover)
    step, _, _ = _restore(copy, setup)
    assert step == 10 and not os.path.exists(leftover)


@pytest.mark.slow
def test_array_file_cut_to_10_bytes_then_resume_is_bit_identical(saved, tmp_path):
    workdir, _, _ = saved
    copy = str(tmp_path / "resume")
    shutil.copytree(workdir, copy)
    data = sorted(f for f in _files(os.path.join(copy, "checkpoints", "10")) if "/d/" in f)
    with open(os.path.join(copy, "checkpoints", "10", data[0]), "r+b") as f:
        f.truncate(10)
    c = _config()
    c.train.halt_after_steps = 0
    with pytest.warns(RuntimeWarning, match="checkpoint step 10 .*checksum mismatch.*falling back to step 5"):
        resumed = train_and_evaluate(c, copy, devices=jax.devices()[:1])
    straight = train_and_evaluate(c, str(tmp_path / "straight"), devices=jax.devices()[:1])
    assert resumed.start_step == 5
    jax.tree.map(np.testing.assert_array_equal, jax.device_get(straight.state.params), jax.device_get(resumed.state.params))


def test_failed_write_noise_is_dropped_and_every_other_message_passes(monkeypatch, caplog):
    """After a failed save, TensorStore's late completions into Orbax's closed loop and asyncio's unretrieved Orbax
    write errors are dropped; any other unraisable error or asyncio message still reaches the user."""
    import asyncio
    import logging
    import sys
    import types

    from effjax.train import checkpoint

    seen = []
    asyncio_log = logging.getLogger("asyncio")
    monkeypatch.setattr(sys, "unraisablehook", seen.append)
    monkeypatch.setattr(asyncio_log, "filters", [])
    checkpoint.quiet_failed_write_noise()
    checkpoint.quiet_failed_write_noise()  # once per process: the second call wraps nothing

    loop = asyncio.new_event_loop()
    loop.close()
    try:
        loop.call_soon_threadsafe(print)
    except RuntimeError as e:
        closed = e
    other = RuntimeError("something else")
    for error in (closed, other):
        sys.unraisablehook(types.SimpleNamespace(exc_type=RuntimeError, exc_value=error, exc_traceback=None,
                                                 err_msg=None, object=None))
    assert [u.exc_value for u in seen] == [other]

    with caplog.at_level(logging.ERROR, logger="asyncio"):
        asyncio_log.error("Task exception was never retrieved\nfuture: <Task coro=<orbax...write_fragment()>>")
        asyncio_log.error("Task exception was never retrieved\nfuture: <Task coro=<user_code()>>")
    assert [r.getMessage() for r in caplog.records] == ["Task exception was never retrieved\nfuture: <Task "
                                                        "coro=<user_code()>>"]
