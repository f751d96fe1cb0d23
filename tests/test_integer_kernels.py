"""The exact simulation against TFLite's reference kernels, op by op, on random cases.

Each case is a small FakeQuant graph exported with `tfquant.to_tflite` and run with
`OpResolverType.BUILTIN_REF`; its "exact"-mode twin must predict every int8 the interpreter writes.
Power-of-two scales make every requantization land on a tie, which pins down each rounding rule.
"""
from fractions import Fraction

import numpy as np
import pytest
import tensorflow as tf

import tfquant
from tfquant.core import (
    round_half_away,
    MinMaxRange,
    QuantSpec,
    fake_quant,
    kernel_range,
    quant_params,
    quantized_add,
    quantized_avg_pool,
    quantized_concat,


    quantized_hard_swish,
    quantized_linear,
    quantized_input,
    quantized_leaky_relu,
    quantized_logistic,
    quantized_mean,
    quantized_mul,
    quantized_rsqrt,
    quantized_softmax,
    quantized_squared_difference,
    simulation_mode,
)
from tfquant.core import integer_kernels
from tfquant.core.integer_kernels import quantize_multiplier
from tfquant.errors import ExportError

ACT = QuantSpec.activation()


def test_quantize_multiplier_known_values():
    q, shift = quantize_multiplier(np.array([0.5, 1.0, 0.75, 1e-12, 0.0, 3.0, 2.0**-31, 0.1]))
    np.testing.assert_array_equal(q, [2**30, 2**30, 1610612736, 0, 0, 1610612736, 2**30, 1717986918])
    np.testing.assert_array_equal(shift, [0, 1, 0, 0, 0, 2, -30, -3])
    # A mantissa that rounds up to 2^31 is halved and the shift bumped.
    q, shift = quantize_multiplier(np.array([1.0 - 2.0**-40]))
    assert (q[0], shift[0]) == (2**30, 1)
    assert tuple(int(v) for v in quantize_multiplier(0.75)) == (1610612736, 0)   # scalars too


def _srdhm_ref(a: int, b: int) -> int:
    """SaturatingRoundingDoublingHighMul as a rational: a b / 2^31 rounded half up."""
    if a == b == -(2**31):
        return 2**31 - 1
    return int(np.floor(Fraction(a * b, 2**31) + Fraction(1, 2)))


def _rdbpot_ref(x: int, e: int) -> int:
    """RoundingDivideByPOT as a rational: x / 2^e rounded half away from zero."""
    v = Fraction(x, 2**e)
    return int(np.sign(v)) * int(np.floor(abs(v) + Fraction(1, 2)))


def _mbqm_ref(x: int, m: int, shift: int) -> int:
    shifted = ((x << max(shift, 0)) + 2**31) % 2**32 - 2**31       # int32 wrap, as the kernel
    return _rdbpot_ref(_srdhm_ref(shifted, m), max(-shift, 0))


def test_fixed_point_primitives_match_rational_arithmetic():
    rng = np.random.default_rng(0)
    x = np.concatenate([rng.integers(-2**31, 2**31, 300), rng.integers(-5000, 5000, 300),
                        [0, 1, -1, 2**31 - 1, -(2**31), 2**20, -(2**20)]])
    ties = (rng.integers(-64, 64, 100) * 2 + 1) << 10                  # exact halves after >> 11
    x = np.concatenate([x, ties])
    m = rng.integers(2**30, 2**31, x.size)
    m[-100:] = 2**30
    shift = rng.integers(-20, 3, x.size)
    shift[-100:] = -10
    got = integer_kernels.multiply_by_quantized_multiplier(tf.constant(x, tf.int64), m, shift).numpy()
    want = [_mbqm_ref(int(a), int(b), int(c)) for a, b, c in zip(x, m, shift)]
    np.testing.assert_array_equal(got, want)
    # Saturation, and ties (x 2^30 / 2^31 = x / 2 for odd x): half up, i.e. toward zero if negative.
    a = np.array([-(2**31), -(2**31), 2**31 - 1, -3, 3, -5, 5, -1, 12345])
    b = np.array([-(2**31), 2**30, 2**31 - 1, 2**30, 2**30, 2**30, 2**30, 2**30, -67890])
    np.testing.assert_array_equal(integer_kernels.saturating_rounding_doubling_high_mul(a, b).numpy(),
                                  [_srdhm_ref(int(i), int(j)) for i, j in zip(a, b)])
    np.testing.assert_array_equal(round_half_away(
        tf.constant([0.49999999999999994, 0.5, -0.5, 1.5, -2.5, 2.4999999], tf.float64)).numpy(),
        [0.0, 1.0, -1.0, 2.0, -3.0, 2.0])
    np.testing.assert_array_equal(round_half_away(np.array([0.49999999999999994, 0.5, -0.5, 1.5, -2.5, 2.4999999])),
                                  [0.0, 1.0, -1.0, 2.0, -3.0, 2.0])
    assert round_half_away(np.float32(0.49999997)) == 0.0        # floor(|x| + 0.5) gives 1 in float32


