"""Bit-exact emulation of TFLite's *reference* int8 kernels, in TF ops.

Float arithmetic followed by a FakeQuant rounds once, in float. TFLite's integer kernels round in
fixed point, some twice (requantization is SaturatingRoundingDoublingHighMul then
RoundingDivideByPOT), and MEAN, AVERAGE_POOL_2D, ADD and SOFTMAX have rounding rules of their own.
The functions here take tensors already on their integer grids (fake-quantized floats) and return
the float value of exactly the integer TFLite's reference kernels (`OpResolverType.BUILTIN_REF`)
write, i.e. dequantize(int8 output). They are plain int64 / float64 TF ops: they run eagerly, in a
`tf.function` and inside Keras layers. They carry no gradient of their own; callers (the
`tfquant.core.quantized_ops`) return `straight_through(fake_quant_path, exact)`, whose value is
the exact one and whose gradient is the fake-quant path's.

Kernels emulated (sources: LiteRT `tflite/kernels/`, gemmlowp `fixedpoint/fixedpoint.h`):

===================  ==========================================================================
CONV_2D,             int32 accumulator of (q_in - zp_in) * q_w plus the int32 bias; per-channel
DEPTHWISE_CONV_2D    multiplier QuantizeMultiplier(double(s_in) * double(s_w[c]) / double(s_out))
                     (kernel_util.cc PopulateConvolutionQuantizationParams, also for per-tensor
                     weights); MultiplyByQuantizedMultiplier with double rounding; + zp_out; clamp
                     to the fused activation's range (CalculateActivationRangeQuantized).
FULLY_CONNECTED      same accumulator; the reference kernel requantizes in double:
                     round_half_away(double(acc) * (double(s_in) * double(s_w) / double(s_out)))
                     (reference_integer_ops::FullyConnected with float scales, LiteRT >= 2025-04).
ADD                  inputs (q - zp) << 20, each scaled by s_i / (2 max(s_a, s_b)), summed,
                     scaled by 2 max(s_a, s_b) / (2^20 s_out), all with double rounding.
MEAN (int8)          reference_ops::QuantizedMeanOrSum: int32 sum of (q - zp), multiplier
                     QuantizeMultiplier(s_in / s_out) with 1 / count folded in (shifted by
                     floor(log2 count), integer division), then MultiplyByQuantizedMultiplier.
AVERAGE_POOL_2D      sum of the raw int8 values of the window's valid elements, divided by their
                     count, rounded half away from zero (C++ integer division).
SOFTMAX (int8)       gemmlowp fixed point: input scaled to Q5.26, exp_on_negative_values, sum in
                     Q12.19, reciprocal by Newton-Raphson (GetReciprocal), output (1/256, -128).
QUANTIZE             float32 x / float32 scale, rounded half away from zero, + zp, clamp.
QUANTIZE (int8 to    reference_ops::Requantize: (q - zp_in) times QuantizeMultiplier(double(s_in)
int8: requantize)    / double(s_out)) (quantize.cc Prepare), MultiplyByQuantizedMultiplier, + zp_out,
                     clamp. The converter puts one before a CONCATENATION input on another grid.
MUL (int8,           (q_a - zp_a) (q_b - zp_b) in int32, times QuantizeMultiplier of the float
broadcasting)        expression s_a * s_b / s_out (mul.cc Prepare), MultiplyByQuantizedMultiplier,
                     + zp_out, clamp to the fused activation's range. A constant operand (a
                     per-channel affine's scale) is an int8 tensor like any other.
LOGISTIC (int8)      the LUTPopulate table of float32 1 / (1 + exp(-x)) onto (1/256, -128)
                     (activations.cc SigmoidPrepare, reference and generic-optimized kernels).
HARD_SWISH (int8)    int16 fixed point (reference_ops::HardSwish, activations.cc HardSwishPrepare):
                     (q - zp_in) << 7 times a Q15 output multiplier, times a Q15 "reluish" gate
                     (3.0 = 2^15) by a truncating doubling high mul, RoundingDivideByPOT, + zp_out;
                     computed for the 256 int8 inputs and gathered (`hard_swish_table`).
LEAKY_RELU (int8)    (q - zp_in) times QuantizeMultiplier(s_in / s_out) where it is >= 0, else
                     times QuantizeMultiplier(s_in * alpha / s_out), both computed in float
                     (activations.cc LeakyReluPrepare); MultiplyByQuantizedMultiplier, + zp_out.
SQUARED_DIFFERENCE   squared_difference.cc: (q - zp) << 7, each scaled by s_i / (2 max(s_a, s_b)),
(int8)               the difference squared in int32, scaled by (2 max)^2 / (2^14 s_out); double
                     rounding throughout (MultiplyByQuantizedMultiplierSmallerThanOneExp).
RSQRT (int8)         elementwise.cc RsqrtEvalQuantizedInt8: GetInvSqrtQuantizedMultiplierExp of
                     q - zp_in (gemmlowp Newton-Raphson in Q3.28), applied to 1 << 20, then
                     requantized by QuantizeMultiplier(1 / (sqrt(s_in) s_out)) >> 20; q == zp_in
                     gives 127. A function of the int8 input only: a 256-entry table here.
EXP, GELU, ...       a 256-entry table (LUTPopulate): round_half_away(f(s_in (q - zp_in)) *
(lookup tables)      (1 / s_out)) + zp_out, clamped, all in float32 (`core.op_rules.LOOKUP_TABLE_OPS`).
===================  ==========================================================================

Every kernel is checked against the interpreter in tests/test_integer_kernels.py (100% equal).
Integer accumulators are assumed not to overflow int32 (as TFLite assumes).

The simulation mode
-------------------
A tfquant simulation can be built two ways, chosen by `simulation_mode` *when the graph is traced
or the layer called*:

- "fake_quant" (default): float ops and TF FakeQuant ops. Trainable, and the only thing the TFLite
  converter may see: `tfquant.to_tflite` always traces under "fake_quant", whatever the caller's
  mode, and refuses a graph already traced in "exact" mode (`has_emulation_ops`), so the
  flatbuffer never contains emulation ops.
- "exact": the same graph whose quantized ops return these kernels' values (with the fake-quant
  gradient). `tfquant.verify` evaluates simulations under "exact".

The mode is a context variable read at trace time: a `tf.function` traced once keeps the mode of
its first trace (the trace cache does not see Python state), so give each mode its own
`tf.function`, as `testdata/handbuilt_model.py` does:

    fake = tf.function(lambda x: forward(x), input_signature=sig)      # export this one
    def _exact(x):
        with simulation_mode("exact"):
            return forward(x)
    exact = tf.function(_exact, input_signature=sig)                    # verify against this one

Keras layers read the mode on each (eager) call: `with simulation_mode("exact"): model(x)`.
"""
from __future__ import annotations

