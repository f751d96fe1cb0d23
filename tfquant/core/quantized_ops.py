"""Quantized ops as the simulation computes them: fake-quant graph or bit-exact integers.

These are the building blocks of every tfquant simulation (QAT layers, PTQ graphs, test models).
In "fake_quant" mode (default; training and export) each is float math followed by TF FakeQuant
ops, which the converter lowers to the int8 kernel. In "exact" mode (`simulation_mode("exact")`)
each returns exactly what TFLite's reference kernel writes, with the fake-quant gradient.

    y = quantized_linear(conv, x, kernel, bias, input_range=(lo, hi), output_range=(0.0, 6.0),
                         activation="relu6")
    z = quantized_add(y, r, a_range=..., b_range=..., output_range=...)

Ranges are (min, max) pairs, snapped here through `quant_params`; in "exact" mode they must be
known when the op runs (constants, or variables read eagerly).
"""
from __future__ import annotations

from typing import Callable, Mapping, Optional, Sequence

import numpy as np
import tensorflow as tf

from tfquant.core import integer_kernels
from tfquant.core.fake_quant import fake_quant, fake_quant_bias, fake_quant_kernel, quant_scale
from tfquant.core.op_rules import (
    LAYER_NORM_STEPS,
    LOGISTIC_RANGE,
    SOFTMAX_RANGE,
    LookupTableOp,
    apply_fused_activation,
    constant_operand_range,
    hard_swish,
    linear_forward,
)
from tfquant.core.quant_params import MIN_RANGE_WIDTH, QuantParams, converter_constant_params, quant_params
from tfquant.core.spec import QuantSpec
from tfquant.errors import SpecError

ACTIVATION = QuantSpec.activation()


def _static(v) -> np.ndarray:
    if isinstance(v, (tf.Variable, tf.Tensor)):
        if not tf.executing_eagerly():
            value = tf.get_static_value(v)
            if value is None:
                raise SpecError("The exact simulation needs ranges known when it runs: call the model "
                                "eagerly (model(x), not inside a tf.function) or use constant ranges.")
            return np.asarray(value)
        return v.numpy()
    return np.asarray(v)


def _params(rng, spec: QuantSpec) -> QuantParams:
    """The grid of a (min, max) range; a constant operand's grid comes as its QuantParams."""
    if isinstance(rng, QuantParams):
        return rng
    lo, hi = rng
    return quant_params(_static(lo), _static(hi), spec)


def is_exact() -> bool:
    return integer_kernels.get_simulation_mode() == "exact"


def quantized_input(x, *, input_range):
    """A float model input onto its int8 grid (TFLite's QUANTIZE op at the model's edge)."""
    fake = fake_quant(x, *input_range, ACTIVATION)
    if not is_exact():
        return fake
    p = _params(input_range, ACTIVATION)
    exact = integer_kernels.quantize_input(x, scale=p.scale, zero_point=int(p.zero_point))
    return integer_kernels.straight_through(fake, exact)


def kernel_range(kernel, depthwise: bool = False, per_channel: bool = True):
    """Symmetric last-value range of a kernel: per output channel (last axis; C*M for depthwise)."""
    if _is_concrete(kernel):   # a constant, or a variable read eagerly: numpy, static
        k = np.asarray(kernel)
        r = np.abs(k).max() if not per_channel else np.abs(k.reshape(-1, k.shape[-1] if not depthwise
                                                                      else k.shape[-2] * k.shape[-1])).max(0)
        return -r, r
    kernel = tf.convert_to_tensor(kernel)
    if not per_channel:
        r = tf.reduce_max(tf.abs(kernel))
        return -r, r
    if depthwise:
        h, w, c, m = kernel.shape
        r = tf.reduce_max(tf.abs(tf.reshape(kernel, [h * w, c * m])), axis=0)
    else:
        r = tf.reduce_max(tf.abs(tf.reshape(kernel, [-1, kernel.shape[-1]])), axis=0)
    return -r, r


def _is_concrete(v) -> bool:
    if isinstance(v, np.ndarray):
        return True
    if isinstance(v, tf.Variable):
        return tf.executing_eagerly()
    return isinstance(v, tf.Tensor) and not tf.is_symbolic_tensor(v)


