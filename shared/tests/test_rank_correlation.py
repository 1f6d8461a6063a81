import math

import numpy as np
import pytest

from cvlab_shared.metrics.rank_correlation import kendall_tau, rank_correlations, spearman_rho


def test_perfect_and_reversed_orders():
    truth = [1.0, 2.0, 3.0, 4.0, 5.0]
    assert kendall_tau([10, 20, 30, 40, 50], truth) == pytest.approx(1.0)
    assert spearman_rho([5, 4, 3, 2, 1], truth) == pytest.approx(-1.0)


def test_hand_computed_values():
    # one discordant pair out of 6: tau = (5 - 1) / 6; ranks differ by one swap: rho = 1 - 6*2/(4*15) = 0.8
    scores, truth = [1, 2, 4, 3], [1, 2, 3, 4]
    assert kendall_tau(scores, truth) == pytest.approx(4 / 6)
    assert spearman_rho(scores, truth) == pytest.approx(0.8)


def test_infinities_and_nan_rank_lowest():
    truth = [1.0, 2.0, 3.0, 4.0]
    assert kendall_tau([-math.inf, 0.0, 1.0, 2.0], truth) == pytest.approx(1.0)
    assert kendall_tau([float("nan"), 0.0, 1.0, 2.0], truth) == pytest.approx(1.0)
    # two -inf tie: tau-b with one tied pair in x
    tied = kendall_tau([-math.inf, -math.inf, 1.0, 2.0], truth)
    assert tied == pytest.approx(5 / math.sqrt(5 * 6))


def test_matches_numpy_pearson_of_ranks_on_random_data():
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=200), rng.normal(size=200)
    ranks = lambda v: np.argsort(np.argsort(v))  # noqa: E731
    expected = np.corrcoef(ranks(x), ranks(y))[0, 1]
    assert rank_correlations(x, y)["spearman_rho"] == pytest.approx(expected)


def test_bad_input():
    with pytest.raises(ValueError, match="differ in length"):
        kendall_tau([1, 2, 3], [1, 2])
    with pytest.raises(ValueError, match="at least 2"):
        spearman_rho([1], [1])
