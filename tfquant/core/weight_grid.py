"""A weight kernel against its integer grid: the math AdaRound (and anything that chooses its own
rounding) needs, so that no algorithm computes floor(w / s), the clamp or s * q itself.

    >>> s = kernel_scale(lo, hi, spec, kernel.shape, depthwise=False)   # broadcastable float32
    >>> floor, rest = split_on_grid(kernel, s)        # w / s = floor + rest, rest in [0, 1]
    >>> kernel_q = on_grid(floor + round_up, s, spec) # s * clamp(q, qmin, qmax), numpy or TF

Rounding to nearest stays `fake_quant_kernel`'s (the converter's rule); these functions are for
roundings chosen per weight.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import tensorflow as tf

from tfquant.core.quant_params import quant_params
from tfquant.core.spec import QuantSpec


def kernel_scale(lo, hi, spec: QuantSpec, kernel_shape: Sequence[int], depthwise: bool = False) -> np.ndarray:
    """The weight scale(s) of range (lo, hi), float32, shaped to broadcast against the kernel
    (output channels last; depthwise [H, W, C, M] kernels per C * M channel)."""
    scale = np.asarray(quant_params(lo, hi, spec).scale, np.float32)
    rank = len(kernel_shape)
    if scale.size == 1:
        return scale.reshape([1] * rank)
    if depthwise:
        return scale.reshape(1, 1, kernel_shape[2], kernel_shape[3])
    return scale.reshape([1] * (rank - 1) + [-1])


def split_on_grid(kernel: np.ndarray, scale: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(floor(w / s), the fractional part clipped to [0, 1]), in float32."""
    w_over_s = np.asarray(kernel, np.float32) / scale
    floor = np.floor(w_over_s)
    return floor, np.clip(w_over_s - floor, 0.0, 1.0)


def on_grid(integers, scale, spec: QuantSpec):
    """s * clamp(q, qmin, qmax): integers (possibly soft, in TF) back on the weight grid."""
    if isinstance(integers, (tf.Tensor, tf.Variable)):
        return scale * tf.clip_by_value(integers, float(spec.qmin), float(spec.qmax))
    return (scale * np.clip(integers, float(spec.qmin), float(spec.qmax))).astype(np.float32)