def _range(x):
    est = MinMaxRange(ACT)
    est.update(x)
    return tuple(float(v) for v in est.range())


def _compare(build, *inputs: np.ndarray) -> float:
    """Fraction of int8 outputs where the exact simulation equals the reference interpreter."""
    sig = [tf.TensorSpec([None, *x.shape[1:]], tf.float32) for x in inputs]
    fake = tf.function(lambda *t: build(*t), input_signature=sig)

    def exact_fn(*t):
        with simulation_mode("exact"):
            return build(*t)

    exact = tf.function(exact_fn, input_signature=sig)
    result = tfquant.verify(tfquant.to_tflite(fake), exact, list(inputs), kernels=("reference",),
                            intermediate_samples=0)
    assert result.within_one_fraction == 1.0
    return result.exact_fraction


def _case(seed, shape=(8, 9, 9, 6)):
    rng = np.random.default_rng(seed)
    x = rng.normal(rng.uniform(-1, 1), rng.uniform(0.2, 3), shape).astype(np.float32)
    return rng, x


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("activation", [None, "relu", "relu6"])
def test_conv_and_depthwise_are_exact(seed, activation):
    rng, x = _case(seed)
    in_range = _range(x)
    kernel = (rng.standard_normal((3, 3, 6, 5)) * rng.uniform(0.01, 1, 5)).astype(np.float32)
    dw = (rng.standard_normal((3, 3, 6, 1)) * rng.uniform(0.01, 2, (6, 1))).astype(np.float32)
    bias, dw_bias = rng.normal(0, 1, 5).astype(np.float32), rng.normal(0, 1, 6).astype(np.float32)
    stride = 1 + seed % 2

    def conv(t, w):
        return tf.nn.conv2d(t, w, stride, "SAME")

    def depthwise(t, w):
        return tf.nn.depthwise_conv2d(t, w, [1, stride, stride, 1], "SAME")

    float_out = tf.nn.relu6(conv(x, kernel) + bias) if activation == "relu6" else conv(x, kernel) + bias
    out_range = _range(float_out.numpy() * rng.uniform(0.6, 1.0))
    dw_range = _range((depthwise(x, dw) + dw_bias).numpy())

    def build(t):
        t = fake_quant(t, *in_range, ACT)
        a = quantized_linear(conv, t, kernel, bias, input_range=in_range, output_range=out_range,
                             activation=activation)
        b = quantized_linear(depthwise, t, dw, dw_bias, input_range=in_range, output_range=dw_range,
                             activation=activation, depthwise=True)
        return a, b

    assert _compare(build, x) == 1.0


@pytest.mark.parametrize("seed", range(4))
def test_fully_connected_is_exact(seed):
    rng = np.random.default_rng(seed)
    x = rng.normal(0, 2, (64, 20)).astype(np.float32)
    w = rng.normal(0, 0.3, (20, 7)).astype(np.float32)
    b = rng.normal(0, 0.5, 7).astype(np.float32)
    in_range, out_range = _range(x), _range(x @ w + b)

    def build(t):
        t = fake_quant(t, *in_range, ACT)
        return quantized_linear(tf.matmul, t, w, b, input_range=in_range, output_range=out_range,
                                kernel_spec=QuantSpec.weight(per_channel=False), fully_connected=True)

    assert _compare(build, x) == 1.0


