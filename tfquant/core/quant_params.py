"""The one place where a float range becomes a TFLite (scale, zero point).

Everything that quantizes — QAT layers, PTQ range setting, export checks — calls this module.
It reproduces the TFLite converter's FakeQuant lowering (scale = (max - min) / (qmax - qmin) in
double, zero point rounded half away from zero on the unsigned grid and clamped) and *snaps*
every range to the integer grid before a FakeQuant op sees it, so that TF's FakeQuant kernel,
which nudges the range in float32, and the converter, which rounds the zero point in double,
agree bit for bit (a raw [-20, 20] range in 8 bits has zero point 127.5: the two round it
differently and every saturated output moves by one LSB).

Example:
    >>> spec = QuantSpec.activation()
    >>> p = quant_params(-20.0, 20.0, spec)
    >>> float(p.scale), int(p.zero_point)
    (0.1568627506494522, 0)
    >>> float(p.min), float(p.max)        # the range to give the FakeQuant op
    (-20.07843208312988, 19.92156982421875)

Degenerate ranges: a range is first widened to contain 0 (as TFLite requires); a range narrower
than `MIN_RANGE_WIDTH` (an all-zero channel, say) is widened to that width, so the scale is
never 0 and never NaN, and the converter's own widening of ranges under 1e-6 never triggers.
"""
from __future__ import annotations

import dataclasses
from typing import Optional, Union

import numpy as np
import tensorflow as tf

from tfquant.core.spec import QuantSpec
from tfquant.errors import RangeError

ArrayLike = Union[float, np.ndarray, list, tf.Tensor]

# Ranges narrower than this are widened (the converter itself widens ranges under 1e-6).
MIN_RANGE_WIDTH = 1e-5
# The converter's kNearZeroTolerance: a constant's range this narrow or narrower it widens itself
# to [min(min, -tol / 2), max(max, tol / 2)] (ExpandVerySmallRange).
CONVERTER_NEAR_ZERO = 1e-6


@dataclasses.dataclass(frozen=True)
class QuantParams:
    """Per-tensor or per-channel TFLite quantization parameters of one tensor.

    `scale` (float32, as stored in the flatbuffer) and `zero_point` (int64) are what the
    converter writes; `min` / `max` (float32) are the snapped range a FakeQuant op must use.
    `real_scale` is the converter's float64 scale before it is stored as float32: it quantizes
    biases with input real_scale * weight real_scale (a bias of 1e8 LSBs rounds differently
    with the float32 scales).
    """

    scale: np.ndarray
    zero_point: np.ndarray
    min: np.ndarray
    max: np.ndarray
    spec: QuantSpec
    real_scale: Optional[np.ndarray] = None


def round_half_away(x):
    """std::round: ties away from zero (TFLite's rule; numpy and tf.round round half to even),
    exact for every float: floor(|x| + 0.5) would misround 0.49999999999999994. Numpy or TF."""
    if isinstance(x, (tf.Tensor, tf.Variable)):
        a = tf.abs(x)
        r = tf.floor(a)
        # r + 0.5 is exact. (A select, not a cast: the converter folds it in FakeQuant graphs; the
        # second add is named so that the auto-numbered "add_N" names the flatbuffer keeps stay.)
        return tf.sign(x) * tf.where(a >= r + 0.5, tf.add(r, 1.0, name="round_up"), r)
    a = np.abs(np.asarray(x))
    r = np.floor(a)
    return np.sign(x) * (r + (a >= r + 0.5).astype(a.dtype))


def _unsigned_offset(spec: QuantSpec) -> int:
    """qmin of the unsigned grid minus qmin of `spec` (TF and the converter count from 0)."""
    return (1 if spec.narrow_range else 0) - spec.qmin


def snap_range(rmin: ArrayLike, rmax: ArrayLike, spec: QuantSpec) -> tuple[tf.Tensor, tf.Tensor]:
    """Snap a float range to the integer grid of `spec`, in TF ops (usable inside a graph).

    Returns float32 (min, max) such that the zero point implied by them is an exact integer
    and `scale = (max - min) / (qmax - qmin)`. The arithmetic is done in float64, as the
    converter does. Works element-wise, so per-channel ranges are vectors.
    """
    rmin = tf.cast(rmin, tf.float64)
    rmax = tf.cast(rmax, tf.float64)
    rmin = tf.minimum(rmin, 0.0)
    rmax = tf.maximum(rmax, 0.0)
    qmin = tf.constant(spec.qmin, tf.float64)
    qmax = tf.constant(spec.qmax, tf.float64)
    if spec.symmetric:
        half = tf.maximum(tf.maximum(-rmin, rmax), MIN_RANGE_WIDTH / 2)
        # Zero point 0: the positive side holds qmax steps.
        scale = half / qmax
        zero_point = tf.zeros_like(scale)
    else:
        width = rmax - rmin
        rmin = tf.where(width < MIN_RANGE_WIDTH, rmax - MIN_RANGE_WIDTH, rmin)
        scale = (rmax - rmin) / (qmax - qmin)
        offset = float(_unsigned_offset(spec))
        zero_point = round_half_away((qmin + offset) - rmin / scale) - offset
        zero_point = tf.clip_by_value(zero_point, qmin, qmax)
    snapped_min = tf.cast((qmin - zero_point) * scale, tf.float32)
    snapped_max = tf.cast((qmax - zero_point) * scale, tf.float32)
    return snapped_min, snapped_max


