"""Range estimators: from observed values to a quantization range (min, max).

Each estimator is an observer in the style of `torch.ao.quantization`: feed it batches with
`update(x)`, read `range()`. Per-channel estimators reduce over every axis but `spec.axis`.
The final range goes through `quant_params` to become a (scale, zero point).

    >>> est = MSERange(QuantSpec.activation())
    >>> for batch in batches: est.update(batch)
    >>> rmin, rmax = est.range()

Estimators: `MinMaxRange`, `MovingAverageMinMaxRange`, `PercentileRange`, `MSERange` (grid or
golden-section search of the clipping range), `CrossEntropyRange` (for logits), and
`bn_range` (beta +- alpha * |gamma|, data-free).
"""
from __future__ import annotations

import math
from typing import Optional

import numpy as np

from tfquant.core.quant_params import quant_params, round_half_away
from tfquant.core.spec import QuantSpec
from tfquant.errors import DataError, RangeError


def _as_array(x) -> np.ndarray:
    x = np.asarray(x, np.float64)
    if x.size == 0:
        raise DataError("A range estimator was given an empty batch.")
    if not np.all(np.isfinite(x)):
        raise DataError("A range estimator was given NaN or infinite values: check the data "
                        "and the float model that produced them.")
    return x


def _channels_last(x: np.ndarray, spec: QuantSpec) -> np.ndarray:
    """Reshape to [N, C] (per-channel) or [N, 1] (per-tensor)."""
    if not spec.per_channel:
        return x.reshape(-1, 1)
    return np.moveaxis(x, spec.axis, -1).reshape(-1, x.shape[spec.axis])


def fake_quant_np(x: np.ndarray, rmin, rmax, spec: QuantSpec) -> np.ndarray:
    """Quantize-dequantize in numpy with the parameters `quant_params` gives (channels last)."""
    p = quant_params(rmin, rmax, spec)
    q = np.clip(round_half_away(x / p.scale.astype(np.float64)) + p.zero_point, spec.qmin, spec.qmax)
    return (q - p.zero_point) * p.scale.astype(np.float64)


class RangeEstimator:
    """Base class: streaming statistics of a tensor -> (min, max)."""

    def __init__(self, spec: QuantSpec):
        self.spec = spec
        self.min: Optional[np.ndarray] = None
        self.max: Optional[np.ndarray] = None
        self.count = 0

    def update(self, x) -> None:
        flat = _channels_last(_as_array(x), self.spec)
        bmin, bmax = flat.min(axis=0), flat.max(axis=0)
        self._update_minmax(bmin, bmax)
        self._observe(flat)
        self.count += 1

    def _update_minmax(self, bmin: np.ndarray, bmax: np.ndarray) -> None:
        self.min = bmin if self.min is None else np.minimum(self.min, bmin)
        self.max = bmax if self.max is None else np.maximum(self.max, bmax)

    def _observe(self, flat: np.ndarray) -> None:
        pass

    def _require_data(self) -> None:
        if self.count == 0:
            raise DataError(f"{type(self).__name__}.range() called before any update(): "
                            "the calibration set is empty.")

    def range(self) -> tuple[np.ndarray, np.ndarray]:
        self._require_data()
        return self._squeeze(self.min), self._squeeze(self.max)

    def _squeeze(self, v: np.ndarray) -> np.ndarray:
        return v if self.spec.per_channel else v.reshape(())


class MinMaxRange(RangeEstimator):
    """The observed minimum and maximum (TFLite converter's calibration)."""


def moving_average(average, value, momentum: float):
    """One step of an exponential moving average, in numpy or TF (QAT's ranges use it in-graph)."""
    return momentum * average + (1.0 - momentum) * value