@pytest.mark.parametrize("seed", range(4))
def test_add_mean_and_avg_pool_are_exact(seed):
    rng, x = _case(seed)
    y = (x * rng.uniform(0.2, 3) + rng.uniform(-1, 1)).astype(np.float32)
    rx, ry = _range(x), _range(y)
    r_sum = _range(x + y)
    r_mean = _range(np.mean(x + y, axis=(1, 2)) * rng.uniform(0.7, 1.3))
    padding = "SAME" if seed % 2 else "VALID"

    def build(t, u):
        a = fake_quant(t, *rx, ACT)
        b = fake_quant(u, *ry, ACT)
        s = quantized_add(a, b, a_range=rx, b_range=ry, output_range=r_sum)
        m = quantized_mean(s, [1, 2], input_range=r_sum, output_range=r_mean)
        p = quantized_avg_pool(s, (3, 3), (2, 2), padding, input_range=r_sum)
        return m, p

    assert _compare(build, x, y) == 1.0


@pytest.mark.parametrize("seed", range(3))
def test_concat_of_inputs_on_other_grids_is_exact(seed):
    """CONCATENATION of two inputs on grids of their own, one also read by a MEAN (so it cannot
    share the concat's grid): the converter requantizes each (QUANTIZE int8 to int8)."""
    rng, x = _case(seed)
    y = (x * rng.uniform(0.2, 3) + rng.uniform(-1, 1)).astype(np.float32)
    rx, ry = _range(x), _range(y)
    r_cat = _range(np.concatenate([x, y]) * rng.uniform(0.6, 1.4))
    r_mean = _range(np.mean(x, axis=(1, 2)))

    def build(t, u):
        a = fake_quant(t, *rx, ACT)
        b = fake_quant(u, *ry, ACT)
        c = quantized_concat([a, b], -1, input_ranges=[rx, ry], output_range=r_cat)
        return c, quantized_mean(a, [1, 2], input_range=rx, output_range=r_mean)

    assert _compare(build, x, y) == 1.0


@pytest.mark.parametrize("logit_range", [(-3.0, 5.0), (-1.0, 0.5), (-40.0, 30.0), (-8.0, 0.0)])
def test_input_quantize_and_softmax_are_exact(logit_range):
    x = np.random.default_rng(0).uniform(logit_range[0] * 1.2, logit_range[1] * 1.2, (256, 10)).astype(np.float32)

    def build(t):
        t = quantized_input(t, input_range=logit_range)
        return quantized_softmax(t, input_range=logit_range)

    assert _compare(build, x) == 1.0


# ---- power-of-two scales: every rounding is a tie -----------------------------------------------
IN_RANGE = (-2.0, 191 / 32)            # scale 2^-5, zero point -64
OUT_RANGE = (-0.25, 191 / 256)         # scale 2^-8, zero point -64


def _grid_values(rng, shape, lo=-40, hi=40, scale=1 / 32):
    return (rng.integers(lo, hi + 1, shape) * scale).astype(np.float32)


