import numpy as np
import pytest

from tfquant.core import (
    CrossEntropyRange,
    MinMaxRange,
    MovingAverageMinMaxRange,
    MSERange,
    PercentileRange,
    QuantSpec,
    bn_range,
    fake_quant_np,
    make_estimator,
)
from tfquant.errors import DataError, RangeError

ACT = QuantSpec.activation()


def _batches(seed=0, n=4):
    rng = np.random.default_rng(seed)
    return [rng.standard_t(3, size=(64, 8)).astype(np.float32) for _ in range(n)]


def test_minmax_is_the_observed_extremes():
    est = MinMaxRange(ACT)
    data = _batches()
    for b in data:
        est.update(b)
    lo, hi = est.range()
    allx = np.concatenate(data)
    assert lo == allx.min() and hi == allx.max()


def test_minmax_per_channel_reduces_all_but_the_axis():
    est = MinMaxRange(QuantSpec.weight(axis=-1))
    x = np.arange(24, dtype=np.float32).reshape(2, 3, 4)
    est.update(x)
    lo, hi = est.range()
    np.testing.assert_array_equal(lo, x.reshape(-1, 4).min(0))
    np.testing.assert_array_equal(hi, x.reshape(-1, 4).max(0))


def test_moving_average_follows_the_batches():
    est = MovingAverageMinMaxRange(ACT, momentum=0.5)
    est.update(np.array([-1.0, 1.0]))
    est.update(np.array([-3.0, 3.0]))
    assert est.range() == (-2.0, 2.0)


def test_percentile_clips_outliers():
    x = np.concatenate([np.random.default_rng(0).uniform(-1, 1, 100_000), [50.0]])
    est = PercentileRange(ACT, percentile=99.9)
    est.update(x)
    lo, hi = est.range()
    assert 0.9 < hi < 1.0 and -1.0 < lo < -0.9


@pytest.mark.parametrize("search", ["grid", "golden"])
def test_mse_range_beats_minmax_on_heavy_tails(search):
    spec = QuantSpec(bits=4)
    x = np.random.default_rng(0).laplace(size=(4096, 1))
    est = MSERange(spec, search=search)
    est.update(x)
    lo, hi = est.range()
    mse = np.mean((fake_quant_np(x, lo, hi, spec) - x) ** 2)
    mse_minmax = np.mean((fake_quant_np(x, x.min(), x.max(), spec) - x) ** 2)
    assert hi < x.max() and lo > x.min()
    assert mse < 0.9 * mse_minmax


def test_mse_golden_and_grid_agree():
    grid, golden = MSERange(ACT, search="grid"), MSERange(ACT, search="golden")
    for b in _batches():
        grid.update(b)
        golden.update(b)
    assert golden.range()[1] == pytest.approx(grid.range()[1], rel=0.05)


def test_mse_per_channel_searches_each_channel():
    x = np.random.default_rng(1).standard_normal((1000, 3)) * np.array([0.1, 1.0, 10.0])
    est = MSERange(QuantSpec.weight())
    est.update(x)
    lo, hi = est.range()
    assert hi.shape == (3,)
    assert hi[0] < hi[1] < hi[2]


def test_cross_entropy_range_for_logits():
    rng = np.random.default_rng(0)
    logits = rng.standard_normal((256, 10)) * 3
    logits[0, 0] = 60.0   # one outlier logit
    est = CrossEntropyRange(ACT)
    est.update(logits)
    lo, hi = est.range()
    assert hi < 60.0


def test_bn_range():
    lo, hi = bn_range(gamma=[1.0, -2.0], beta=[0.5, 1.0], alpha=3.0)
    assert (lo, hi) == (-5.0, 7.0)
    lo, hi = bn_range(gamma=[1.0, 2.0], beta=[0.5, 1.0], alpha=3.0, clip_low=0.0, clip_high=6.0)
    assert (lo, hi) == (0.0, 6.0)
    with pytest.raises(RangeError):
        bn_range(gamma=[np.nan], beta=[0.0])


def test_bad_data_is_a_clear_error():
    est = MinMaxRange(ACT)
    with pytest.raises(DataError, match="calibration set is empty"):
        est.range()
    with pytest.raises(DataError, match="NaN"):
        est.update(np.array([0.0, np.nan]))
    with pytest.raises(DataError, match="empty batch"):
        est.update(np.zeros((0, 3)))
    with pytest.raises(ValueError, match="Unknown range estimator"):
        make_estimator("kl", ACT)