import contextlib
import contextvars
from typing import Callable, Iterator, Optional, Sequence

import numpy as np
import tensorflow as tf

from tfquant.core.fixed_point import (  # noqa: F401 - re-exported: the kernels' primitives
    INT32_MAX,
    INT32_MIN,
    IntLike,
    _i64,
    multiply_by_quantized_multiplier,
    quantize_multiplier,
    rounding_divide_by_pot,
    saturating_left_shift,
    saturating_rounding_doubling_high_mul,
    wrap_int32,
)
from tfquant.core.quant_params import round_half_away

MODES = ("fake_quant", "exact")
_MODE: contextvars.ContextVar[str] = contextvars.ContextVar("tfquant_simulation_mode", default="fake_quant")

INT8_MIN, INT8_MAX = -128, 127
ADD_LEFT_SHIFT = 20                       # add.cc: left_shift for 8-bit inputs
SQUARED_DIFFERENCE_LEFT_SHIFT = 7         # squared_difference.cc: left_shift for int8 inputs
RSQRT_SHIFT = 20                          # elementwise.cc RsqrtEvalQuantizedInt8: kShift
SOFTMAX_OUTPUT_SCALE, SOFTMAX_OUTPUT_ZERO_POINT = 1.0 / 256.0, -128
LOGISTIC_OUTPUT_SCALE, LOGISTIC_OUTPUT_ZERO_POINT = 1.0 / 256.0, -128
STE_OP_NAME = "exact_ste"                 # the straight-through op of every exact-mode result



@contextlib.contextmanager
def simulation_mode(mode: str) -> Iterator[None]:
    """Within this block, tfquant's quantized ops build the `mode` simulation.

    "fake_quant": float ops and FakeQuant (trainable; what the converter reads);
    "exact": the values TFLite's reference integer kernels produce (gradient passes straight
    through to the fake-quant path). Read when a graph is traced or a layer called.
    """
    if mode not in MODES:
        raise ValueError(f"simulation mode must be one of {MODES}, got {mode!r}.")
    token = _MODE.set(mode)
    try:
        yield
    finally:
        _MODE.reset(token)


def get_simulation_mode() -> str:
    """The current simulation mode: "fake_quant" (default) or "exact"."""
    return _MODE.get()


def straight_through(fake: tf.Tensor, exact: tf.Tensor) -> tf.Tensor:
    """Forward value `exact`, gradient of `fake`: fake + stop_gradient(exact - fake).

    The op is named `STE_OP_NAME`, which marks a graph as an exact simulation (`has_emulation_ops`).
    """
    return tf.add(fake, tf.stop_gradient(tf.cast(exact, fake.dtype) - fake), name=STE_OP_NAME)


def has_emulation_ops(graph_def) -> bool:
    """Whether a GraphDef (or its function library) holds exact-simulation ops: such a graph was
    traced under simulation_mode("exact") and must not reach the TFLite converter."""
    names = [n.name for n in graph_def.node]
    names += [n.name for f in graph_def.library.function for n in f.node_def]
    return any(name.rsplit("/", 1)[-1].startswith(STE_OP_NAME) for name in names)


# ---- grids -----------------------------------------------------------------------------------
def _grid(x: tf.Tensor, scale, zero_point: IntLike = 0) -> tf.Tensor:
    """The integers of a tensor already on its grid, round(x / scale) + zero_point, as int64."""
    return tf.cast(tf.round(tf.cast(x, tf.float64) / np.asarray(scale, np.float64)), tf.int64) + zero_point


def _to_float(q: tf.Tensor, scale, zero_point: int) -> tf.Tensor:
    """dequantize(q) = (q - zero_point) * scale, as float32."""
    return tf.cast((tf.cast(q, tf.float64) - zero_point) * np.float64(scale), tf.float32)


def _quantize_scalar(value: float, scale: float, zero_point: int) -> int:
    """kernel_util.cc Quantize: zero_point + std::round(float(value) / float(scale))."""
    v = np.float32(value) / np.float32(scale)                 # float32 division, as the kernel
    return int(zero_point + round_half_away(np.float64(v)))


def activation_bounds(activation: Optional[str], scale: float, zero_point: int,
                      qmin: int = INT8_MIN, qmax: int = INT8_MAX) -> tuple[int, int]:
    """CalculateActivationRangeQuantized: the integer clamp of a fused None / "relu" / "relu6"."""
    if activation is None:
        return qmin, qmax
    if activation not in ("relu", "relu6"):
        raise ValueError(f"Unsupported fused activation {activation!r} (None, 'relu' or 'relu6').")
    lo = max(qmin, _quantize_scalar(0.0, scale, zero_point))
    hi = qmax if activation == "relu" else min(qmax, _quantize_scalar(6.0, scale, zero_point))
    return lo, hi