class MovingAverageMinMaxRange(RangeEstimator):
    """Exponential moving average of per-batch min and max (TFMOT's and QAT's default; a QAT
    `ActivationQuantizer` applies the same `moving_average` to its variables while training)."""

    def __init__(self, spec: QuantSpec, momentum: float = 0.99):
        super().__init__(spec)
        if not 0.0 <= momentum < 1.0:
            raise ValueError(f"momentum must be in [0, 1), got {momentum}.")
        self.momentum = momentum

    def _update_minmax(self, bmin, bmax):
        if self.min is None:
            self.min, self.max = bmin, bmax
        else:
            self.min = moving_average(self.min, bmin, self.momentum)
            self.max = moving_average(self.max, bmax, self.momentum)


class _SampledRange(RangeEstimator):
    """Keeps a bounded uniform sample of the values (reservoir), for search-based estimators."""

    def __init__(self, spec: QuantSpec, max_samples: int = 200_000, seed: int = 0):
        super().__init__(spec)
        self.max_samples = max_samples
        self._rng = np.random.default_rng(seed)
        self._sample: Optional[np.ndarray] = None
        self._seen = 0

    def _observe(self, flat):
        rows = flat.shape[0]
        self._seen += rows
        sample = flat if self._sample is None else np.concatenate([self._sample, flat])
        if sample.shape[0] > self.max_samples:
            keep = self._rng.choice(sample.shape[0], self.max_samples, replace=False)
            sample = sample[np.sort(keep)]
        self._sample = sample


class PercentileRange(_SampledRange):
    """The `percentile`-th and (100 - percentile)-th percentiles of the values."""

    def __init__(self, spec: QuantSpec, percentile: float = 99.99, **kwargs):
        super().__init__(spec, **kwargs)
        if not 50.0 < percentile <= 100.0:
            raise ValueError(f"percentile must be in (50, 100], got {percentile}.")
        self.percentile = percentile

    def range(self):
        self._require_data()
        lo = np.percentile(self._sample, 100.0 - self.percentile, axis=0)
        hi = np.percentile(self._sample, self.percentile, axis=0)
        return self._squeeze(lo), self._squeeze(hi)


class MSERange(_SampledRange):
    """The clipping range that minimises the mean squared quantization error.

    Candidates shrink the min-max range by a factor alpha in (0, 1]; `search="golden"` (the
    default, on both QAT's `calibrate` and PTQ) runs a golden-section search (the MSE is close
    to unimodal in alpha), `search="grid"` tries `num_candidates` values. Per-channel estimators
    search each channel independently; the values are sampled down to `max_samples`.
    """

    def __init__(self, spec: QuantSpec, search: str = "golden", num_candidates: int = 100,
                 min_alpha: float = 0.05, max_samples: int = 100_000, **kwargs):
        super().__init__(spec, max_samples=max_samples, **kwargs)
        if search not in ("grid", "golden"):
            raise ValueError(f"search must be 'grid' or 'golden', got {search!r}.")
        self.search = search
        self.num_candidates = num_candidates
        self.min_alpha = min_alpha

    def _loss(self, alpha: np.ndarray) -> np.ndarray:
        """Loss per channel for one alpha per channel."""
        lo, hi = self.min * alpha, self.max * alpha
        spec = self.spec.replace(per_channel=True, axis=-1)
        err = fake_quant_np(self._sample, lo, hi, spec) - self._sample
        return np.mean(err**2, axis=0)

    def range(self):
        self._require_data()
        channels = self.min.shape[0]
        if self.search == "grid":
            alphas = np.linspace(self.min_alpha, 1.0, self.num_candidates)
            losses = np.stack([self._loss(np.full(channels, a)) for a in alphas])
            best = alphas[np.argmin(losses, axis=0)]
        else:
            best = self._golden(channels)
        return self._squeeze(self.min * best), self._squeeze(self.max * best)

    def _golden(self, channels: int, iterations: int = 30) -> np.ndarray:
        inv_phi = (math.sqrt(5) - 1) / 2
        a = np.full(channels, self.min_alpha)
        b = np.ones(channels)
        c, d = b - inv_phi * (b - a), a + inv_phi * (b - a)
        fc, fd = self._loss(c), self._loss(d)
        for _ in range(iterations):
            left = fc < fd
            b = np.where(left, d, b)
            a = np.where(left, a, c)
            c_new, d_new = b - inv_phi * (b - a), a + inv_phi * (b - a)
            c, d = c_new, d_new
            fc, fd = self._loss(c), self._loss(d)
        candidates = np.stack([(a + b) / 2, np.ones(channels)])
        losses = np.stack([self._loss(candidates[0]), self._loss(candidates[1])])
        return candidates[np.argmin(losses, axis=0), np.arange(channels)]