@pytest.mark.parametrize("activation", [None, "relu6"])
def test_ties_in_conv_depthwise_and_fully_connected(activation):
    rng = np.random.default_rng(7)
    x = _grid_values(rng, (16, 6, 6, 4))
    flat = _grid_values(rng, (16, 12))
    pc = np.array([64.0, 128.0, 32.0, 256.0, 64.0])                       # per-channel 2^-k
    kernel = (rng.integers(-3, 4, (3, 3, 4, 5)) / pc).astype(np.float32)
    conv_range = (-127 / pc, 127 / pc)
    dw_pc = np.array([64.0, 128.0, 32.0, 64.0])
    dw = (rng.integers(-4, 5, (3, 3, 4, 1)) / dw_pc[:, None]).astype(np.float32)
    dw_range = (-127 / dw_pc, 127 / dw_pc)
    w = (rng.integers(-3, 4, (12, 6)) / 64).astype(np.float32)
    bias = (rng.integers(-300, 300, 5) * 2.0**-11).astype(np.float32)   # on the bias grid

    def build(t, u):
        t = fake_quant(t, *IN_RANGE, ACT)
        u = fake_quant(u, *IN_RANGE, ACT)
        a = quantized_linear(lambda v, k: tf.nn.conv2d(v, k, 1, "SAME"), t, kernel, bias, input_range=IN_RANGE,
                             output_range=OUT_RANGE, activation=activation, kernel_range_=conv_range)
        b = quantized_linear(lambda v, k: tf.nn.depthwise_conv2d(v, k, [1, 1, 1, 1], "VALID"), t, dw, None,
                             input_range=IN_RANGE, output_range=OUT_RANGE, activation=activation,
                             depthwise=True, kernel_range_=dw_range)
        c = quantized_linear(tf.matmul, u, w, None, input_range=IN_RANGE, output_range=OUT_RANGE,
                             kernel_spec=QuantSpec.weight(per_channel=False), fully_connected=True,
                             kernel_range_=(-127 / 64, 127 / 64), activation=activation)
        return a, b, c

    assert _compare(build, x, flat) == 1.0


def test_ties_in_add_mean_and_avg_pool():
    rng = np.random.default_rng(8)
    x = _grid_values(rng, (16, 8, 8, 3))
    y = _grid_values(rng, (16, 8, 8, 3), scale=1 / 64)
    y_range = (-1.0, 191 / 64)                                           # scale 2^-6
    sum_range = (-4.0, 191 / 16)                                         # scale 2^-4

    def build(t, u):
        a = fake_quant(t, *IN_RANGE, ACT)
        b = fake_quant(u, *y_range, ACT)
        s = quantized_add(a, b, a_range=IN_RANGE, b_range=y_range, output_range=sum_range)
        m = quantized_mean(a, [1, 2], input_range=IN_RANGE, output_range=(-1.0, 191 / 64))
        p = quantized_avg_pool(a, (2, 2), (2, 2), "VALID", input_range=IN_RANGE)
        q = quantized_avg_pool(b, (3, 3), (2, 2), "SAME", input_range=y_range)
        return s, m, p, q

    assert _compare(build, x, y) == 1.0


def test_multipliers_above_one():
    """Effective multipliers > 1 (a positive shift: the left shift before the high multiply)."""
    rng = np.random.default_rng(9)
    x = (rng.integers(-5, 6, (32, 4, 4, 2)) * (2 / 255)).astype(np.float32)
    kernel = rng.uniform(-1, 1, (1, 1, 2, 3)).astype(np.float32)
    in_range = (-1.0, 1.0)

    def build(t):
        t = fake_quant(t, *in_range, ACT)
        y = quantized_linear(lambda v, k: tf.nn.conv2d(v, k, 1, "SAME"), t, kernel, None, input_range=in_range,
                             output_range=(-0.006, 0.005))
        m = quantized_mean(t, [1, 2], input_range=in_range, output_range=(-0.001, 0.0012))
        return y, m

    assert _compare(build, x) == 1.0


def test_per_tensor_conv_and_saturating_softmax():
    rng, x = _case(11, (64, 6, 6, 3))
    in_range = _range(x)
    kernel = rng.normal(0, 0.3, (3, 3, 3, 4)).astype(np.float32)
    out_range = _range(tf.nn.conv2d(x, kernel, 1, "SAME").numpy())
    big = (-6000.0, 4000.0)            # beta * scale * 2^26 above 2^31 - 1: the capped multiplier

    def build(t, u):
        t = fake_quant(t, *in_range, ACT)
        y = quantized_linear(lambda v, k: tf.nn.conv2d(v, k, 1, "SAME"), t, kernel, None, input_range=in_range,
                             output_range=out_range, kernel_spec=QuantSpec.weight(per_channel=False))
        return y, quantized_softmax(quantized_input(u, input_range=big), input_range=big)

    logits = rng.uniform(-6000, 4000, (64, 10)).astype(np.float32)
    logits[:, 3] = logits[:, 7] + rng.integers(0, 3, 64) * 40.0            # near-ties of the max
    assert _compare(build, x, logits) == 1.0


