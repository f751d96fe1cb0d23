"""Batch-norm folding for QAT: BN is folded into the weights *before* they are fake-quantized.

    w_fold = w * gamma / sqrt(var + eps)          (per output channel)
    b_fold = b * gamma / sqrt(var + eps) + beta - mean * gamma / sqrt(var + eps)

(the formula of `tfquant.core.bn_folding`, which PTQ folds with too).

Static folding (default; the white paper's recommendation): `mean`, `var` are BN's frozen moving
statistics, so training sees exactly the folded weights the device will run; gamma and beta keep
training through the fold.

Batch-statistics folding (Jacob et al. 2018, sec. 3.2; Krishnamoorthi 2018, sec. 3.2): while
training, a float pass gives the batch statistics mu_B, sigma_B (global over replicas); the
weights are folded with the moving sigma (so their grid does not jitter with the batch), and the
output is corrected by sigma / sigma_B:

    y = conv(x, Q(w * gamma / sigma)) * sigma / sigma_B + beta + (b - mu_B) * gamma / sigma_B

the moving statistics are updated with the batch ones, and after `freeze_steps` training steps
the layer switches to static folding with the frozen statistics (their correction factor is 1).
"""
from __future__ import annotations

from typing import Optional

import tensorflow as tf

from tfquant.core.bn_folding import bn_affine, fold_affine, scale_output_channels

FOLDINGS = ("static", "batch_stats")


def bn_params(bn) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor, tf.Tensor, float]:
    """(gamma, beta, moving_mean, moving_variance, epsilon) of a Keras BatchNormalization."""
    mean = tf.convert_to_tensor(bn.moving_mean)
    var = tf.convert_to_tensor(bn.moving_variance)
    gamma = tf.convert_to_tensor(bn.gamma) if bn.gamma is not None else tf.ones_like(mean)
    beta = tf.convert_to_tensor(bn.beta) if bn.beta is not None else tf.zeros_like(mean)
    return gamma, beta, mean, var, float(bn.epsilon)


def _layout(kind: str) -> str:
    """The kernel layout (see tfquant.core.bn_folding) of a QuantConv kind."""
    return kind if kind in ("depthwise", "transpose") else "last"


def static_fold(kernel, bias: Optional[tf.Tensor], bn, kind: str):
    """Kernel and bias with BN's frozen statistics folded in (`tfquant.core.bn_folding`)."""
    return fold_affine(kernel, bias, *bn_affine(*bn_params(bn)), layout=_layout(kind))


def batch_fold(kernel, bias: Optional[tf.Tensor], bn, kind: str, batch_mean, batch_var):
    """Kernel folded with the moving sigma, output correction sigma / sigma_B, and the bias from
    the batch statistics (see the module docstring)."""
    gamma, beta, _, var, eps = bn_params(bn)
    sigma = tf.sqrt(var + eps)
    sigma_b = tf.sqrt(batch_var + eps)
    b = bias if bias is not None else tf.zeros_like(batch_mean)
    kernel_fold = scale_output_channels(kernel, gamma / sigma, _layout(kind))
    correction = sigma / sigma_b
    bias_fold = beta + (b - batch_mean) * gamma / sigma_b
    return kernel_fold, correction, bias_fold


def update_moving_stats(bn, batch_mean, batch_var) -> None:
    """BN's own moving-average update: moving = moving * momentum + batch * (1 - momentum)."""
    m = float(bn.momentum)
    bn.moving_mean.assign(tf.convert_to_tensor(bn.moving_mean) * m + batch_mean * (1.0 - m))
    bn.moving_variance.assign(tf.convert_to_tensor(bn.moving_variance) * m + batch_var * (1.0 - m))
