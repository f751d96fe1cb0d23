"""16-bit activations (TFLite int16x8) through `to_tflite`: dtypes, biases, and the interpreter's numbers."""
import numpy as np
import pytest
import tensorflow as tf

import tfquant
from tfquant.core import QuantSpec, fake_quant
from tfquant.errors import ExportError
from tfquant.export.int16 import INT16_ACTIVATION, requantize_boundary
from tfquant.export.interpreter import TFLiteRunner

A8 = QuantSpec.activation()
W8 = QuantSpec(bits=8, signed=True, symmetric=True, narrow_range=True, per_channel=True, axis=-1)
C = 16
_rng = np.random.default_rng(0)
K1 = _rng.normal(0, 0.3, (3, 3, 3, C)).astype(np.float32)
B1 = _rng.normal(0, 0.5, C).astype(np.float32)
K2 = _rng.normal(0, 0.3, (1, 1, C, C)).astype(np.float32)
B2 = _rng.normal(0, 2.0, C).astype(np.float32)       # large biases: a truncated bias shows
K3 = _rng.normal(0, 0.3, (1, 1, C, 4)).astype(np.float32)
B3 = _rng.normal(0, 0.5, 4).astype(np.float32)
X = np.random.default_rng(1).uniform(-1, 1, (8, 32, 32, 3)).astype(np.float32)


def _w(k):
    m = np.abs(k).reshape(-1, k.shape[-1]).max(0)
    return fake_quant(tf.constant(k), -m, m, W8)


def _conv(x, k, b):
    return tf.nn.conv2d(x, _w(k), 1, "SAME") + b


def island(int16: bool = True, boundary: bool = True, upto_c2: bool = False):
    """conv (int8) -> conv1x1 (int16 in and out when int16) -> conv1x1 (int8)."""
    def bridge(x):
        return requantize_boundary(x) if boundary else x

    @tf.function(input_signature=[tf.TensorSpec((1, 32, 32, 3), tf.float32)])
    def f(x):
        x = fake_quant(x, -1.0, 1.0, A8)
        c1 = fake_quant(tf.nn.relu(_conv(x, K1, B1)), -4.0, 4.0, A8)
        if int16:
            c1 = fake_quant(bridge(c1), -4.0, 4.0, INT16_ACTIVATION)
        c2 = _conv(c1, K2, B2)
        c2 = fake_quant(c2, -12.0, 12.0, INT16_ACTIVATION if int16 else A8)
        if upto_c2:
            return c2
        if int16:
            c2 = fake_quant(bridge(c2), -12.0, 12.0, A8)
        return fake_quant(_conv(c2, K3, B3), -10.0, 10.0, A8)
    return f


@pytest.fixture(scope="module")
def int16_model():
    return tfquant.to_tflite(island())


def test_int16_tensors_and_int64_bias(int16_model):
    report = tfquant.inspect(int16_model)
    assert report.op_counts() == {"QUANTIZE": 3, "CONV_2D": 3, "DEQUANTIZE": 1}    # boundaries removed
    convs = report.ops_of_type("CONV_2D")
    dtypes = [(report.tensors[op.inputs[0]].dtype, report.tensors[op.outputs[0]].dtype,
               report.tensors[op.inputs[2]].dtype) for op in convs]
    assert dtypes == [("INT8", "INT8", "INT32"), ("INT16", "INT16", "INT64"), ("INT8", "INT8", "INT32")]
    assert [t.dtype for t in report.int16_tensors] == ["INT16", "INT16"]
    assert all(t.zero_points == [0] for t in report.int16_tensors)
    assert "int16 activation tensors: 2" in report.table()


def _int16_conv_error(model: bytes) -> np.ndarray:
    """|interpreter - float conv of its own int16 input| at the int16 CONV_2D's output, in int16
    LSB: the kernel alone (int8 rounding upstream left out), weights as stored."""
    report = tfquant.inspect(model)
    conv = [op for op in report.ops_of_type("CONV_2D") if report.tensors[op.outputs[0]].dtype == "INT16"][0]
    t_in, t_w, t_out = (report.tensors[i] for i in (conv.inputs[0], conv.inputs[1], conv.outputs[0]))
    w = np.transpose(t_w.data.astype(np.float64) * np.asarray(t_w.scales)[:, None, None, None], (1, 2, 3, 0))
    runner = TFLiteRunner(model, preserve_all_tensors=True)
    errs = []
    for x in X:
        runner.invoke([x[None]])
        q_in = runner.get_tensor(t_in.index).astype(np.float64) * t_in.scales[0]
        want = np.round((tf.nn.conv2d(q_in, w, 1, "SAME").numpy() + B2) / t_out.scales[0])
        errs.append(np.abs(runner.get_tensor(t_out.index).astype(np.int64) - np.clip(want, -32768, 32767)))
    return np.concatenate(errs)