# ---- the mode contract -------------------------------------------------------------------------
def _softmax_graph(t):
    t = quantized_input(t, input_range=(-3.0, 5.0))
    return quantized_softmax(t, input_range=(-3.0, 5.0))


def test_exact_mode_is_plain_tf_ops():
    sig = [tf.TensorSpec([None, 10], tf.float32)]

    def exact_fn(t):
        with simulation_mode("exact"):
            return _softmax_graph(t)

    graph = tf.function(exact_fn, input_signature=sig).get_concrete_function().graph.as_graph_def()
    op_types = {n.op for n in graph.node}
    assert not op_types & {"PyFunc", "EagerPyFunc", "PyFuncStateless"}, op_types
    assert integer_kernels.has_emulation_ops(graph)
    fake = tf.function(_softmax_graph, input_signature=sig).get_concrete_function().graph.as_graph_def()
    assert not integer_kernels.has_emulation_ops(fake)


def test_export_never_sees_the_emulation():
    sig = [tf.TensorSpec([None, 10], tf.float32)]
    reference = tfquant.inspect(tfquant.to_tflite(tf.function(_softmax_graph, input_signature=sig)))
    with simulation_mode("exact"):      # to_tflite traces in "fake_quant" mode whatever the caller's
        exported = tfquant.inspect(tfquant.to_tflite(tf.function(_softmax_graph, input_signature=sig)))
    assert [op.op for op in exported.ops] == [op.op for op in reference.ops]
    assert exported.float_ops == []
    # A tf.function already traced in exact mode keeps that trace: refused, not converted.
    stale = tf.function(_softmax_graph, input_signature=sig)
    with simulation_mode("exact"):
        stale.get_concrete_function()
    with pytest.raises(ExportError, match="exact"):
        tfquant.to_tflite(stale)


@pytest.mark.parametrize("alpha", [0.01, 0.2, 0.3])
def test_leaky_relu_is_exact(alpha):
    rng, x = _case(int(alpha * 100))
    in_range = _range(x)
    out_range = _range(tf.nn.leaky_relu(x, alpha).numpy() * rng.uniform(0.7, 1.0))

    def build(t):
        t = fake_quant(t, *in_range, ACT)
        return quantized_leaky_relu(t, alpha, input_range=in_range, output_range=out_range)

    assert _compare(build, x) == 1.0


def test_bias_is_rounded_with_the_converters_double_scales():
    """Biases of ~1e8 LSBs (tiny weight scales after CLE, say): the converter divides by the
    product of its float64 scales, not of the float32 scales it stores; 1e8 LSBs is where the
    two differ."""
    rng = np.random.default_rng(0)
    channels = 64
    kernel = (rng.normal(size=(1, 1, 8, channels)) * rng.uniform(1e-3, 1, channels)).astype(np.float32)
    bias = rng.normal(0, 300, channels).astype(np.float32)
    in_range, out_range = (-1.0, 1.0), (-1000.0, 1000.0)
    w_spec = QuantSpec.weight(per_channel=True)
    w_lo, w_hi = kernel_range(kernel)

    def build(t):
        t = fake_quant(t, *in_range, ACT)
        return quantized_linear(lambda a, w: tf.nn.conv2d(a, w, 1, "SAME"), t, kernel, bias,
                                input_range=in_range, output_range=out_range)

    fn = tf.function(build, input_signature=[tf.TensorSpec([1, 4, 4, 8], tf.float32)])
    report = tfquant.inspect(tfquant.to_tflite(fn))
    conv = next(op for op in report.ops if op.op == "CONV_2D")
    written = np.asarray(report.tensors[conv.inputs[2]].data).astype(np.int64)
    p_in, p_w = quant_params(*in_range, ACT), quant_params(w_lo, w_hi, w_spec)
    ours = integer_kernels.quantize_bias(bias, p_in.real_scale * p_w.real_scale).numpy()
    np.testing.assert_array_equal(ours, written)
    assert np.abs(written).max() > 1e8
    from_float32_scales = integer_kernels.quantize_bias(
        bias, np.float64(p_in.scale) * p_w.scale.astype(np.float64)).numpy()
    assert np.any(from_float32_scales != written)   # the case is sensitive to the rule