def quantized_linear(op: Callable, x, kernel, bias, *, input_range, output_range,
                     kernel_spec: QuantSpec = QuantSpec.weight(), activation: Optional[str] = None,
                     depthwise: bool = False, fully_connected: bool = False, kernel_range_=None):
    """act(op(x, Q(kernel)) + Q(bias)) on the output grid. `x` must already be on its grid.

    `op(x, w)` is the float op (conv2d, depthwise_conv2d, matmul); `kernel` the float kernel with
    the output channel last ([H, W, C, M] for depthwise); `bias` may be None.
    """
    if fully_connected and kernel_spec.per_channel:
        raise SpecError("FULLY_CONNECTED weights must be per-tensor: the converter cannot carry a "
                        "per-channel FakeQuant through the transpose it inserts.")
    k_lo, k_hi = kernel_range_ if kernel_range_ is not None else kernel_range(kernel, depthwise, kernel_spec.per_channel)
    kernel_q = fake_quant_kernel(kernel, k_lo, k_hi, kernel_spec, depthwise)
    bias_q = None if bias is None else \
        fake_quant_bias(bias, quant_scale(*input_range, ACTIVATION), quant_scale(k_lo, k_hi, kernel_spec))
    fake = fake_quant(linear_forward(op, x, kernel_q, bias_q, activation), *output_range, ACTIVATION)
    if not is_exact():
        return fake
    p_in, p_out = _params(input_range, ACTIVATION), _params(output_range, ACTIVATION)
    p_w = quant_params(_static(k_lo), _static(k_hi), kernel_spec)
    exact = integer_kernels.linear(
        op, x, kernel_q, bias, input_scale=p_in.scale, input_zero_point=int(p_in.zero_point),
        kernel_scale=p_w.scale, output_scale=p_out.scale, output_zero_point=int(p_out.zero_point),
        activation=activation, fully_connected=fully_connected, depthwise=depthwise,
        bias_scale=p_in.real_scale * p_w.real_scale)
    return integer_kernels.straight_through(fake, exact)


def quantized_add(a, b, *, a_range, b_range, output_range, activation: Optional[str] = None):
    """ADD of two tensors on their grids, onto the output grid."""
    fake = fake_quant(apply_fused_activation(activation, a + b), *output_range, ACTIVATION)
    if not is_exact():
        return fake
    pa, pb, po = (_params(r, ACTIVATION) for r in (a_range, b_range, output_range))
    exact = integer_kernels.add(a, b, a_scale=pa.scale, a_zero_point=int(pa.zero_point), b_scale=pb.scale,
                                b_zero_point=int(pb.zero_point), output_scale=po.scale,
                                output_zero_point=int(po.zero_point), activation=activation)
    return integer_kernels.straight_through(fake, exact)


def quantized_mul(a, b, *, a_range, b_range, output_range, activation: Optional[str] = None):
    """MUL of two tensors on their grids (broadcasting; either may be a fake-quantized constant),
    onto the output grid."""
    fake = fake_quant(apply_fused_activation(activation, a * b), *output_range, ACTIVATION)
    if not is_exact():
        return fake
    pa, pb, po = (_params(r, ACTIVATION) for r in (a_range, b_range, output_range))
    exact = integer_kernels.mul(a, b, a_scale=pa.scale, a_zero_point=int(pa.zero_point), b_scale=pb.scale,
                                b_zero_point=int(pb.zero_point), output_scale=po.scale,
                                output_zero_point=int(po.zero_point), activation=activation)
    return integer_kernels.straight_through(fake, exact)


def quantized_squared_difference(a, b, *, a_range, b_range, output_range):
    """SQUARED_DIFFERENCE (a - b)^2 of two tensors on their grids (broadcasting), onto the output grid."""
    fake = fake_quant(tf.math.squared_difference(a, b), *output_range, ACTIVATION)
    if not is_exact():
        return fake
    pa, pb, po = (_params(r, ACTIVATION) for r in (a_range, b_range, output_range))
    exact = integer_kernels.squared_difference(
        a, b, a_scale=pa.scale, a_zero_point=int(pa.zero_point), b_scale=pb.scale,
        b_zero_point=int(pb.zero_point), output_scale=po.scale, output_zero_point=int(po.zero_point))
    return integer_kernels.straight_through(fake, exact)


