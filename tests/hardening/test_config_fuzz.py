"""Random bad overrides thrown at `python -m effjax.main` validation (in-process): every one is refused
with exactly one line, exit status 2, no traceback, and nothing written."""

import string

from hypothesis import HealthCheck, assume, given, settings, strategies as st

from tests.hardening.cli import run_cli

POSITIVE_INT_FIELDS = ["train.batch_size", "train.num_steps", "eval.batch_size", "eval.every_steps",
                       "checkpoint.every_steps", "checkpoint.keep", "log.every_steps", "model.patch_size",
                       "model.hidden_dim", "model.num_layers", "model.num_heads", "model.mlp_dim", "model.decoder_dim"]
CHOICE_FIELDS = {"train.optimizer": {"adamw", "sgd"}, "train.schedule": {"cosine", "constant"},
                 "model.dtype": {"float32", "bfloat16"}, "eval.final_split": {"train", "val", "test"},
                 "train.on_schedule_change": {"refuse", "new"}}
SECTIONS = ["train", "model", "data", "eval", "checkpoint", "log", "mesh", "loss"]
KNOWN = {"train", "model", "data", "eval", "checkpoint", "log", "mesh", "loss", "seed", "profile_steps",
         "logical_axis_rules"}

words = st.text(alphabet=string.ascii_lowercase + "_", min_size=1, max_size=12).filter(lambda w: w[0] != "_")
junk = st.text(alphabet=string.ascii_letters + string.digits + "_.,()[]{}:+-@%/ ", min_size=0, max_size=16)
not_int = st.one_of(junk.filter(lambda s: not s.strip().lstrip("+-").isdigit()),
                    st.floats(allow_nan=True, allow_infinity=True).filter(lambda x: not x.is_integer()).map(repr))


def _bad_positive_int():
    return st.tuples(st.sampled_from(POSITIVE_INT_FIELDS), st.one_of(st.integers(max_value=0).map(str), not_int))


def _bad_learning_rate():
    numbers = st.one_of(st.floats(max_value=0.0), st.sampled_from([float("nan"), float("inf"), float("-inf")]))
    return st.tuples(st.just("train.learning_rate"), st.one_of(numbers.map(repr), junk.filter(lambda s: _not_float(s))))


def _not_float(s: str) -> bool:
    try:
        float(s)
    except ValueError:
        return True
    return False


def _bad_choice():
    return st.sampled_from(sorted(CHOICE_FIELDS)).flatmap(
        lambda f: st.tuples(st.just(f), st.text(alphabet=string.ascii_letters + string.digits, min_size=1, max_size=10)
                            .filter(lambda v, f=f: v not in CHOICE_FIELDS[f])))


def _unknown_name():
    top = words.filter(lambda w: w not in KNOWN)
    nested = st.tuples(st.sampled_from(SECTIONS), words).map(lambda t: f"{t[0]}.{t[1]}_x")  # no real field ends in _x
    return st.tuples(st.one_of(top, nested), junk)


def _deep_nesting():
    leaf = st.sampled_from(POSITIVE_INT_FIELDS + ["train.learning_rate", "seed", "model.name"])
    return st.tuples(st.tuples(leaf, st.lists(words, min_size=1, max_size=4)).map(lambda t: ".".join([t[0], *t[1]])), junk)


def _bad_task_weight():
    value = st.one_of(junk.filter(_not_float), st.floats(max_value=-1e-9).map(repr),
                      st.sampled_from(["nan", "inf", "-inf"]))
    return st.tuples(words.map(lambda w: f"loss.task_weights.{w}"), value)


bad_override = st.one_of(_bad_positive_int(), _bad_learning_rate(), _bad_choice(), _unknown_name(), _deep_nesting(),
                         _bad_task_weight())


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(overrides=st.lists(bad_override, min_size=1, max_size=3))
def test_random_bad_overrides_are_refused_in_one_line(tmp_path, overrides):
    args = [f"--config.{field}={value}" for field, value in overrides]
    assume(all("\x00" not in a for a in args))
    workdir = tmp_path / "fuzz"
    code, err, _ = run_cli(["--config=configs/quickstart.py:tiny", f"--workdir={workdir}", *args])
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2, (args, err)
    assert len(lines) == 1 and lines[0].startswith("effjax: error: "), (args, err)
    assert "Traceback" not in err
    assert not workdir.exists()
