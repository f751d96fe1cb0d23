"""harness.agreement_interval: a bootstrap interval of top-1 agreement that resamples groups."""
import numpy as np
import pytest

from benchmarks.harness import agreement_interval, top1_agreement


def _logits(labels, classes=5):
    out = np.zeros((len(labels), classes), np.float32)
    out[np.arange(len(labels)), labels] = 1.0
    return out


def _case():
    """8 photos x 10 crops; every crop of photo 0 disagrees, all others agree (87.5%)."""
    ref = _logits(np.zeros(80, int))
    test_labels = np.zeros(80, int)
    test_labels[:10] = 1
    groups = np.repeat(np.arange(8), 10)
    return ref, _logits(test_labels), groups


def test_interval_holds_the_figure_and_is_wider_for_correlated_groups():
    ref, test, groups = _case()
    assert top1_agreement(ref, test) == pytest.approx(0.875)
    lo, hi = agreement_interval(ref, test, groups)
    assert lo < 0.875 < hi <= 1.0
    # Resampling single crops treats the 10 failures as independent: a narrower interval.
    lo1, hi1 = agreement_interval(ref, test, np.arange(80))
    assert hi1 - lo1 < hi - lo
    # Photo 0 drawn 0 times gives 100%; drawn 3+ of 8 times, at most 62.5%.
    assert hi == pytest.approx(1.0) and lo <= 0.75


def test_perfect_agreement_and_seeded():
    ref, _, groups = _case()
    assert agreement_interval(ref, ref, groups) == (1.0, 1.0)
    _, test, _ = _case()
    assert agreement_interval(ref, test, groups, seed=3) == agreement_interval(ref, test, groups, seed=3)


def test_bad_input():
    ref, test, groups = _case()
    with pytest.raises(ValueError, match="one group per sample"):
        agreement_interval(ref, test, groups[:-1])
    with pytest.raises(ValueError, match="level"):
        agreement_interval(ref, test, groups, level=1.5)