def _unary_on_own_grid(x, float_fn: Callable, exact_kernel: Callable, input_range, output_range):
    """An int8 op of one input onto a grid of its own: float_fn then FakeQuant, or in "exact" mode
    `exact_kernel(x, input_scale=, input_zero_point=, output_scale=, output_zero_point=)`."""
    fake = fake_quant(float_fn(x), *output_range, ACTIVATION)
    if not is_exact():
        return fake
    pi, po = _params(input_range, ACTIVATION), _params(output_range, ACTIVATION)
    exact = exact_kernel(x, input_scale=pi.scale, input_zero_point=int(pi.zero_point),
                         output_scale=po.scale, output_zero_point=int(po.zero_point))
    return integer_kernels.straight_through(fake, exact)


def quantized_rsqrt(x, *, input_range, output_range):
    """RSQRT of a tensor on its grid (non-negative reals), onto its own output grid."""
    return _unary_on_own_grid(x, tf.math.rsqrt, integer_kernels.rsqrt, input_range, output_range)


def quantized_constant(value):
    """(value on its int8 grid, its range): a constant operand of MUL / ADD
    (`op_rules.constant_operand_range`); the converter stores it as an int8 tensor.

    A constant narrower than MIN_RANGE_WIDTH (LayerScale's gammas at their 1e-6 start, an
    epsilon) has no FakeQuant: the snapped range would be widened, and the converter re-derives
    a fake-quantized constant's grid from its values when several ops read it (identical
    constants are merged), so the flatbuffer's grid would depend on that. It goes to the
    converter in float, which quantizes it by its own rule in both cases; the range returned
    is then that grid (`converter_constant_params`), for the exact kernels, and the fake-quant
    graph uses the float value (at most half a step of a grid 1e-6 wide away).
    """
    value = tf.convert_to_tensor(value, tf.float32)
    static = tf.get_static_value(value)          # a constant, or a variable read eagerly
    rng = constant_operand_range(value if static is None else static)
    fake = fake_quant(value, *rng, ACTIVATION)
    if static is None:                           # traced: the same choice as a graph select
        return tf.where(rng[1] - rng[0] < MIN_RANGE_WIDTH, value, fake), rng
    if rng[1] - rng[0] < MIN_RANGE_WIDTH:
        return value, converter_constant_params(static, ACTIVATION)
    return fake, rng


def quantized_affine(x, scale, offset, *, input_range, output_range, mid_range=None,
                     activation: Optional[str] = None):
    """x * scale + offset per channel (`op_rules.AFFINE_TFLITE_OPS`): MUL by the int8 constant
    `scale` onto `mid_range`, then ADD of the int8 constant `offset` onto `output_range`, the
    fused activation in the last op. `scale` or `offset` None leaves that op out (then
    `mid_range` is not used). `x` must be on its grid.

        y = quantized_affine(x, bn_scale, bn_offset, input_range=(-3, 5), mid_range=(-2, 4),
                             output_range=(0, 6), activation="relu6")
    """
    if scale is None and offset is None:
        raise SpecError("quantized_affine needs a scale, an offset or both.")
    y, y_range = x, input_range
    if scale is not None:
        s, s_range = quantized_constant(scale)
        last = offset is None
        y = quantized_mul(y, s, a_range=y_range, b_range=s_range,
                          output_range=output_range if last else mid_range,
                          activation=activation if last else None)
        y_range = output_range if last else mid_range
    if offset is not None:
        b, b_range = quantized_constant(offset)
        y = quantized_add(y, b, a_range=y_range, b_range=b_range, output_range=output_range, activation=activation)
    return y


def quantized_logistic(x, *, input_range):
    """LOGISTIC (sigmoid) of a tensor on its grid, onto TFLite's fixed output grid (1/256, -128)."""
    fake = fake_quant(tf.sigmoid(x), *LOGISTIC_RANGE, ACTIVATION)
    if not is_exact():
        return fake
    p = _params(input_range, ACTIVATION)
    exact = integer_kernels.logistic(x, input_scale=p.scale, input_zero_point=int(p.zero_point))
    return integer_kernels.straight_through(fake, exact)


