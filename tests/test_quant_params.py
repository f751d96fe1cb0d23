"""The core math against TF's FakeQuant kernel and against the TFLite converter."""
import numpy as np
import pytest
import tensorflow as tf
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.helpers import one_conv, one_fake_quant_activation
from tfquant.core import (
    MIN_RANGE_WIDTH,
    QuantSpec,
    dequantize,
    fake_quant,
    quant_params,
    quantize,
    snap_range,
)
from tfquant.errors import RangeError
from tfquant.export import inspect

ACT = QuantSpec.activation()
SLOW = settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def test_minus_20_20_snaps_to_an_integer_zero_point():
    p = quant_params(-20.0, 20.0, ACT)
    assert p.zero_point == 0
    assert p.scale == np.float32(40.0 / 255.0)
    # The snapped range is an exact multiple of the scale on both sides.
    assert np.isclose(p.min / p.scale, -128.0, atol=1e-4) and np.isclose(p.max / p.scale, 127.0, atol=1e-4)


def test_fake_quant_equals_tflite_quantize_dequantize_including_saturation():
    """TF's FakeQuant on the snapped range gives exactly the values TFLite represents."""
    spec = ACT
    for lo, hi in [(-20.0, 20.0), (-0.3, 5.7), (0.0, 6.0), (-1.234, 0.0)]:
        p = quant_params(lo, hi, spec)
        x = np.linspace(lo - 3, hi + 3, 20001).astype(np.float32)
        tf_out = fake_quant(tf.constant(x), lo, hi, spec).numpy()
        q = quantize(x, p.scale, p.zero_point, spec)
        tflite_out = dequantize(q, p.scale, p.zero_point)
        lsb = np.abs(tf_out - tflite_out) / p.scale
        # Identical grid: only exact ties (x on a half step) may round differently.
        assert np.mean(lsb < 1e-3) > 0.9995, (lo, hi)
        assert tf_out.max() == pytest.approx(tflite_out.max(), rel=1e-6)
        assert tf_out.min() == pytest.approx(tflite_out.min(), rel=1e-6)


def test_numpy_and_graph_snapping_agree():
    rng = np.random.default_rng(0)
    lo, hi = -rng.uniform(0, 10, 50), rng.uniform(0, 10, 50)
    for spec in (ACT, QuantSpec.weight(), QuantSpec(bits=4)):
        smin, smax = snap_range(tf.constant(lo), tf.constant(hi), spec)
        p = quant_params(lo, hi, spec)
        np.testing.assert_array_equal(smin.numpy(), p.min)
        np.testing.assert_array_equal(smax.numpy(), p.max)


@pytest.mark.parametrize("spec", [ACT, QuantSpec.weight(per_channel=False)])
def test_all_zero_and_tiny_ranges_never_give_zero_or_nan_scale(spec):
    for lo, hi in [(0.0, 0.0), (0.0, 1e-12), (-1e-9, 1e-9), (5e-7, 5e-7)]:
        p = quant_params(lo, hi, spec)
        assert np.isfinite(p.scale) and p.scale > 0
        assert p.max - p.min >= MIN_RANGE_WIDTH * 0.99
        assert spec.qmin <= p.zero_point <= spec.qmax


def test_range_is_widened_to_contain_zero():
    p = quant_params(0.5, 2.0, ACT)
    assert p.min == 0.0 and p.zero_point == -128
    p = quant_params(-3.0, -1.0, ACT)
    assert p.max == 0.0 and p.zero_point == 127


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_nan_or_infinite_range_is_a_clear_error(bad):
    with pytest.raises(RangeError, match="NaN|infinite"):
        quant_params(-1.0, bad, ACT)
    with pytest.raises(RangeError):
        quant_params(np.array([0.0, bad]), np.array([1.0, 1.0]), QuantSpec.weight())


def test_inverted_range_is_a_clear_error():
    with pytest.raises(RangeError, match="min > max"):
        quant_params(1.0, -1.0, ACT)


def test_quantize_rounds_half_away_from_zero():
    spec = ACT
    q = quantize(np.array([0.5, 1.5, -0.5, -1.5, 2.5]), 1.0, 0, spec)
    np.testing.assert_array_equal(q, [1, 2, -1, -2, 3])   # numpy's round would give 0, 2, -0, -2, 2


# ---- against the converter ------------------------------------------------------------
@SLOW
@given(lo=st.floats(-50, 0), width=st.floats(1e-4, 100), narrow=st.booleans())
def test_activation_params_equal_the_converters(lo, width, narrow):
    spec = QuantSpec(bits=8, narrow_range=narrow)
    hi = lo + width
    p = quant_params(lo, hi, spec)
    report = inspect(one_fake_quant_activation(lo, hi, spec))
    quantize_op = report.ops_of_type("QUANTIZE")[0]
    t = report.tensors[quantize_op.outputs[0]]
    assert t.scales == [float(p.scale)]
    assert t.zero_points == [int(p.zero_point)]


