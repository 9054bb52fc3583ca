"""Repeats and the statistical test behind verdicts (operator/results/stats.py): pure, seeded numbers."""

import random

import pytest

from trainbench.operator.results.stats import Samples, central, compare


def test_central_median_below_five_olympic_mean_from_five():
    assert central([3.0, 1.0, 2.0]) == 2.0
    assert central([1.0, 2.0, 3.0, 4.0]) == 2.5
    # 5 values: drop 1 and 100, mean of 2, 3, 4
    assert central([100.0, 2.0, 3.0, 1.0, 4.0]) == 3.0
    assert central([]) is None
    assert central([float("nan"), 5.0]) == 5.0


def test_samples_skip_unusable_and_report_both_spreads():
    s = Samples.of([{"mean": 10.0, "std": 1.0, "n": 4}, {"mean": 12.0, "std": 1.0, "n": 4}, None, {"mean": "x"}, True])
    assert s.k == 2
    assert s.value == 11.0
    assert s.run_std == pytest.approx(1.41421, rel=1e-4)
    assert s.step_std == 1.0
    summary = s.summary()
    assert summary["repeats"] == 2 and summary["means"] == [10.0, 12.0]
    assert summary["run_cv"] == pytest.approx(1.41421 / 11, rel=1e-4)


def _noisy(rng, center, cv, k):
    return Samples.of([{"mean": rng.gauss(center, center * cv), "std": center * cv, "n": 5} for _ in range(k)])


def test_identical_code_is_rarely_significant_even_with_large_noise():
    rng = random.Random(7)
    significant = sum(compare(_noisy(rng, 100.0, 0.3, 3), _noisy(rng, 100.0, 0.3, 3)).significant for _ in range(400))
    # alpha 5%, and the run-to-run guard band removes most of those: well under 5% of identical pairs
    assert significant <= 8


def test_a_real_slowdown_is_significant_and_signed():
    rng = random.Random(3)
    slow = compare(_noisy(rng, 50.0, 0.03, 3), _noisy(rng, 100.0, 0.03, 3))
    assert slow.significant
    assert slow.change_pct == pytest.approx(-50, abs=6)
    assert slow.p_value < 0.01
    assert slow.method == "welch"


def test_one_repeat_per_side_uses_the_noise_floor():
    one = compare(Samples.of([97.0]), Samples.of([100.0]))
    assert one.method == "z+prior"
    assert not one.significant  # 3% is within twice the 2.5% floor
    assert compare(Samples.of([90.0]), Samples.of([100.0])).significant  # -10%: z = 2.6
    big = compare(Samples.of([50.0]), Samples.of([100.0]))
    assert big.significant


def test_one_repeat_borrows_the_other_sides_run_spread():
    # baseline shows 20% run-to-run spread: a single current run 25% lower is not distinguishable
    base = Samples.of([80.0, 100.0, 120.0])
    assert not compare(Samples.of([75.0]), base).significant


def test_missing_values_give_no_comparison():
    c = compare(Samples.of([]), Samples.of([1.0]))
    assert c.change_pct is None and not c.significant
    assert compare(Samples.of([1.0]), Samples.of([0.0])).change_pct is None