class CrossEntropyRange(_SampledRange):
    """For logits: the clipping that minimises the cross-entropy between the softmax of the
    float and of the quantized logits (white paper, section 4.3). Classes on the last axis."""

    def __init__(self, spec: QuantSpec, num_candidates: int = 50, min_alpha: float = 0.2, **kwargs):
        if spec.per_channel:
            raise ValueError("CrossEntropyRange is per-tensor: logits share one scale.")
        super().__init__(spec, **kwargs)
        self.num_candidates = num_candidates
        self.min_alpha = min_alpha
        self._logits: Optional[np.ndarray] = None

    def update(self, x):
        x = _as_array(x)
        rows = x.reshape(-1, x.shape[-1])
        self._logits = rows if self._logits is None else np.concatenate([self._logits, rows])
        if self._logits.shape[0] * self._logits.shape[1] > self.max_samples:
            keep = self._rng.choice(self._logits.shape[0], max(1, self.max_samples // rows.shape[1]),
                                    replace=False)
            self._logits = self._logits[np.sort(keep)]
        super().update(x)

    def range(self):
        self._require_data()
        p = _softmax(self._logits)
        best, best_loss = 1.0, np.inf
        for alpha in np.linspace(self.min_alpha, 1.0, self.num_candidates):
            q = fake_quant_np(self._logits, self.min * alpha, self.max * alpha, self.spec)
            loss = -np.mean(np.sum(p * _log_softmax(q), axis=-1))
            if loss < best_loss:
                best, best_loss = alpha, loss
        return self._squeeze(self.min * best), self._squeeze(self.max * best)


def _softmax(x):
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def _log_softmax(x):
    z = x - x.max(axis=-1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=-1, keepdims=True))


def bn_range(gamma, beta, alpha: float = 6.0, clip_low: Optional[float] = None,
             clip_high: Optional[float] = None, per_channel: bool = False):
    """Data-free activation range from batch-norm parameters: beta +- alpha * |gamma|.

    `clip_low` / `clip_high` apply the following activation (ReLU: 0; ReLU6: 0 and 6).
    Returns per-channel vectors or, by default, the per-tensor union.
    """
    gamma = np.abs(np.asarray(gamma, np.float64))
    beta = np.asarray(beta, np.float64)
    if not (np.all(np.isfinite(gamma)) and np.all(np.isfinite(beta))):
        raise RangeError("bn_range: batch-norm gamma/beta contain NaN or Inf.")
    lo, hi = beta - alpha * gamma, beta + alpha * gamma
    if clip_low is not None:
        lo, hi = np.maximum(lo, clip_low), np.maximum(hi, clip_low)
    if clip_high is not None:
        lo, hi = np.minimum(lo, clip_high), np.minimum(hi, clip_high)
    if per_channel:
        return lo, hi
    return lo.min(), hi.max()


ESTIMATORS = {
    "minmax": MinMaxRange,
    "moving_average": MovingAverageMinMaxRange,
    "percentile": PercentileRange,
    "mse": MSERange,
    "cross_entropy": CrossEntropyRange,
}


def make_estimator(name: str, spec: QuantSpec, **kwargs) -> RangeEstimator:
    """Estimator by name: one of `ESTIMATORS` ('minmax', 'mse', ...)."""
    try:
        cls = ESTIMATORS[name]
    except KeyError:
        raise ValueError(f"Unknown range estimator {name!r}; choose one of {sorted(ESTIMATORS)}.") from None
    return cls(spec, **kwargs)
