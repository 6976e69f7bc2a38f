"""The shared timing helper of the benchmark scripts."""

from tools.bench_report import interleaved_seconds


def test_every_timed_call_follows_an_untimed_call_of_the_same_function_in_shuffled_rounds():
    calls = []
    fns = {name: (lambda name=name: calls.append(name) or 0) for name in "abcd"}
    samples = interleaved_seconds(fns, rounds=6, iters=2)
    assert {name: len(s) for name, s in samples.items()} == {name: 6 for name in "abcd"}
    assert all(t >= 0 for s in samples.values() for t in s)
    runs = [calls[i:i + 3] for i in range(0, len(calls), 3)]  # one untimed + two timed calls per function
    assert all(len(set(run)) == 1 for run in runs) and len(runs) == 6 * 4
    orders = {tuple(run[0] for run in runs[r * 4:(r + 1) * 4]) for r in range(6)}
    assert all(sorted(order) == list("abcd") for order in orders) and len(orders) > 1