# ---- kernels -----------------------------------------------------------------------------------
def quantize_bias(bias, bias_scale) -> tf.Tensor:
    """The int32 bias the converter writes (as int64): round half away from zero of
    bias / bias_scale in double, bias_scale = input real_scale * weight real_scale (per channel),
    saturated to int32 as the converter does (a dead channel's tiny weight scale sends its bias
    far beyond it: left unclamped, the accumulator would wrap where TFLite's saturates)."""
    scale = np.asarray(bias_scale, np.float64).reshape(-1)
    q = tf.clip_by_value(round_half_away(tf.cast(bias, tf.float64) / scale), float(INT32_MIN), float(INT32_MAX))
    return tf.cast(q, tf.int64)


def linear(op: Callable[[tf.Tensor, tf.Tensor], tf.Tensor], x: tf.Tensor, kernel_q: tf.Tensor,
           bias: Optional[tf.Tensor], *, input_scale: float, input_zero_point: int,
           kernel_scale, output_scale: float, output_zero_point: int,
           activation: Optional[str] = None, fully_connected: bool = False,
           depthwise: bool = False, bias_scale=None) -> tf.Tensor:
    """CONV_2D / DEPTHWISE_CONV_2D / FULLY_CONNECTED as the reference kernels compute them.

    Args:
      op: the float op, e.g. `lambda x, w: tf.nn.conv2d(x, w, 1, "SAME")`, `tf.matmul`; it is run
        in float64 on integer-valued tensors (exact: every partial sum is below 2^53). Zero padding
        of (q - zp_in) is what the kernels do.
      x: the input, already on its grid: x = (q - input_zero_point) * input_scale.
      kernel_q: the fake-quantized kernel, output channel last ([H, W, C, M] for depthwise).
      bias: the float bias (or None), rounded here to int32 with scale input_scale * kernel_scale.
      input_scale, output_scale: float32 scales as in the flatbuffer (`quant_params(...).scale`).
      kernel_scale: per-tensor scalar or per-output-channel vector (C * M for depthwise).
      activation: the fused activation, None / "relu" / "relu6".
      fully_connected: FULLY_CONNECTED's double-precision requantization instead of the conv's
        fixed-point MultiplyByQuantizedMultiplier.
      depthwise: `kernel_q` is a depthwise kernel [H, W, C, M].
      bias_scale: the float64 scale(s) the converter rounds the bias with, input real_scale *
        kernel real_scale (`QuantParams.real_scale`); required with a bias (the product of the
        float32 scales rounds large biases differently).

    Returns the float32 value of the int8 output.
    """
    s_in = np.float32(input_scale)
    s_w = np.asarray(kernel_scale, np.float32).reshape(-1)
    s_out = np.float32(output_scale)
    xi = tf.cast(_grid(x, s_in), tf.float64)                                  # q_in - zp_in
    w_scale_shape = list(kernel_q.shape[-2:]) if depthwise and s_w.size > 1 else [-1]
    wi = tf.cast(_grid(kernel_q, s_w.reshape(w_scale_shape)), tf.float64)     # int8 weights
    acc = tf.cast(op(xi, wi), tf.int64)
    if bias is not None:
        if bias_scale is None:
            raise ValueError("linear: a bias needs its bias_scale (input real_scale * kernel real_scale).")
        acc = acc + quantize_bias(bias, bias_scale)
    # Effective multiplier per output channel, double from the float32 scales, (s_in * s_w) / s_out.
    effective = (np.float64(s_in) * s_w.astype(np.float64)) / np.float64(s_out)
    if effective.size == 1:
        effective = effective.reshape(())
    if fully_connected:
        scaled = round_half_away(tf.cast(acc, tf.float64) * effective)
        q = tf.cast(tf.clip_by_value(scaled, INT32_MIN, INT32_MAX), tf.int64)
    else:
        multiplier, shift = quantize_multiplier(effective)
        q = multiply_by_quantized_multiplier(acc, multiplier, shift)
    lo, hi = activation_bounds(activation, s_out, output_zero_point)
    return _to_float(tf.clip_by_value(q + output_zero_point, lo, hi), s_out, output_zero_point)


def add(a: tf.Tensor, b: tf.Tensor, *, a_scale: float, a_zero_point: int, b_scale: float,
        b_zero_point: int, output_scale: float, output_zero_point: int,
        activation: Optional[str] = None) -> tf.Tensor:
    """ADD (int8, broadcasting) with add.cc's general rescaling: (q - zp) << 20, three
    multipliers from QuantizeMultiplierSmallerThanOneExp, double rounding. `a`, `b` on their grids."""
    s_a, s_b, s_out = np.float32(a_scale), np.float32(b_scale), np.float32(output_scale)
    twice_max = np.float64(np.float32(2) * max(s_a, s_b))                    # float, then double
    m_a, sh_a = quantize_multiplier(np.float64(s_a) / twice_max)
    m_b, sh_b = quantize_multiplier(np.float64(s_b) / twice_max)
    m_o, sh_o = quantize_multiplier(twice_max / np.float64(np.float32(1 << ADD_LEFT_SHIFT) * s_out))
    qa = _grid(a, s_a) * (1 << ADD_LEFT_SHIFT)                                # (q - zp) << 20
    qb = _grid(b, s_b) * (1 << ADD_LEFT_SHIFT)
    total = multiply_by_quantized_multiplier(qa, m_a, sh_a) + multiply_by_quantized_multiplier(qb, m_b, sh_b)
    q = multiply_by_quantized_multiplier(total, m_o, sh_o) + output_zero_point
    lo, hi = activation_bounds(activation, s_out, output_zero_point)
    return _to_float(tf.clip_by_value(q, lo, hi), s_out, output_zero_point)