def quantized_hard_swish(x, *, input_range, output_range):
    """HARD_SWISH (`op_rules.hard_swish`, x * relu6(x + 3) / 6) of a tensor on its grid, onto its
    own output grid; in "exact" mode the reference kernel's int16 fixed point."""
    return _unary_on_own_grid(x, hard_swish, integer_kernels.hard_swish, input_range, output_range)


def quantized_leaky_relu(x, alpha: float, *, input_range, output_range):
    """LEAKY_RELU of a tensor on its grid, onto its own output grid."""
    fake = fake_quant(tf.nn.leaky_relu(x, alpha=alpha), *output_range, ACTIVATION)
    if not is_exact():
        return fake
    pi, po = _params(input_range, ACTIVATION), _params(output_range, ACTIVATION)
    exact = integer_kernels.leaky_relu(x, alpha, input_scale=pi.scale, input_zero_point=int(pi.zero_point),
                                       output_scale=po.scale, output_zero_point=int(po.zero_point))
    return integer_kernels.straight_through(fake, exact)


def quantized_lookup_table(x, op: LookupTableOp, *, input_range, output_range):
    """An int8 lookup-table op (`core.op_rules.LOOKUP_TABLE_OPS`: EXP, GELU, ...) of a tensor on
    its grid, onto its own output grid."""
    fake = fake_quant(op.tf_fn(x), *output_range, ACTIVATION)
    if not is_exact():
        return fake
    pi, po = _params(input_range, ACTIVATION), _params(output_range, ACTIVATION)
    params = dict(input_scale=float(pi.scale), input_zero_point=int(pi.zero_point),
                  output_scale=float(po.scale), output_zero_point=int(po.zero_point))
    exact = integer_kernels.apply_lookup_table(x, integer_kernels.lookup_table(op.table_fn, **params), **params)
    return integer_kernels.straight_through(fake, exact)


def quantized_mean(x, axis, *, input_range, output_range, keepdims: bool = False):
    """MEAN over `axis` (global average pooling), onto its own output grid."""
    fake = fake_quant(tf.reduce_mean(x, axis=axis, keepdims=keepdims), *output_range, ACTIVATION)
    if not is_exact():
        return fake
    pi, po = _params(input_range, ACTIVATION), _params(output_range, ACTIVATION)
    exact = integer_kernels.mean(x, list(axis), input_scale=pi.scale, input_zero_point=int(pi.zero_point),
                                 output_scale=po.scale, output_zero_point=int(po.zero_point), keepdims=keepdims)
    return integer_kernels.straight_through(fake, exact)


def quantized_avg_pool(x, pool_size, strides, padding: str, *, input_range):
    """AVERAGE_POOL_2D: output shares the input's grid (one quantizer, as TFLite requires)."""
    fake = fake_quant(tf.nn.avg_pool2d(x, pool_size, strides, padding), *input_range, ACTIVATION)
    if not is_exact():
        return fake
    p = _params(input_range, ACTIVATION)
    exact = integer_kernels.avg_pool(x, tuple(pool_size), tuple(strides), padding, scale=p.scale,
                                     zero_point=int(p.zero_point))
    return integer_kernels.straight_through(fake, exact)


def quantized_concat(values: Sequence, axis: int, *, input_ranges: Sequence, output_range):
    """CONCATENATION onto `output_range`, the grid TFLite's kernel needs on its inputs and output.
    An input on another grid (`input_ranges[i]`) is requantized by the QUANTIZE (int8 to int8) the
    converter puts before it; an input on the output's grid is copied; None: a float input (the
    QUANTIZE from float). Each value must be on its grid."""
    fake = fake_quant(tf.concat(list(values), axis=axis), *output_range, ACTIVATION)
    if not is_exact():
        return fake
    po = _params(output_range, ACTIVATION)
    parts = []
    for v, rng in zip(values, input_ranges):
        if rng is None:
            parts.append(integer_kernels.quantize_input(v, scale=po.scale, zero_point=int(po.zero_point)))
            continue
        pi = _params(rng, ACTIVATION)
        if float(pi.scale) == float(po.scale) and int(pi.zero_point) == int(po.zero_point):
            parts.append(tf.cast(v, tf.float32))
        else:
            parts.append(integer_kernels.requantize(v, input_scale=pi.scale, input_zero_point=int(pi.zero_point),
                                                    output_scale=po.scale, output_zero_point=int(po.zero_point)))
    return integer_kernels.straight_through(fake, tf.concat(parts, axis=axis))


