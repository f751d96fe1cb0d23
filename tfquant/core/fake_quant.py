"""Fake-quant ops over TF's FakeQuant kernels, with straight-through gradients.

These are the ops both QAT and PTQ put in their graphs: TF runs them as the simulation, and
the TFLite converter lowers them to int8 tensors with exactly the parameters `quant_params`
predicts. Ranges are snapped here (see `quant_params.snap_range`), so callers pass raw ranges.

Example:
    >>> y = fake_quant(x, -1.0, 1.0, QuantSpec.activation())
    >>> w_q = fake_quant(kernel, -r, r, QuantSpec.weight())        # r: per-output-channel
    >>> dw_q = fake_quant_depthwise_kernel(dw_kernel, -r, r, QuantSpec.weight())

Gradients: TF's FakeQuant ops pass the gradient straight through inside the range and give
zero outside it; min and max receive the gradient of the clipped part.
"""
from __future__ import annotations

import tensorflow as tf

from tfquant.core.quant_params import quant_params, round_half_away, snap_range
from tfquant.core.spec import QuantSpec
from tfquant.errors import SpecError


def fake_quant(x: tf.Tensor, rmin, rmax, spec: QuantSpec) -> tf.Tensor:
    """Quantize-dequantize `x` on the grid of `spec` for the range [rmin, rmax].

    Per-channel specs quantize along `spec.axis` (any axis; the converter reads the last one,
    so weights should be laid out with their output channel last).
    """
    x = tf.convert_to_tensor(x)
    fq_min, fq_max = _snapped(rmin, rmax, spec)
    if not spec.per_channel:
        return tf.quantization.fake_quant_with_min_max_vars(
            x, fq_min, fq_max, num_bits=spec.bits, narrow_range=spec.narrow_range)
    rank = x.shape.rank
    if rank is None:
        raise SpecError("fake_quant: a per-channel spec needs a tensor of known rank.")
    axis = spec.axis % rank
    if axis == rank - 1:
        return tf.quantization.fake_quant_with_min_max_vars_per_channel(
            x, fq_min, fq_max, num_bits=spec.bits, narrow_range=spec.narrow_range)
    perm = [d for d in range(rank) if d != axis] + [axis]
    inverse = [perm.index(d) for d in range(rank)]
    y = tf.quantization.fake_quant_with_min_max_vars_per_channel(
        tf.transpose(x, perm), fq_min, fq_max, num_bits=spec.bits, narrow_range=spec.narrow_range)
    return tf.transpose(y, inverse)


def _snapped(rmin, rmax, spec: QuantSpec):
    """Snapped range: constants when the range is known now, graph ops when it is a tensor."""
    if isinstance(rmin, (tf.Tensor, tf.Variable)) or isinstance(rmax, (tf.Tensor, tf.Variable)):
        return snap_range(rmin, rmax, spec)
    params = quant_params(rmin, rmax, spec)
    return tf.constant(params.min, tf.float32), tf.constant(params.max, tf.float32)


def fake_quant_depthwise_kernel(kernel: tf.Tensor, rmin, rmax, spec: QuantSpec) -> tf.Tensor:
    """Fake-quantize a depthwise kernel [H, W, C, M] per output channel (C * M of them).

    The kernel is reshaped to [H, W, 1, C * M] around the FakeQuant, which is the layout of
    TFLite's DEPTHWISE_CONV_2D weights (quantized dimension 3); channel c * M + m.
    """
    kernel = tf.convert_to_tensor(kernel)
    if kernel.shape.rank != 4:
        raise SpecError(f"A depthwise kernel must be [H, W, C, M], got shape {kernel.shape}.")
    h, w, c, m = kernel.shape
    flat = tf.reshape(kernel, [h, w, 1, c * m])
    flat = fake_quant(flat, rmin, rmax, spec.replace(axis=-1) if spec.per_channel else spec)
    return tf.reshape(flat, [h, w, c, m])


def fake_quant_kernel(kernel, rmin, rmax, spec: QuantSpec, depthwise: bool = False) -> tf.Tensor:
    """A conv / dense kernel (output channel last) on its grid; a depthwise kernel [H, W, C, M]
    through `fake_quant_depthwise_kernel` (TFLite's axis 3)."""
    if depthwise:
        return fake_quant_depthwise_kernel(kernel, rmin, rmax, spec)
    return fake_quant(kernel, rmin, rmax, spec)


def quant_scale(rmin, rmax, spec: QuantSpec) -> tf.Tensor:
    """The float64 scale TFLite will use for the range [rmin, rmax] (graph-friendly)."""
    fq_min, fq_max = _snapped(rmin, rmax, spec)
    return (tf.cast(fq_max, tf.float64) - tf.cast(fq_min, tf.float64)) / spec.levels


def fake_quant_bias(bias: tf.Tensor, input_scale, weight_scale) -> tf.Tensor:
    """Round a bias to TFLite's int32 grid, scale = input_scale * weight_scale (per channel).

    The converter quantizes biases this way; the simulation must too, or outputs lying within a
    fraction of an LSB of a rounding boundary come out one LSB apart. The gradient passes
    straight through.
    """
    bias = tf.convert_to_tensor(bias)
    scale = tf.cast(input_scale, tf.float64) * tf.cast(weight_scale, tf.float64)
    q = tf.clip_by_value(round_half_away(tf.cast(bias, tf.float64) / scale), -(2.0**31), 2.0**31 - 1)
    snapped = tf.cast(q * scale, bias.dtype)
    return bias + tf.stop_gradient(snapped - bias)