def mul(a: tf.Tensor, b: tf.Tensor, *, a_scale: float, a_zero_point: int, b_scale: float,
        b_zero_point: int, output_scale: float, output_zero_point: int,
        activation: Optional[str] = None) -> tf.Tensor:
    """MUL (int8, broadcasting), reference_integer_ops::Mul / BroadcastMul6DSlow: the int32 product
    of (q - zp) times QuantizeMultiplier(s_a * s_b / s_out), that expression in float as in
    mul.cc's Prepare; MultiplyByQuantizedMultiplier, + zp_out, clamp. `a`, `b` on their grids."""
    s_a, s_b, s_out = np.float32(a_scale), np.float32(b_scale), np.float32(output_scale)
    del a_zero_point, b_zero_point           # on their grids: x / s is q - zp already
    multiplier, shift = quantize_multiplier(np.float64(s_a * s_b / s_out))
    product = _grid(a, s_a) * _grid(b, s_b)                                   # |.| <= 2^16
    q = multiply_by_quantized_multiplier(product, multiplier, shift) + output_zero_point
    lo, hi = activation_bounds(activation, s_out, output_zero_point)
    return _to_float(tf.clip_by_value(q, lo, hi), s_out, output_zero_point)


def squared_difference(a: tf.Tensor, b: tf.Tensor, *, a_scale: float, a_zero_point: int, b_scale: float,
                       b_zero_point: int, output_scale: float, output_zero_point: int) -> tf.Tensor:
    """SQUARED_DIFFERENCE (int8, broadcasting), squared_difference.cc: both inputs (q - zp) << 7
    rescaled onto 2 max(s_a, s_b) (the larger by exactly 1/2), the int32 difference squared, then
    scaled by (2 max)^2 / (2^14 s_out). Multipliers in double from the float32 scales (the
    factor 2 and 2^14 times s_out in float, as Prepare computes them). `a`, `b` on their grids."""
    s_a, s_b, s_out = np.float32(a_scale), np.float32(b_scale), np.float32(output_scale)
    shift = SQUARED_DIFFERENCE_LEFT_SHIFT
    twice_max = np.float64(np.float32(2) * max(s_a, s_b))
    m_a, sh_a = quantize_multiplier(np.float64(s_a) / twice_max)
    m_b, sh_b = quantize_multiplier(np.float64(s_b) / twice_max)
    m_o, sh_o = quantize_multiplier((twice_max * twice_max) / np.float64(np.float32(1 << (2 * shift)) * s_out))
    del a_zero_point, b_zero_point           # on their grids: x / s is q - zp already
    da = multiply_by_quantized_multiplier(_grid(a, s_a) * (1 << shift), m_a, sh_a)
    db = multiply_by_quantized_multiplier(_grid(b, s_b) * (1 << shift), m_b, sh_b)
    diff = da - db                                                            # |.| < 2^15
    q = multiply_by_quantized_multiplier(diff * diff, m_o, sh_o) + output_zero_point
    return _to_float(tf.clip_by_value(q, INT8_MIN, INT8_MAX), s_out, output_zero_point)