@pytest.mark.parametrize("seed", range(3))
def test_mul_and_logistic_are_exact(seed):
    """Swish (x * LOGISTIC(x)) and a squeeze-excite MUL broadcasting [N, 1, 1, C] over [N, H, W, C]."""
    rng, x = _case(seed)
    g = rng.normal(0, 2, (x.shape[0], 1, 1, x.shape[-1])).astype(np.float32)
    rx, rg = _range(x), _range(g)
    sig = 1 / (1 + np.exp(-x))
    r_swish = _range(x * sig * rng.uniform(0.7, 1.0))
    r_se = _range(x * sig / (1 + np.exp(-g)) * rng.uniform(0.7, 1.0))

    def build(t, u):
        a = fake_quant(t, *rx, ACT)
        b = fake_quant(u, *rg, ACT)
        swish = quantized_mul(a, quantized_logistic(a, input_range=rx), a_range=rx,
                              b_range=(0.0, 255 / 256), output_range=r_swish)
        gate = quantized_logistic(b, input_range=rg)
        return swish, quantized_mul(gate, swish, a_range=(0.0, 255 / 256), b_range=r_swish, output_range=r_se)

    assert _compare(build, x, g) == 1.0


def test_ties_in_mul_and_logistic():
    """Power-of-two scales: products of scale 2^-11 onto 2^-8, every eighth one a tie of the
    requantization's double rounding; LOGISTIC's table at inputs on a 2^-5 grid."""
    rng = np.random.default_rng(10)
    x = _grid_values(rng, (16, 6, 6, 4))
    y = _grid_values(rng, (16, 6, 6, 4), scale=1 / 64)
    y_range = (-1.0, 191 / 64)                                           # scale 2^-6
    out_range = (-0.25, 191 / 256)                                       # scale 2^-8

    def build(t, u):
        a = fake_quant(t, *IN_RANGE, ACT)
        b = fake_quant(u, *y_range, ACT)
        return (quantized_mul(a, b, a_range=IN_RANGE, b_range=y_range, output_range=out_range),
                quantized_logistic(a, input_range=IN_RANGE))

    assert _compare(build, x, y) == 1.0
    products = (np.round(x * 32) * np.round(y * 64)).astype(np.int64)
    assert np.any((products > 0) & (products % 8 == 4)) and np.any((products < 0) & (products % 8 == 4))  # both signs


@pytest.mark.parametrize("seed", range(3))
def test_squared_difference_is_exact(seed):
    """LayerNormalization's (x - mean)^2: x [N, H, W, C] against its mean [N, H, W, 1] (broadcast),
    and two same-shaped tensors, on random grids."""
    rng, x = _case(seed)
    y = rng.normal(0, rng.uniform(0.5, 2), x.shape).astype(np.float32)
    m = x.mean(-1, keepdims=True)
    rx, ry, rm = _range(x), _range(y), _range(m)
    r_xm = _range((x - m) ** 2 * rng.uniform(0.6, 1.0))
    r_xy = _range((x - y) ** 2 * rng.uniform(0.6, 1.0))

    def build(t, u, v):
        a, b, c = fake_quant(t, *rx, ACT), fake_quant(u, *ry, ACT), fake_quant(v, *rm, ACT)
        return (quantized_squared_difference(a, c, a_range=rx, b_range=rm, output_range=r_xm),
                quantized_squared_difference(a, b, a_range=rx, b_range=ry, output_range=r_xy))

    assert _compare(build, x, y, m) == 1.0


