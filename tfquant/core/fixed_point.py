"""TFLite's and gemmlowp's fixed-point primitives, on int64 TF tensors holding int32 values.

    >>> quantize_multiplier(0.75)                         # real = q * 2^(shift - 31)
    (array(1610612736), array(0))
    >>> multiply_by_quantized_multiplier(acc, q, shift)   # requantize an int32 accumulator

These are the building blocks of `integer_kernels` (kernel_util.cc QuantizeMultiplier,
gemmlowp SaturatingRoundingDoublingHighMul / RoundingDivideByPOT, MultiplyByQuantizedMultiplier).
"""
from __future__ import annotations

from typing import Union

import numpy as np
import tensorflow as tf

from tfquant.core.quant_params import round_half_away

IntLike = Union[int, np.ndarray, tf.Tensor]
INT32_MIN, INT32_MAX = -(2**31), 2**31 - 1


def quantize_multiplier(real_multiplier) -> tuple[np.ndarray, np.ndarray]:
    """TFLite's QuantizeMultiplier: real = q * 2^(shift - 31) with q an int32 in [2^30, 2^31).

    frexp, q = round_half_away(mantissa * 2^31); a q of 2^31 is halved and the shift bumped; 0
    and multipliers below ~2^-32 (shift < -31) give (0, 0). Element-wise on a scalar or array
    (numpy; the double computation is the kernels' own). Returns int64 arrays (q, shift).

        >>> quantize_multiplier(0.75)
        (array(1610612736), array(0))
    """
    real = np.asarray(real_multiplier, np.float64)
    mantissa, shift = np.frexp(real)
    q = round_half_away(mantissa * 2.0**31)
    bump = np.abs(q) == 2.0**31
    q = np.where(bump, q / 2, q)
    shift = np.where(bump, shift + 1, shift)
    zero = (shift < -31) | (real == 0)
    q = np.where(zero, 0, q)
    shift = np.where(zero, 0, shift)
    return q.astype(np.int64), shift.astype(np.int64)


def _i64(v: IntLike) -> tf.Tensor:
    return tf.cast(v, tf.int64) if isinstance(v, (tf.Tensor, tf.Variable)) else tf.constant(np.asarray(v), tf.int64)


def wrap_int32(x: tf.Tensor) -> tf.Tensor:
    """Two's-complement wrap of int64 values to int32 (what an overflowing int32 op leaves)."""
    return tf.math.floormod(x - INT32_MIN, tf.constant(2**32, tf.int64)) + INT32_MIN


def saturating_rounding_doubling_high_mul(a: tf.Tensor, b: tf.Tensor) -> tf.Tensor:
    """gemmlowp SaturatingRoundingDoublingHighMul on int32 values: (a b + nudge) / 2^31 truncated,
    nudge = 2^30 if a b >= 0 else 1 - 2^30; a == b == INT32_MIN saturates to INT32_MAX."""
    a, b = _i64(a), _i64(b)
    ab = a * b
    nudge = tf.where(ab >= 0, tf.constant(1 << 30, tf.int64), tf.constant(1 - (1 << 30), tf.int64))
    high = tf.truncatediv(ab + nudge, tf.constant(1 << 31, tf.int64))
    overflow = tf.logical_and(tf.equal(a, INT32_MIN), tf.equal(b, INT32_MIN))
    return tf.where(overflow, tf.constant(INT32_MAX, tf.int64), high)


def rounding_divide_by_pot(x: tf.Tensor, exponent: IntLike) -> tf.Tensor:
    """gemmlowp RoundingDivideByPOT: x / 2^exponent, ties away from zero (0 <= exponent <= 31)."""
    x, exponent = _i64(x), _i64(exponent)
    one = tf.constant(1, tf.int64)
    mask = tf.bitwise.left_shift(one, exponent) - one
    remainder = tf.bitwise.bitwise_and(x, mask)
    threshold = tf.bitwise.right_shift(mask, one) + tf.cast(x < 0, tf.int64)
    return tf.bitwise.right_shift(x, exponent) + tf.cast(remainder > threshold, tf.int64)


def saturating_left_shift(x: tf.Tensor, exponent: int) -> tf.Tensor:
    """gemmlowp SaturatingRoundingMultiplyByPOT<exponent > 0> on int32 values."""
    return tf.clip_by_value(tf.bitwise.left_shift(_i64(x), tf.constant(exponent, tf.int64)), INT32_MIN, INT32_MAX)


def multiply_by_quantized_multiplier(acc: tf.Tensor, multiplier: IntLike, shift: IntLike) -> tf.Tensor:
    """TFLite's MultiplyByQuantizedMultiplier(int32 x, multiplier, shift), default (double-rounding)
    build: RoundingDivideByPOT(SaturatingRoundingDoublingHighMul(x * 2^max(shift, 0), multiplier),
    max(-shift, 0)); the left shift wraps in int32 as the kernel's does.

    `acc` is an int64 tensor of int32 values; `multiplier` / `shift` scalars or per-channel vectors
    (from `quantize_multiplier`) broadcasting against `acc`'s last axis. Returns int64.
    """
    multiplier, shift = _i64(multiplier), _i64(shift)
    zero = tf.constant(0, tf.int64)
    left = tf.maximum(shift, zero)
    right = tf.maximum(-shift, zero)
    shifted = wrap_int32(tf.bitwise.left_shift(_i64(acc), left))
    return rounding_divide_by_pot(saturating_rounding_doubling_high_mul(shifted, multiplier), right)
