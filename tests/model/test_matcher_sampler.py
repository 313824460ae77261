import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from minimaskrcnn.model.matcher import BELOW_LOW_THRESHOLD, BETWEEN_THRESHOLDS, Matcher
from minimaskrcnn.model.sampler import BalancedPositiveNegativeSampler


def test_matcher_worked_example():
    # The example of the module docstring: a0 matches g0 (0.8 >= 0.7), a1 and a2 are between
    # 0.3 and 0.7 (-2), a3 is below 0.3 (-1); a1 is g1's best anchor so it is matched back to g1.
    q = np.array([[0.80, 0.10, 0.20, 0.00], [0.10, 0.50, 0.40, 0.05]])
    assert Matcher(0.7, 0.3)(q).tolist() == [0, BETWEEN_THRESHOLDS, BETWEEN_THRESHOLDS, BELOW_LOW_THRESHOLD]
    assert Matcher(0.7, 0.3, True)(q).tolist() == [0, 1, -2, -1]


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 5), st.integers(1, 30), st.booleans(), st.integers(0, 10**6))
def test_matcher_equals_torchvision(m, n, low_quality, seed):
    torch = pytest.importorskip("torch")
    from torchvision.models.detection._utils import Matcher as TVMatcher

    rng = np.random.default_rng(seed)
    # values on a coarse grid so that ties (the subtle part) happen often
    q = rng.integers(0, 11, size=(m, n)) / 10.0
    ours = Matcher(0.7, 0.3, low_quality)(q)
    theirs = TVMatcher(0.7, 0.3, low_quality)(torch.from_numpy(q)).numpy()
    np.testing.assert_array_equal(ours, theirs)


def test_matcher_errors():
    with pytest.raises(ValueError, match="ground-truth"):
        Matcher(0.5, 0.5)(np.zeros((0, 3)))
    with pytest.raises(ValueError, match="low_threshold"):
        Matcher(0.3, 0.7)


def test_sampler_counts_and_determinism():
    labels = [np.array([1] * 10 + [0] * 50 + [-1] * 5), np.array([0] * 3)]
    s = BalancedPositiveNegativeSampler(16, 0.25)
    pos, neg = s(labels, np.random.default_rng(1))
    assert pos[0].sum() == 4 and neg[0].sum() == 12
    assert np.all(labels[0][pos[0]] == 1) and np.all(labels[0][neg[0]] == 0)
    assert pos[1].sum() == 0 and neg[1].sum() == 3  # too few: everything is taken
    pos2, neg2 = s(labels, np.random.default_rng(1))
    assert all(np.array_equal(a, b) for a, b in zip(pos + neg, pos2 + neg2))
    # few positives: negatives fill the batch
    pos, neg = BalancedPositiveNegativeSampler(16, 0.5)([np.array([1, 0, 0] * 10)], np.random.default_rng(0))
    assert pos[0].sum() == 8 and neg[0].sum() == 8
    with pytest.raises(TypeError, match="rng"):
        s(labels, None)