def test_int16_conv_matches_fake_quant_graph(int16_model):
    """The int16 CONV_2D's output is within 1 int16 LSB of float arithmetic on its own input (the
    INT32 bias the converter writes puts it far off: test_unfixed_bias_fails_the_bound), and the
    model output within 3 int8 LSB of the FakeQuant graph."""
    err = _int16_conv_error(int16_model)
    assert err.max() <= 1 and err.mean() < 0.05, (err.max(), err.mean())   # measured 1, 0.031
    out = tfquant.inspect(int16_model)
    scale = out.tensors[out.producer(out.outputs[0]).inputs[0]].scales[0]
    got = TFLiteRunner(int16_model).run(X)[0]
    want = np.concatenate([island()(x[None]).numpy() for x in X])
    err8 = np.abs(got - want) / scale
    assert err8.max() <= 3 and err8.mean() < 0.05, (err8.max(), err8.mean())


def test_unfixed_bias_fails_the_bound(int16_model):
    """The same flatbuffer with the converter's INT32 bias back in place fails the bound above."""
    from ai_edge_litert import schema_py_generated as schema
    from ai_edge_litert.tools import flatbuffer_utils

    m = flatbuffer_utils.read_model_from_bytearray(bytearray(int16_model))
    g = m.subgraphs[0]
    for t in g.tensors:
        if t.type == schema.TensorType.INT64:
            buf = m.buffers[t.buffer]
            buf.data = np.frombuffer(bytes(bytearray(buf.data)), "<i8").astype("<i4").view(np.uint8)
            t.type = schema.TensorType.INT32
    broken = bytes(flatbuffer_utils.convert_object_to_bytearray(m))
    assert tfquant.inspect(broken).tensors[tfquant.inspect(broken).ops_of_type("CONV_2D")[1].inputs[2]].dtype == "INT32"
    assert _int16_conv_error(broken).max() > 100


def test_mixed_op_is_refused():
    """Without the boundary op the converter writes a CONV_2D reading int8 and writing int16,
    which no LiteRT kernel runs: to_tflite names the op."""
    with pytest.raises(ExportError, match="CONV_2D.*cannot mix int8 and int16|requantize_boundary"):
        tfquant.to_tflite(island(boundary=False))


def test_elementwise_mixed_is_refused():
    @tf.function(input_signature=[tf.TensorSpec((1, 8), tf.float32)])
    def f(x):
        x = fake_quant(x, -1.0, 1.0, A8)
        return fake_quant(tf.nn.relu6(x * 3.0), -6.0, 6.0, INT16_ACTIVATION)
    with pytest.raises(ExportError, match="requantize_boundary"):
        tfquant.to_tflite(f)


def test_int16_needs_zero_point_zero():
    @tf.function(input_signature=[tf.TensorSpec((1, 8, 8, 3), tf.float32)])
    def f(x):
        x = fake_quant(x, -1.0, 1.0, A8)
        return fake_quant(requantize_boundary(x), -1.0, 1.0, QuantSpec(bits=16, signed=True))
    with pytest.raises(ExportError, match="narrow"):
        tfquant.to_tflite(f)


def test_int8_models_unchanged():
    """No int16 activation: fix_int16 returns the converter's bytes."""
    from tfquant.export.int16 import fix_int16
    m8 = tfquant.to_tflite(island(int16=False))
    assert fix_int16(m8) is m8


def test_verify_names_int16_ops(int16_model):
    result = tfquant.verify(int16_model, island(), X[:4], kernels=("reference",), intermediate_samples=0,
                            batch_size=1)
    assert result.int16_ops == ["#3 CONV_2D"]
    assert "int16 ops (1): #3 CONV_2D" in result.table()
    assert result.max_lsb <= 3


def test_plan_int16_is_for_activations():
    from tfquant.core.plan import QuantPlan
    from tfquant.core.spec import QuantSpec
    from tfquant.errors import SpecError
    plan = QuantPlan(qid={"t:0": "q0", "s:0": "q1"}, owners={"q0": ["t:0"], "q1": ["s:0"]}, fixed={"q1": (0.0, 255 / 256)},
                     ranges={"q0": (-1.0, 3.0)}, weight_specs={"conv": QuantSpec.weight()})
    assert plan.set_precision("q0", "int16") == ["q0"]
    assert plan.grid_of("t:0") == ((-3.0, 3.0), INT16_ACTIVATION)
    assert plan.grid_of("t:0", "int8")[0] == (-1.0, 3.0)
    with pytest.raises(SpecError, match="weight entries"):
        plan.set_precision("conv", "int16")
    with pytest.raises(SpecError, match="fixed range"):
        plan.set_precision("s:0", "int16")