def _inv_sqrt_quantized_multiplier_exp(value: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """common.h GetInvSqrtQuantizedMultiplierExp(value, reverse_shift=-1) for int32 values >= 0
    (numpy in, numpy out): (multiplier, left shift) with multiplier * 2^(shift - 31) ~ 1 / sqrt(value).
    Values <= 1 give (INT32_MAX, 0), as the kernel does."""
    v = np.asarray(value, np.int64)
    small = v <= 1
    v = np.where(small, 2, v)
    shift = np.full(v.shape, 11, np.int64)
    while np.any(v >= 1 << 29):                                               # input /= 4
        big = v >= 1 << 29
        v, shift = np.where(big, v // 4, v), np.where(big, shift + 1, shift)
    clz = 32 - np.array([int(u).bit_length() for u in v.reshape(-1)], np.int64).reshape(v.shape)
    pairs = (clz - 1) // 2 - 1                                                # left_shift_bit_pairs
    shift = shift - pairs
    v = v << (2 * pairs)                                                      # in [2^27, 2^29)
    half_input = rounding_divide_by_pot(v >> 1, 1)                            # F3, SaturatingRoundingMultiplyByPOT<-1>
    half_three = (1 << 28) + (1 << 27)                                        # 1.5 in F3
    x = tf.fill(v.shape, tf.constant(1 << 28, tf.int64))                      # F3::One()
    for _ in range(5):                                                        # Newton-Raphson
        x3 = saturating_left_shift(saturating_rounding_doubling_high_mul(
            saturating_rounding_doubling_high_mul(x, x), x), 6)               # Rescale<3>(x * x * x)
        x = saturating_left_shift(wrap_int32(saturating_rounding_doubling_high_mul(half_three, x)
                                             - saturating_rounding_doubling_high_mul(half_input, x3)), 3)
    x = saturating_rounding_doubling_high_mul(x, 1518500250).numpy()         # * sqrt(2) / 2 (F0)
    x = np.where(shift < 0, ((x << np.maximum(-shift, 0)) + 2**31) % 2**32 - 2**31, x)   # <<= -shift, int32
    shift = -np.maximum(shift, 0)                                             # * reverse_shift
    return np.where(small, INT32_MAX, x), np.where(small, 0, shift)


def rsqrt_table(*, input_scale: float, input_zero_point: int, output_scale: float,
                output_zero_point: int) -> np.ndarray:
    """RSQRT (int8), RsqrtEvalQuantizedInt8, as its 256 outputs indexed by q + 128. Inputs below
    the zero point (negative reals) make the kernel fail; they are given 127 here, like q == zp."""
    s_in, s_out = np.float32(input_scale), np.float32(output_scale)
    multiplier, shift = quantize_multiplier(np.float64(1.0) / np.float64(np.sqrt(s_in) * s_out))
    value = np.arange(INT8_MIN, INT8_MAX + 1, dtype=np.int64) - input_zero_point
    with tf.init_scope():                    # a table of constants, also while a graph is traced
        inv, inv_shift = _inv_sqrt_quantized_multiplier_exp(np.maximum(value, 1))
        data = multiply_by_quantized_multiplier(tf.ones_like(value), inv, inv_shift + RSQRT_SHIFT)
        out = multiply_by_quantized_multiplier(data, multiplier, shift - RSQRT_SHIFT).numpy() + output_zero_point
    out = np.where(value <= 0, INT8_MAX, out)
    return np.clip(out, INT8_MIN, INT8_MAX).astype(np.int64)


def rsqrt(x: tf.Tensor, *, input_scale: float, input_zero_point: int, output_scale: float,
          output_zero_point: int) -> tf.Tensor:
    """RSQRT (int8) of `x` on its grid onto the output grid (`rsqrt_table`)."""
    params = dict(input_scale=float(input_scale), input_zero_point=int(input_zero_point),
                  output_scale=float(output_scale), output_zero_point=int(output_zero_point))
    return apply_lookup_table(x, rsqrt_table(**params), **params)


def logistic_table(x: np.ndarray) -> np.ndarray:
    """The float function LOGISTIC's int8 table holds: 1 / (1 + exp(-x)) in float32."""
    x = np.asarray(x, np.float32)
    with np.errstate(over="ignore"):
        return (np.float32(1.0) / (np.float32(1.0) + np.exp(-x))).astype(np.float32)


def logistic(x: tf.Tensor, *, input_scale: float, input_zero_point: int) -> tf.Tensor:
    """LOGISTIC (int8): the LUTPopulate table of `logistic_table` onto TFLite's fixed output grid
    (1/256, -128). `x` on its grid."""
    params = dict(input_scale=float(input_scale), input_zero_point=int(input_zero_point),
                  output_scale=LOGISTIC_OUTPUT_SCALE, output_zero_point=LOGISTIC_OUTPUT_ZERO_POINT)
    return apply_lookup_table(x, lookup_table(logistic_table, **params), **params)


def leaky_relu(x: tf.Tensor, alpha: float, *, input_scale: float, input_zero_point: int,
               output_scale: float, output_zero_point: int) -> tf.Tensor:
    """LEAKY_RELU (int8), reference QuantizeLeakyRelu: each side of zero requantized with its own
    multiplier. The multipliers are float expressions in the kernel's Prepare (float scales and
    alpha), widened to double only for QuantizeMultiplier. `x` on its grid."""
    s_in, s_out, a = np.float32(input_scale), np.float32(output_scale), np.float32(alpha)
    m_id, sh_id = quantize_multiplier(np.float64(s_in / s_out))
    m_a, sh_a = quantize_multiplier(np.float64((s_in * a) / s_out))
    del input_zero_point                     # x is on its grid: x / s_in is q - zp_in already
    q = _grid(x, s_in)
    identity = multiply_by_quantized_multiplier(q, m_id, sh_id)
    scaled = multiply_by_quantized_multiplier(q, m_a, sh_a)
    out = tf.where(q >= 0, identity, scaled) + output_zero_point
    return _to_float(tf.clip_by_value(out, INT8_MIN, INT8_MAX), s_out, output_zero_point)


# ---- HARD_SWISH: int16 fixed point (reference_ops::HardSwish) ------------------------------------
HARD_SWISH_HIRES_SHIFT = 7                 # input (q - zp) << 7 on the "hires" input scale
HARD_SWISH_RELUISH_SCALE = 3.0 / 32768.0   # the scale on which 3.0 is 2^15
INT16_MIN, INT16_MAX = -(2**15), 2**15 - 1


def _int16_multiplier(real: np.float32) -> tuple[int, int]:
    """QuantizeMultiplier of a float expression (widened to double), then
    DownScaleInt32ToInt16Multiplier: (q + 2^15) >> 16, 32767 for q >= INT32_MAX - 2^15."""
    q, exponent = (int(v) for v in quantize_multiplier(np.float64(real)))
    q16 = INT16_MAX if q >= INT32_MAX - (1 << 15) else (q + (1 << 15)) >> 16
    return q16, exponent


def _truncdiv(n: np.ndarray, d: int) -> np.ndarray:
    """C++ integer division: n / d rounded toward zero (d > 0)."""
    return np.sign(n) * (np.abs(n) // d)


def _srdhm16(a: np.ndarray, b) -> np.ndarray:
    """gemmlowp SaturatingRoundingDoublingHighMul on int16: (a b + nudge) / 2^15 truncated,
    nudge = 2^14 if a b >= 0 else 1 - 2^14; a == b == INT16_MIN saturates."""
    ab = a * b
    nudge = np.where(ab >= 0, 1 << 14, 1 - (1 << 14))
    return np.where((a == INT16_MIN) & (b == INT16_MIN), INT16_MAX, _truncdiv(ab + nudge, 1 << 15))


def _sdhm16(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """SaturatingDoublingHighMul on int16 (hard_swish.h): a b / 2^15, truncated toward zero."""
    return np.where((a == INT16_MIN) & (b == INT16_MIN), INT16_MAX, _truncdiv(a * b, 1 << 15))


def _rounding_divide_by_pot16(x: np.ndarray, exponent: int) -> np.ndarray:
    """gemmlowp RoundingDivideByPOT on int16 values: x / 2^exponent, ties away from zero."""
    mask = np.array((1 << exponent) - 1, np.int64).astype(np.int16).astype(np.int64)   # an int16 mask
    remainder = x & mask
    threshold = (mask >> 1) + (x < 0)
    return (x >> exponent) + (remainder > threshold)


def _saturating_left_shift16(x: np.ndarray, amount: int) -> np.ndarray:
    return np.clip(x * (1 << amount), INT16_MIN, INT16_MAX)


def hard_swish_table(*, input_scale: float, input_zero_point: int, output_scale: float,
                     output_zero_point: int) -> np.ndarray:
    """The int8 outputs of reference_ops::HardSwish for the 256 int8 inputs (indexed by q + 128).

    HardSwishPrepare (activations.cc): hires scale = float(1/128) * s_in; multipliers
    hires / s_out and hires / (3 / 2^15), float expressions, QuantizeMultiplier then
    DownScaleInt32ToInt16Multiplier. The kernel: v = (q - zp_in) << 7; the output-scale value
    SRDHM16(v, m_out); the "reluish" gate v rescaled so that 3.0 is 2^15 (saturating shifts,
    SRDHM16, RoundingDivideByPOT), moved to [0, 2^15) by (r + 2^15) >> 1; their product by
    SaturatingDoublingHighMul (truncating), RoundingDivideByPOT(-exponent_out), + zp_out, clamp."""
    s_in, s_out = np.float32(input_scale), np.float32(output_scale)
    hires = np.float32(1.0 / 128.0) * s_in
    m_out, e_out = _int16_multiplier(hires / s_out)
    m_relu, e_relu = _int16_multiplier(hires / np.float32(HARD_SWISH_RELUISH_SCALE))
    if e_out > 0:
        raise ValueError(f"HARD_SWISH needs input_scale / 128 <= output_scale (TFLite's Prepare refuses "
                         f"it), got {float(s_in)} and {float(s_out)}.")
    v = (np.arange(INT8_MIN, INT8_MAX + 1, dtype=np.int64) - input_zero_point) << HARD_SWISH_HIRES_SHIFT
    v = np.clip(v, INT16_MIN, INT16_MAX)                 # (int16)((q - zp) * 128): |q - zp| <= 255
    on_output_scale = _srdhm16(v, m_out)
    reluish = v
    if e_relu > 0:
        reluish = _saturating_left_shift16(reluish, e_relu - 1)
    reluish = _srdhm16(reluish, m_relu)
    if e_relu > 0:
        reluish = _saturating_left_shift16(reluish, 1)
    if e_relu < 0:
        reluish = _rounding_divide_by_pot16(reluish, -e_relu)
    reluish = (reluish + (1 << 15)) >> 1
    out = _rounding_divide_by_pot16(_sdhm16(reluish, on_output_scale), -e_out) + output_zero_point
    return np.clip(out, INT8_MIN, INT8_MAX).astype(np.int64)


def hard_swish(x: tf.Tensor, *, input_scale: float, input_zero_point: int, output_scale: float,
               output_zero_point: int) -> tf.Tensor:
    """HARD_SWISH (int8), reference_ops::HardSwish's int16 fixed point (`hard_swish_table`): an
    elementwise function of the int8 input, so its 256 outputs are computed once and gathered.
    `x` on its grid."""
    params = dict(input_scale=float(input_scale), input_zero_point=int(input_zero_point),
                  output_scale=float(output_scale), output_zero_point=int(output_zero_point))
    return apply_lookup_table(x, hard_swish_table(**params), **params)


def lookup_table(fn: Callable, *, input_scale: float, input_zero_point: int, output_scale: float,
                 output_zero_point: int) -> np.ndarray:
    """LUTPopulate: the int8 table of `fn` (numpy float32 -> float32), indexed by q + 128."""
    q = np.arange(INT8_MIN, INT8_MAX + 1)
    x = np.float32(input_scale) * (q - input_zero_point).astype(np.float32)
    y = np.asarray(fn(x), np.float32)
    with np.errstate(invalid="ignore", over="ignore"):
        r = round_half_away(y * (np.float32(1.0) / np.float32(output_scale))) + output_zero_point
    return np.clip(np.nan_to_num(r, nan=INT8_MIN, posinf=INT8_MAX, neginf=INT8_MIN), INT8_MIN, INT8_MAX).astype(np.int64)


def apply_lookup_table(x: tf.Tensor, table: np.ndarray, *, input_scale: float, input_zero_point: int,
                       output_scale: float, output_zero_point: int) -> tf.Tensor:
    """An int8 lookup-table op (EXP, GELU, ...): x on its grid -> table[q] on the output grid."""
    q = _grid(x, input_scale, input_zero_point)
    return _to_float(tf.gather(tf.constant(table), q - INT8_MIN), output_scale, output_zero_point)


def mean(x: tf.Tensor, axis: Sequence[int], *, input_scale: float, input_zero_point: int,
         output_scale: float, output_zero_point: int, keepdims: bool = False) -> tf.Tensor:
    """MEAN over `axis` (e.g. [1, 2]: global average pooling), reference QuantizedMeanOrSum.

    The reduced dimensions must be static. `x` on its grid."""
    s_in, s_out = np.float32(input_scale), np.float32(output_scale)
    rank = x.shape.rank
    axes = sorted({int(a) % rank for a in axis})
    dims = [x.shape[a] for a in axes]
    if any(d is None for d in dims):
        raise ValueError(f"exact MEAN needs static sizes on the reduced axes, got shape {x.shape}.")
    count = int(np.prod(dims))
    multiplier, shift = (int(v) for v in quantize_multiplier(np.float64(s_in) / np.float64(s_out)))
    extra = min(count.bit_length() - 1, 32, 31 + shift)                       # fold 1 / count in
    multiplier = (multiplier << extra) // count
    shift -= extra
    total = tf.reduce_sum(_grid(x, s_in), axis=axes, keepdims=keepdims)       # sum of (q - zp)
    q = multiply_by_quantized_multiplier(total, multiplier, shift) + output_zero_point
    return _to_float(tf.clip_by_value(q, INT8_MIN, INT8_MAX), s_out, output_zero_point)


def avg_pool(x: tf.Tensor, ksize: tuple[int, int], strides: tuple[int, int], padding: str, *,
             scale: float, zero_point: int) -> tf.Tensor:
    """AVERAGE_POOL_2D (NHWC; same scale and zero point in and out): the sum of the raw int8
    values of the window's valid elements over their count, rounded half away from zero."""
    s = np.float32(scale)
    q = tf.cast(_grid(x, s, zero_point), tf.float64)                          # raw int8 values
    kh, kw = ksize
    window = tf.ones([kh, kw, x.shape[-1], 1], tf.float64)
    pool_strides = [1, *strides, 1]
    total = tf.nn.depthwise_conv2d(q, window, pool_strides, padding)          # exact integers
    count = tf.nn.depthwise_conv2d(tf.ones_like(q[..., :1]), tf.ones([kh, kw, 1, 1], tf.float64),
                                   pool_strides, padding)
    total, count = tf.cast(tf.round(total), tf.int64), tf.cast(tf.round(count), tf.int64)
    half = tf.math.floordiv(count, 2)
    # C++ (acc +/- count / 2) / count truncates toward zero.
    avg = tf.where(total > 0, tf.truncatediv(total + half, count), tf.truncatediv(total - half, count))
    return _to_float(tf.clip_by_value(avg, INT8_MIN, INT8_MAX), s, zero_point)


def quantize_input(x: tf.Tensor, *, scale: float, zero_point: int) -> tf.Tensor:
    """QUANTIZE (float to int8, reference AffineQuantize): round_half_away(float32 x / float32
    scale) + zero_point, clamped."""
    v = tf.cast(x, tf.float32) / np.float32(scale)
    v = tf.clip_by_value(round_half_away(v), -(2.0**30), 2.0**30)     # clamps below anyway
    q = tf.cast(v, tf.int64) + zero_point
    return _to_float(tf.clip_by_value(q, INT8_MIN, INT8_MAX), np.float32(scale), zero_point)


def requantize(x: tf.Tensor, *, input_scale: float, input_zero_point: int, output_scale: float,
               output_zero_point: int) -> tf.Tensor:
    """QUANTIZE from int8 to int8 (reference_ops::Requantize): `x` on its grid onto another."""
    s_in, s_out = np.float32(input_scale), np.float32(output_scale)
    del input_zero_point                     # x is on its grid: x / s_in is q - zp_in already
    multiplier, shift = quantize_multiplier(np.float64(s_in) / np.float64(s_out))
    q = multiply_by_quantized_multiplier(_grid(x, s_in), multiplier, shift) + output_zero_point
    return _to_float(tf.clip_by_value(q, INT8_MIN, INT8_MAX), s_out, output_zero_point)


# ---- SOFTMAX: gemmlowp fixed point --------------------------------------------------------------
_SOFTMAX_INTEGER_BITS = 5          # input differences in Q5.26
_SOFTMAX_ACCUMULATION_BITS = 12    # sum of exps in Q12.19


def _exp_on_interval(a: tf.Tensor) -> tf.Tensor:
    """gemmlowp exp_on_interval_between_negative_one_quarter_and_0_excl on Q0.31 raws."""
    constant_term, one_third = 1895147668, 715827883         # exp(-1/8), 1/3 in Q0.31
    x = a + (1 << 28)                                          # x = a + 1/8
    x2 = saturating_rounding_doubling_high_mul(x, x)
    x3 = saturating_rounding_doubling_high_mul(x2, x)
    x4 = saturating_rounding_doubling_high_mul(x2, x2)
    x4_over_4 = rounding_divide_by_pot(x4, 2)
    poly = rounding_divide_by_pot(saturating_rounding_doubling_high_mul(x4_over_4 + x3, one_third) + x2, 1)
    return constant_term + saturating_rounding_doubling_high_mul(constant_term, x + poly)


def _exp_on_negative_values(a: tf.Tensor) -> tf.Tensor:
    """gemmlowp exp_on_negative_values: Q5.26 raw a <= 0 to Q0.31 raw exp(a)."""
    integer_bits = _SOFTMAX_INTEGER_BITS
    fractional_bits = 31 - integer_bits
    one_quarter = 1 << (fractional_bits - 2)
    a_mod = tf.bitwise.bitwise_and(a, tf.constant(one_quarter - 1, tf.int64)) - one_quarter
    result = _exp_on_interval(saturating_left_shift(a_mod, integer_bits))    # Rescale<0>
    remainder = a_mod - a
    for exponent, multiplier in ((-2, 1672461947), (-1, 1302514674), (0, 790015084), (1, 290630308),
                                 (2, 39332535), (3, 720401), (4, 242)):      # exp(-2^exponent)
        if integer_bits > exponent:
            bit = tf.constant(1 << (fractional_bits + exponent), tf.int64)
            hit = tf.not_equal(tf.bitwise.bitwise_and(remainder, bit), 0)
            result = tf.where(hit, saturating_rounding_doubling_high_mul(result, multiplier), result)
    return tf.where(tf.equal(a, 0), tf.constant(INT32_MAX, tf.int64), result)


def _one_over_one_plus_x(a: tf.Tensor) -> tf.Tensor:
    """gemmlowp one_over_one_plus_x_for_x_in_0_1 (Newton-Raphson), Q0.31 raws, a >= 0."""
    half_denominator = tf.bitwise.right_shift(a + INT32_MAX + 1, tf.constant(1, tf.int64))  # RoundingHalfSum(a, 1)
    x = 1515870810 + saturating_rounding_doubling_high_mul(half_denominator, -1010580540)   # 48/17 - 32/17 d (Q2.29)
    for _ in range(3):
        one_minus = (1 << 29) - saturating_rounding_doubling_high_mul(half_denominator, x)
        x = x + saturating_left_shift(saturating_rounding_doubling_high_mul(x, one_minus), 2)
    return saturating_left_shift(x, 1)                         # Rescale<0>(ExactMulByPot<-1>(x))


def _bit_length(v: tf.Tensor) -> tf.Tensor:
    """Number of significant bits of non-negative int64 values below 2^32."""
    powers = tf.constant([1 << i for i in range(32)], tf.int64)
    return tf.reduce_sum(tf.cast(v[..., None] >= powers, tf.int64), axis=-1)


# gemmlowp's RoundingDivideByPOT asserts its exponent <= 31, and LiteRT's reference int8 SOFTMAX
# divides by 2^(bits_over_unit + 23): a sum of exps (Q12.19) of 2^28 raw, i.e. 512.0, or more
# aborts the process (SIGABRT). Only rows of >= 512 classes whose logits are nearly all equal get there.
REFERENCE_SOFTMAX_ABORT_SUM = 1 << 28


def _softmax_exps(q: tf.Tensor, input_scale: float, beta: float):
    """The reference kernel's per-class exps (Q0.31 raws), the mask of classes it counts, and the
    per-row sum of exps (Q12.19 raw), for raw int8 inputs (int64 tensor) over the last axis."""
    # PreprocessSoftmaxScaling: beta * scale * 2^26 in double, capped, QuantizeMultiplierGreaterThanOne.
    beta_scale = np.float64(np.float32(beta)) * np.float64(np.float32(input_scale))
    real = min(beta_scale * float(1 << (31 - _SOFTMAX_INTEGER_BITS)), float(INT32_MAX))
    multiplier, left_shift = (int(v) for v in quantize_multiplier(real))
    # CalculateInputRadius(5, left_shift, 15) in double, floored.
    diff_min = -int(np.floor(((1 << _SOFTMAX_INTEGER_BITS) - 1) * float(1 << (31 - _SOFTMAX_INTEGER_BITS))
                             / float(1 << left_shift)))
    q = _i64(q)
    diff = q - tf.reduce_max(q, axis=-1, keepdims=True)
    used = diff >= diff_min
    diff = tf.where(used, diff, tf.zeros_like(diff))              # keeps the products in range
    scaled = saturating_rounding_doubling_high_mul(diff * (1 << left_shift), multiplier)   # Q5.26
    exps = _exp_on_negative_values(scaled)                                                 # Q0.31
    in_accumulator = rounding_divide_by_pot(exps, _SOFTMAX_ACCUMULATION_BITS)              # Rescale<12>
    total = tf.reduce_sum(tf.where(used, in_accumulator, tf.zeros_like(in_accumulator)), axis=-1, keepdims=True)
    return exps, used, total


def reference_softmax_aborts(q, input_scale: float, beta: float = 1.0) -> np.ndarray:
    """Per row of raw int8 SOFTMAX inputs (last axis = classes): True where LiteRT's reference
    kernel would abort the process (its sum of exps reaches 512; see REFERENCE_SOFTMAX_ABORT_SUM).

        >>> reference_softmax_aborts(np.zeros((1, 1000), np.int8), 0.1)     # array([ True])
    """
    _, _, total = _softmax_exps(tf.constant(np.asarray(q), tf.int64), input_scale, beta)
    return total.numpy()[..., 0] >= REFERENCE_SOFTMAX_ABORT_SUM


def softmax_int8(q: tf.Tensor, input_scale: float, beta: float = 1.0) -> tf.Tensor:
    """The reference int8 SOFTMAX over the last axis: raw int8 inputs (int64 tensor) to raw int8
    outputs on (1/256, -128), as int64."""
    exps, used, total = _softmax_exps(q, input_scale, beta)
    # GetReciprocal: headroom = CountLeadingZeros(uint32 total).
    headroom = 32 - _bit_length(total)
    bits_over_unit = _SOFTMAX_ACCUMULATION_BITS - headroom
    shifted_minus_one = tf.bitwise.left_shift(total, headroom) - (1 << 31)                 # in [0, 2^31)
    reciprocal = _one_over_one_plus_x(shifted_minus_one)
    exponent = bits_over_unit + 31 - 8
    out = rounding_divide_by_pot(saturating_rounding_doubling_high_mul(reciprocal, exps), exponent) + INT8_MIN
    return tf.where(used, tf.clip_by_value(out, INT8_MIN, INT8_MAX), tf.constant(INT8_MIN, tf.int64))


def softmax(logits: tf.Tensor, *, input_scale: float, input_zero_point: int, beta: float = 1.0) -> tf.Tensor:
    """SOFTMAX of int8 logits (on their grid) onto TFLite's fixed grid (1/256, -128), as float32."""
    q = _grid(logits, np.float32(input_scale), input_zero_point)
    out = softmax_int8(q, input_scale, beta)
    return _to_float(out, np.float32(SOFTMAX_OUTPUT_SCALE), SOFTMAX_OUTPUT_ZERO_POINT)
