"""Batch-norm folding, the one definition QAT (TF tensors) and PTQ (numpy, float64) both call.

    scale = gamma / sqrt(var + eps),  offset = beta - mean * scale      (BN as y = scale * x + offset)
    W' = W * scale (per output channel),  b' = b * scale + offset

    >>> scale, offset = bn_affine(gamma, beta, mean, var, 1e-3)
    >>> kernel, bias = fold_affine(kernel, bias, scale, offset, layout="depthwise")

Kernel layouts (`layout`): "last" (conv, dense, pointwise: [..., out]), "depthwise" ([H, W, C, M],
output channel c * M + m), "transpose" (Conv2DTranspose: [H, W, out, in]). Every function
works on numpy arrays (in their dtype: PTQ passes float64) and on TF tensors (QAT: differentiable
in gamma and beta).
"""
from __future__ import annotations

from typing import Optional

import numpy as np
import tensorflow as tf

LAYOUTS = ("last", "depthwise", "transpose")


def _is_tf(*xs) -> bool:
    return any(isinstance(x, (tf.Tensor, tf.Variable)) for x in xs)


def bn_affine(gamma, beta, mean, var, eps: float):
    """(scale, offset) of a batch norm in inference: y = scale * x + offset."""
    if _is_tf(gamma, beta, mean, var):
        scale = gamma * tf.math.rsqrt(var + eps)
    else:
        scale = gamma / np.sqrt(var + eps)
    return scale, beta - mean * scale


def scale_output_channels(kernel, factor, layout: str = "last"):
    """Multiply output channel c of `kernel` by factor[c]."""
    if layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {LAYOUTS}, got {layout!r}")
    reshape = tf.reshape if _is_tf(kernel, factor) else np.reshape
    if layout == "depthwise":
        return kernel * reshape(factor, [kernel.shape[-2], kernel.shape[-1]])
    if layout == "transpose":
        return kernel * reshape(factor, [-1, 1])
    return kernel * factor


def fold_affine(kernel, bias: Optional[object], scale, offset, layout: str = "last"):
    """(kernel, bias) of a linear op followed by y = scale * x + offset, as one linear op.
    A missing bias becomes `offset`."""
    folded = scale_output_channels(kernel, scale, layout)
    return folded, (offset if bias is None else bias * scale + offset)
