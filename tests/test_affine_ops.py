"""MUL and the per-channel affine (`core.op_rules.AFFINE_TFLITE_OPS`): exact kernels against the
reference interpreter, every int8 input value, with rounding ties (power-of-two scales make
half-way products).

The affine y = x * scale + offset is what a batch norm that no linear op absorbs, Rescaling,
Normalization and InceptionResNetV2's scaled residual become: MUL by an int8 constant, then ADD
of an int8 constant, as the converter emits them.
"""
import numpy as np
import pytest
import tensorflow as tf

import tfquant
from tfquant.core import integer_kernels, quantized_affine, quantized_input, quantized_mul, simulation_mode
from tfquant.core.op_rules import constant_operand_range

Q = np.arange(-128, 128, dtype=np.int8)
POW2_A, POW2_OUT = (-8.0, 127.0 / 16.0), (-16.0, 127.0 / 8.0)   # scales 1/16 (zp 0) and 1/8


def reference_interpreter(tflite: bytes):
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    interpreter = Interpreter(model_content=tflite, experimental_op_resolver_type=OpResolverType.BUILTIN_REF)
    interpreter.allocate_tensors()
    return interpreter


def run_int8(tflite: bytes, feeds: dict) -> tuple[np.ndarray, dict, tuple]:
    """Feed int8 arrays by input shape; returns (int8 output, {shape: (scale, zp)}, output (scale, zp))."""
    interpreter = reference_interpreter(tflite)
    params = {}
    for d in interpreter.get_input_details():
        shape = tuple(d["shape"])
        interpreter.set_tensor(d["index"], feeds[shape])
        params[shape] = d["quantization"]
    interpreter.invoke()
    o = interpreter.get_output_details()[0]
    return interpreter.get_tensor(o["index"]), params, o["quantization"]


def run_int8_ordered(tflite: bytes, feeds: list) -> tuple[np.ndarray, list, tuple]:
    """Feed int8 arrays in the signature's argument order (inputs named "a", "b")."""
    interpreter = reference_interpreter(tflite)
    details = sorted(interpreter.get_input_details(), key=lambda d: d["name"])
    for d, q in zip(details, feeds):
        interpreter.set_tensor(d["index"], q)
    interpreter.invoke()
    o = interpreter.get_output_details()[0]
    return interpreter.get_tensor(o["index"]), [d["quantization"] for d in details], o["quantization"]


def on_grid(q: np.ndarray, scale: float, zp: int) -> np.ndarray:
    return ((q.astype(np.float64) - zp) * np.float64(np.float32(scale))).astype(np.float32)


def to_int(y, scale: float, zp: int) -> np.ndarray:
    return (np.round(np.asarray(y, np.float64) / np.float64(np.float32(scale))) + zp).astype(np.int64)


@pytest.mark.parametrize("a_range,b_range,out_range,activation,broadcast", [
    (POW2_A, POW2_A, POW2_OUT, None, True),              # multiplier 1/32: ties everywhere
    pytest.param(POW2_A, (-1.0, 127.0 / 128.0), (-2.0, 127.0 / 64.0), "relu", False, marks=pytest.mark.slow),
    ((-2.3, 3.1), (-0.7, 1.9), (-3.3, 4.4), None, False),
    ((-2.3, 3.1), (0.0, 1.9), (-1.0, 6.1), "relu6", True),
])
def test_mul_matches_the_reference_kernel_on_every_pair(a_range, b_range, out_range, activation, broadcast):
    shape_a, shape_b = ((1, 256), (256, 1)) if broadcast else ((256, 256), (256, 256))

    @tf.function(input_signature=[tf.TensorSpec(shape_a, tf.float32), tf.TensorSpec(shape_b, tf.float32)])
    def f(a, b):
        a = quantized_input(a, input_range=a_range)
        b = quantized_input(b, input_range=b_range)
        return quantized_mul(a, b, a_range=a_range, b_range=b_range, output_range=out_range, activation=activation)

    if broadcast:
        qa, qb = Q.reshape(1, 256), Q.reshape(256, 1)
    else:
        qa, qb = np.meshgrid(Q, Q)
        qb = qb + 0   # same shape, distinct arrays
    tflite = tfquant.to_tflite(f, int8_io=True)
    assert [(o.op, o.is_float) for o in tfquant.inspect(tflite).ops] == [("MUL", False)]
    if broadcast:
        got, params, (s_out, z_out) = run_int8(tflite, {shape_a: qa, shape_b: qb})
    else:   # two inputs of one shape: fed in signature order
        got, params, (s_out, z_out) = run_int8_ordered(tflite, [qa, qb])
        params = {"a": params[0], "b": params[1]}
        shape_a, shape_b = "a", "b"
    (s_a, z_a), (s_b, z_b) = params[shape_a], params[shape_b]
    with simulation_mode("exact"):
        y = quantized_mul(tf.constant(on_grid(qa, s_a, z_a)), tf.constant(on_grid(qb, s_b, z_b)),
                          a_range=a_range, b_range=b_range, output_range=out_range, activation=activation)
    want = to_int(y, s_out, z_out)
    np.testing.assert_array_equal(want, got.astype(np.int64))
    exact_real = (qa.astype(np.float64) - z_a) * s_a * (qb.astype(np.float64) - z_b) * s_b / s_out + z_out
    ties = np.abs(exact_real - np.floor(exact_real) - 0.5) < 1e-9
    if a_range == POW2_A and b_range == POW2_A:
        assert ties.sum() > 1000                        # half-way cases really are exercised
    assert len(np.unique(got)) > 64