def converter_params(fq_min: ArrayLike, fq_max: ArrayLike, spec: QuantSpec) -> tuple[np.ndarray, np.ndarray]:
    """The (scale, zero point) the TFLite converter derives from a FakeQuant op's min/max.

    Mirrors the converter's lowering: double arithmetic on the unsigned grid, zero point
    rounded half away from zero and clamped, scale stored as float32.
    """
    scale, zero_point = _converter_params(fq_min, fq_max, spec)
    return scale.astype(np.float32), zero_point


def _converter_params(fq_min: ArrayLike, fq_max: ArrayLike, spec: QuantSpec,
                      float64: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """`converter_params` with the scale still in float64 (`float64`: the range too, not first
    rounded to a FakeQuant attribute's float32)."""
    dtype = np.float64 if float64 else np.float32
    fq_min = np.asarray(fq_min, dtype).astype(np.float64)
    fq_max = np.asarray(fq_max, dtype).astype(np.float64)
    offset = _unsigned_offset(spec)
    qmin_u, qmax_u = spec.qmin + offset, spec.qmax + offset
    scale = (fq_max - fq_min) / (qmax_u - qmin_u)
    zero_point = np.clip(round_half_away(qmin_u - fq_min / scale), qmin_u, qmax_u) - offset
    return scale, zero_point.astype(np.int64)


def _check_range(rmin: np.ndarray, rmax: np.ndarray) -> None:
    if not (np.all(np.isfinite(rmin)) and np.all(np.isfinite(rmax))):
        bad = "NaN" if (np.isnan(rmin).any() or np.isnan(rmax).any()) else "infinite"
        raise RangeError(
            f"Quantization range is {bad} (min={rmin!r}, max={rmax!r}): the calibration data or "
            "weights that produced it contain NaN/Inf. Check the inputs and the float model."
        )
    if np.any(rmin > rmax):
        raise RangeError(f"Quantization range has min > max (min={rmin!r}, max={rmax!r}).")


def quant_params(rmin: ArrayLike, rmax: ArrayLike, spec: QuantSpec) -> QuantParams:
    """(scale, zero point) and the snapped FakeQuant range for a float range under `spec`.

    `rmin` / `rmax` are scalars (per-tensor) or vectors (per-channel). Raises `RangeError` for
    NaN, infinite or inverted ranges.
    """
    rmin = np.asarray(rmin, np.float64)
    rmax = np.asarray(rmax, np.float64)
    _check_range(rmin, rmax)
    with tf.init_scope():  # eager even when called while a tf.function is being traced
        smin, smax = snap_range(rmin, rmax, spec)
        smin, smax = smin.numpy(), smax.numpy()
    real_scale, zero_point = _converter_params(smin, smax, spec)
    return QuantParams(scale=real_scale.astype(np.float32), zero_point=zero_point, min=smin, max=smax,
                       spec=spec, real_scale=real_scale)


def converter_constant_params(values: ArrayLike, spec: QuantSpec) -> QuantParams:
    """The per-tensor (scale, zero point) the converter gives a float constant operand that
    reaches it without a FakeQuant (or that it re-derives from the constant's values: a
    fake-quantized constant read by several ops, merged into one): [min(v, 0), max(v, 0)],
    widened by its own rule when CONVERTER_NEAR_ZERO wide or narrower, scale and zero point in
    double, not snapped (`min` / `max` are that widened range).

        >>> p = converter_constant_params(np.full(8, 1e-6, np.float32), QuantSpec.activation())
        >>> float(p.scale), int(p.zero_point)          # over [-5e-7, 1e-6]
        (5.882352827057957e-09, -43)
    """
    v = np.asarray(values, np.float32).astype(np.float64)
    _check_range(np.asarray(v.min()), np.asarray(v.max()))
    lo, hi = min(float(v.min()), 0.0), max(float(v.max()), 0.0)
    if not hi - lo > CONVERTER_NEAR_ZERO:
        lo, hi = min(lo, -CONVERTER_NEAR_ZERO / 2), max(hi, CONVERTER_NEAR_ZERO / 2)
    real_scale, zero_point = _converter_params(lo, hi, spec, float64=True)
    return QuantParams(scale=real_scale.astype(np.float32), zero_point=zero_point,
                       min=np.float32(lo), max=np.float32(hi), spec=spec, real_scale=real_scale)


def quantize(x: ArrayLike, scale: ArrayLike, zero_point: ArrayLike, spec: QuantSpec,
             axis: int | None = None) -> np.ndarray:
    """Float to integers as TFLite's QUANTIZE op does (round half away from zero, clamp).

    For per-channel parameters give the channel `axis` of `x`.
    """
    x = np.asarray(x, np.float64)
    scale = np.asarray(scale, np.float64)
    zero_point = np.asarray(zero_point, np.float64)
    if axis is not None and scale.ndim == 1:
        shape = [1] * x.ndim
        shape[axis] = -1
        scale, zero_point = scale.reshape(shape), zero_point.reshape(shape)
    q = round_half_away(x / scale) + zero_point
    return np.clip(q, spec.qmin, spec.qmax).astype(np.int64)


def dequantize(q: ArrayLike, scale: ArrayLike, zero_point: ArrayLike, axis: int | None = None) -> np.ndarray:
    """Integers back to float: (q - zero_point) * scale."""
    q = np.asarray(q, np.float64)
    scale = np.asarray(scale, np.float64)
    zero_point = np.asarray(zero_point, np.float64)
    if axis is not None and scale.ndim == 1:
        shape = [1] * q.ndim
        shape[axis] = -1
        scale, zero_point = scale.reshape(shape), zero_point.reshape(shape)
    return (q - zero_point) * scale