def test_ties_in_squared_difference():
    """Scales 2^-5 and 2^-6 rescale exactly (multipliers 1/2, 1/4 of (q - zp) << 7); the square
    (32 (2 q_a - q_b))^2 onto 2^-7 is (2 q_a - q_b)^2 / 8, a tie whenever 2 q_a - q_b = 2 mod 4,
    which the kernel rounds up (half away from zero; half to even would differ)."""
    rng = np.random.default_rng(11)
    x = _grid_values(rng, (16, 6, 6, 4), -20, 20)
    y = _grid_values(rng, (16, 6, 6, 4), -20, 20, scale=1 / 64)
    y_range = (-1.0, 191 / 64)                                           # scale 2^-6
    out_range = (0.0, 255 / 128)                                         # scale 2^-7, zero point -128

    def build(t, u):
        a, b = fake_quant(t, *IN_RANGE, ACT), fake_quant(u, *y_range, ACT)
        return quantized_squared_difference(a, b, a_range=IN_RANGE, b_range=y_range, output_range=out_range)

    assert _compare(build, x, y) == 1.0
    d = np.round(x * 64).astype(np.int64) - np.round(y * 64).astype(np.int64)     # 2 q_a - q_b
    assert np.sum(d % 4 == 2) > 50


@pytest.mark.parametrize("in_hi, out_range", [(255 / 64, (0.0, 4.0)), (1e-3, (0.0, 300.0)),
                                              (37.0, (0.0, 2.5)), (7.85455, (0.0, 1.7234))])
def test_rsqrt_is_exact_on_every_input(in_hi, out_range):
    """RSQRT's int8 kernel is a function of its 256 inputs: every one of them (the zero point
    included, which the kernel maps to 127), at power-of-two and arbitrary scales. The kernel's
    Newton-Raphson in fixed point differs from a table of float 1 / sqrt(x) (LUTPopulate) at an
    input of the first case."""
    scale = in_hi / 255
    x = (np.arange(256, dtype=np.float64) * scale).astype(np.float32).reshape(1, 16, 16, 1)
    x = np.concatenate([x, x[:, ::-1]], 0)

    def build(t):
        a = fake_quant(t, 0.0, in_hi, ACT)
        return quantized_rsqrt(a, input_range=(0.0, in_hi), output_range=out_range)

    assert _compare(build, x) == 1.0
    pi, po = quant_params(0.0, in_hi, ACT), quant_params(*out_range, ACT)
    params = dict(input_scale=float(pi.scale), input_zero_point=int(pi.zero_point),
                  output_scale=float(po.scale), output_zero_point=int(po.zero_point))
    table = integer_kernels.rsqrt_table(**params)
    float_table = integer_kernels.lookup_table(lambda v: np.float32(1) / np.sqrt(np.maximum(v, np.float32(1e-30))),
                                               **params)
    assert table[int(pi.zero_point) + 128] == 127                      # q == zp: 127
    if in_hi == 255 / 64:
        assert np.sum(table != float_table) >= 1


# ---- HARD_SWISH: int16 fixed point -----------------------------------------------------------------
def _hard_swish_real(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, np.float64)
    return x * np.clip(x + 3.0, 0.0, 6.0) / 6.0


@pytest.mark.parametrize("grids", [
    ((-4, 4), (-0.375, 4)), ((-10, 2), (-0.4, 2)), ((-0.5, 0.7), (-0.3, 0.7)),
    ((-30, 60), (-1, 60)),                    # input scale 0.35: the gate's multiplier shifts left
    ((-0.05, 0.05), (-0.03, 0.03)),           # ... and right by many bits
    ((-200, 100), (-5, 100)), ((-2, 8), (-0.4, 8))])