@SLOW
@given(channels=st.integers(1, 16), bits=st.integers(4, 8), seed=st.integers(0, 2**16),
       zero_channel=st.booleans())
def test_per_channel_weight_params_equal_the_converters(channels, bits, seed, zero_channel):
    rng = np.random.default_rng(seed)
    spec = QuantSpec.weight(bits=bits)
    kernel = (rng.standard_normal((1, 1, 3, channels)) * rng.uniform(0.01, 10, channels)).astype(np.float32)
    if zero_channel:
        kernel[..., 0] = 0.0
    r = np.abs(kernel).max(axis=(0, 1, 2))
    p = quant_params(-r, r, spec)
    report = inspect(one_conv(kernel, -r, r, spec))
    conv = report.ops_of_type("CONV_2D")[0]
    w = report.tensors[conv.inputs[1]]
    assert w.dtype == ("INT4" if bits <= 4 else "INT8") and w.quantized_dimension == 0
    np.testing.assert_array_equal(np.asarray(w.scales, np.float32), p.scale)
    assert w.zero_points == [0] * channels
    # The stored integers are round(w / scale), within the spec's grid.
    expected = quantize(kernel, p.scale, 0, spec, axis=3)
    np.testing.assert_array_equal(w.data.transpose(1, 2, 3, 0), expected)
    assert w.data.min() >= spec.qmin and w.data.max() <= spec.qmax


@pytest.mark.parametrize("bits", [4, 5, 7])
def test_low_bit_activation_fake_quant_is_refused_at_export(bits):
    from tfquant.errors import ExportError

    with pytest.raises(ExportError, match=f"activation to {bits} bits"):
        one_fake_quant_activation(-1.0, 1.0, QuantSpec(bits=bits))


@pytest.mark.parametrize("bits", [2, 3])
def test_weights_under_4_bits_are_refused_at_export(bits):
    from tfquant.errors import ExportError

    with pytest.raises(ExportError, match=f"uses {bits} bits"):
        one_conv(np.ones((1, 1, 3, 2), np.float32), -np.ones(2), np.ones(2), QuantSpec.weight(bits=bits))


def test_fake_quant_gradient_is_straight_through_inside_the_range():
    x = tf.constant([-3.0, -0.5, 0.0, 0.7, 2.9, 5.0])
    with tf.GradientTape() as tape:
        tape.watch(x)
        y = fake_quant(x, -1.0, 3.0, ACT)
    np.testing.assert_array_equal(tape.gradient(y, x).numpy(), [0, 1, 1, 1, 1, 0])


def test_per_channel_and_depthwise_fake_quant():
    from tfquant.core import fake_quant_depthwise_kernel

    rng = np.random.default_rng(0)
    k = rng.standard_normal((3, 3, 4, 2)).astype(np.float32)
    r = np.abs(k).reshape(9, 8).max(0)
    spec = QuantSpec.weight()
    out = fake_quant_depthwise_kernel(tf.constant(k), -r, r, spec).numpy()
    p = quant_params(-r, r, spec)
    expected = dequantize(quantize(k.reshape(9, 8), p.scale, 0, spec, axis=1), p.scale, 0, axis=1)
    np.testing.assert_allclose(out.reshape(9, 8), expected, rtol=1e-6, atol=1e-7)
    # Per-channel along axis 0 (transposed internally: the FakeQuant op reads the last axis).
    w = rng.standard_normal((5, 7)).astype(np.float32)
    r0 = np.abs(w).max(1)
    out0 = fake_quant(tf.constant(w), -r0, r0, QuantSpec.weight(axis=0)).numpy()
    p0 = quant_params(-r0, r0, spec)
    np.testing.assert_allclose(out0, dequantize(quantize(w, p0.scale, 0, spec, axis=0), p0.scale, 0, axis=0),
                               rtol=1e-6, atol=1e-7)


def test_exact_mode_keeps_the_fake_quant_gradient():
    from tfquant.core import quantized_add, simulation_mode

    a = tf.constant([[0.5, -0.25, 0.75]])
    b = tf.constant([[0.1, 0.2, -0.3]])
    grads = []
    for mode in ("fake_quant", "exact"):
        with tf.GradientTape() as tape, simulation_mode(mode):
            tape.watch(a)
            y = quantized_add(a, b, a_range=(-1.0, 1.0), b_range=(-1.0, 1.0), output_range=(-2.0, 2.0))
        grads.append(tape.gradient(y, a).numpy())
    np.testing.assert_array_equal(grads[0], grads[1])
    with pytest.raises(ValueError, match="simulation mode"):
        with simulation_mode("int8"):
            pass