def test_mul_exact_kernel_rounds_ties_away_from_zero():
    """A tie on each side of zero: (q_a * q_b) / 32 with q_a * q_b = +-48 -> +-1.5 -> +-2."""
    y = integer_kernels.mul(tf.constant([3.0 / 16, -3.0 / 16]), tf.constant([1.0, 1.0]), a_scale=1 / 16,
                            a_zero_point=0, b_scale=1 / 16, b_zero_point=0, output_scale=1 / 8, output_zero_point=0)
    np.testing.assert_array_equal(np.asarray(y) * 8, [2.0, -2.0])


@pytest.mark.parametrize("with_offset,with_scale,activation", [
    (True, True, None), pytest.param(True, True, "relu", marks=pytest.mark.slow), (True, True, "relu6"),
    (False, True, "relu"), pytest.param(True, False, None, marks=pytest.mark.slow)])
def test_affine_with_constant_operands_matches_the_reference_kernels(with_offset, with_scale, activation):
    rng = np.random.default_rng(3)
    channels = 8
    scale = rng.uniform(-1.5, 2.5, channels).astype(np.float32) if with_scale else None
    offset = (rng.uniform(-0.9, 0.6, channels).astype(np.float32)) if with_offset else None
    in_range, mid_range, out_range = POW2_A, POW2_OUT, (-4.0, 127.0 / 32.0)

    def forward(x):
        x = quantized_input(x, input_range=in_range)
        return quantized_affine(x, scale, offset, input_range=in_range, mid_range=mid_range,
                                output_range=out_range, activation=activation)

    f = tf.function(forward, input_signature=[tf.TensorSpec((256, channels), tf.float32)])
    tflite = tfquant.to_tflite(f, int8_io=True)
    ops = [(o.op, o.is_float) for o in tfquant.inspect(tflite).ops]
    want_ops = ([("MUL", False)] if with_scale else []) + ([("ADD", False)] if with_offset else [])
    assert ops == want_ops                               # int8, the activation fused
    constants = [t for t in tfquant.inspect(tflite).tensors if t.is_constant]
    assert [t.dtype for t in constants] == ["INT8"] * len(want_ops)   # the scale and offset: int8
    assert all(len(t.scales) == 1 for t in constants)                # per tensor
    qx = np.repeat(Q.reshape(256, 1), channels, axis=1)
    got, params, (s_out, z_out) = run_int8(tflite, {(256, channels): qx})
    s_in, z_in = params[(256, channels)]
    with simulation_mode("exact"):
        y = forward(tf.constant(on_grid(qx, s_in, z_in)))
    np.testing.assert_array_equal(to_int(y, s_out, z_out), got.astype(np.int64))
    assert len(np.unique(got)) > 64


def test_constant_operand_range_includes_zero():
    assert constant_operand_range(np.array([0.5, 2.0])) == (0.0, 2.0)
    assert constant_operand_range(np.array([-3.0, -1.0])) == (-3.0, 0.0)
    lo, hi = constant_operand_range(tf.constant([-1.0, 4.0]))
    assert (float(lo), float(hi)) == (-1.0, 4.0)


def test_affine_needs_a_scale_or_an_offset():
    with pytest.raises(tfquant.SpecError, match="scale, an offset"):
        quantized_affine(tf.zeros([2]), None, None, input_range=(-1, 1), output_range=(-1, 1))