def test_hard_swish_table_matches_the_interpreter_on_all_256_inputs(grids):
    """HARD_SWISH's 256 outputs on a grid (the int8 model's input is every int8 value) against the
    reference interpreter, and against the rounded real function, which it is not."""
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    in_range, out_range = grids

    @tf.function(input_signature=[tf.TensorSpec([1, 256], tf.float32)])
    def f(x):
        return quantized_hard_swish(fake_quant(x, *in_range, ACT), input_range=in_range, output_range=out_range)

    tflite = tfquant.to_tflite(f, int8_io=True)
    assert [op.op for op in tfquant.inspect(tflite).ops] == ["HARD_SWISH"]
    interpreter = Interpreter(model_content=tflite, experimental_op_resolver_type=OpResolverType.BUILTIN_REF)
    interpreter.allocate_tensors()
    i, o = interpreter.get_input_details()[0], interpreter.get_output_details()[0]
    q = np.arange(-128, 128)
    interpreter.set_tensor(i["index"], q.astype(np.int8)[None])
    interpreter.invoke()
    got = interpreter.get_tensor(o["index"])[0].astype(np.int64)
    (s_in, z_in), (s_out, z_out) = i["quantization"], o["quantization"]
    table = integer_kernels.hard_swish_table(input_scale=s_in, input_zero_point=z_in, output_scale=s_out,
                                             output_zero_point=z_out)
    np.testing.assert_array_equal(table, got)
    assert len(set(got.tolist())) > 64
    p_in, p_out = quant_params(*in_range, ACT), quant_params(*out_range, ACT)
    assert (float(p_in.scale), int(p_in.zero_point), float(p_out.scale)) == (s_in, z_in, s_out)   # the same grids


def test_hard_swish_against_rounding_the_real_function():
    """The fixed point is not the rounded real function (1-2 of 256 differ on several grids), so the
    table test above can fail."""
    differ = 0
    for (lo, hi), (olo, ohi) in [((-4, 4), (-0.375, 4)), ((-10, 2), (-0.4, 2)), ((-30, 60), (-1, 60))]:
        p_in, p_out = quant_params(lo, hi, ACT), quant_params(olo, ohi, ACT)
        table = integer_kernels.hard_swish_table(input_scale=p_in.scale, input_zero_point=int(p_in.zero_point),
                                                 output_scale=p_out.scale, output_zero_point=int(p_out.zero_point))
        x = (np.arange(-128, 128) - int(p_in.zero_point)) * np.float64(p_in.scale)
        rounded = np.clip(round_half_away(_hard_swish_real(x) / np.float64(p_out.scale)) + int(p_out.zero_point),
                          -128, 127)
        assert np.abs(table - rounded).max() <= 1
        differ += int(np.sum(table != rounded))
    assert differ >= 3


def test_ties_in_hard_swish():
    """Power-of-two grids, 2^-5 in and 2^-6 out: x = 12 / 32 gives 13.5 output LSBs, a tie (and
    so do its like); the exact simulation must write what the interpreter writes there too."""
    in_range, out_range = (-4.0, 127 / 32), (-0.5, 223 / 64)      # zero points 0 and -96
    x = (np.arange(-128, 128) / 32).astype(np.float32).reshape(1, 16, 16, 1)
    x = np.concatenate([x, x[:, ::-1]], axis=0)
    ticks = _hard_swish_real(x) * 64
    assert np.sum(np.abs(ticks - np.floor(ticks) - 0.5) < 1e-9) >= 4      # real ties among the inputs

    def build(t):
        return quantized_hard_swish(fake_quant(t, *in_range, ACT), input_range=in_range, output_range=out_range)

    assert _compare(build, x) == 1.0


@pytest.mark.parametrize("seed", range(2))
def test_hard_swish_is_exact_after_a_conv(seed):
    """MobileNetV3's conv -> hard-swish on random grids, through the exact simulation."""
    rng, x = _case(seed + 20)
    kernel = rng.normal(0, 0.3, (3, 3, x.shape[-1], 8)).astype(np.float32)
    conv = lambda a, w: tf.nn.conv2d(a, w, 1, "SAME")  # noqa: E731
    rx = _range(x)
    pre = conv(x, kernel).numpy()
    r_pre, r_out = _range(pre), _range(_hard_swish_real(pre) * rng.uniform(0.7, 1.0))

    def build(t):
        t = fake_quant(t, *rx, ACT)
        y = quantized_linear(conv, t, kernel, None, input_range=rx, output_range=r_pre)
        return quantized_hard_swish(y, input_range=r_pre, output_range=r_out)

    assert _compare(build, x) == 1.0