def quantized_softmax(logits, *, input_range=None):
    """SOFTMAX onto TFLite's fixed output grid (1/256, -128). In "exact" mode (which needs the
    logits' `input_range`) the reference kernel's gemmlowp fixed-point arithmetic is emulated."""
    fake = fake_quant(tf.nn.softmax(logits), *SOFTMAX_RANGE, ACTIVATION)
    if not is_exact() or input_range is None:
        return fake
    p = _params(input_range, ACTIVATION)
    exact = integer_kernels.softmax(logits, input_scale=p.scale, input_zero_point=int(p.zero_point))
    return integer_kernels.straight_through(fake, exact)


def quantized_layer_norm(x, gamma, beta, epsilon: float, *, input_range, ranges: Mapping[str, tuple],
                         quantize: Optional[Callable] = None):
    """LayerNormalization over the last axis as the TFLite ops of `op_rules.LAYER_NORM_STEPS`:
    each step's output on its grid `ranges[name]` (NEG's float output QUANTIZEd onto its own).
    `gamma` / `beta` (None: the layer has none; the step is left out) and `epsilon` are int8
    constant operands (`quantized_constant`). `x` must be on its grid.

    `quantize(name, value)`: how the fake-quant graph puts a step's float output on its grid
    (QAT's quantizers, which observe and train their ranges); default `fake_quant` with `ranges`.
    In "exact" mode without a `quantize` hook every step is its reference kernel's integers.

        y = quantized_layer_norm(x, gamma, beta, 1e-6, input_range=(-3, 4), ranges=plan_ranges)
    """
    exact = is_exact() and quantize is None
    if quantize is None:
        quantize = lambda name, v: fake_quant(v, *ranges[name], ACTIVATION)   # noqa: E731
    constants = {"epsilon": np.float32(epsilon), "gamma": gamma, "beta": beta}
    values, grids = {"x": x}, {"x": input_range}
    for name, op, inputs in LAYER_NORM_STEPS:
        const = next((c for c in inputs if c in constants), None)
        if const is not None and constants[const] is None:       # no gamma / beta: no MUL / ADD
            values[name], grids[name] = values[inputs[0]], grids[inputs[0]]
            continue
        args, arg_ranges = [], []
        for i in inputs:
            if i in constants:
                c, c_range = quantized_constant(constants[i])
                args.append(c)
                arg_ranges.append(c_range)
            else:
                args.append(values[i])
                arg_ranges.append(grids[i])
        out_range = ranges.get(name) if exact else None
        if op == "MEAN":
            y = quantized_mean(args[0], [-1], input_range=arg_ranges[0], output_range=out_range, keepdims=True) \
                if exact else quantize(name, tf.reduce_mean(args[0], axis=-1, keepdims=True))
        elif op == "SQUARED_DIFFERENCE":
            y = quantized_squared_difference(args[0], args[1], a_range=arg_ranges[0], b_range=arg_ranges[1],
                                             output_range=out_range) if exact else \
                quantize(name, tf.math.squared_difference(args[0], tf.stop_gradient(args[1])))
        elif op == "RSQRT":
            y = quantized_rsqrt(args[0], input_range=arg_ranges[0], output_range=out_range) if exact else \
                quantize(name, tf.math.rsqrt(args[0]))
        elif op in ("ADD", "MUL"):
            fn = quantized_add if op == "ADD" else quantized_mul
            y = fn(args[0], args[1], a_range=arg_ranges[0], b_range=arg_ranges[1], output_range=out_range) \
                if exact else quantize(name, args[0] + args[1] if op == "ADD" else args[0] * args[1])
        elif op == "NEG":                       # float on the device: DEQUANTIZE, NEG, QUANTIZE
            y = quantized_input(-args[0], input_range=out_range) if exact else quantize(name, -args[0])
        else:  # pragma: no cover - LAYER_NORM_STEPS holds only the ops above
            raise AssertionError(op)
        values[name] = y
        grids[name] = ranges.get(name) if exact else None
    return values["output"]
