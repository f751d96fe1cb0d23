"""Export contract on the hand-built FakeQuant model: what the flatbuffer holds and how close
the interpreter's integer kernels come to the simulation."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

import tfquant
from testdata import handbuilt_model
from tfquant.core import QuantSpec, fake_quant
from tfquant.errors import ExportError, ModelFileError


@pytest.fixture(scope="module")
def model():
    return handbuilt_model.build()


@pytest.fixture(scope="module")
def tflite_path(model, tmp_path_factory):
    path = str(tmp_path_factory.mktemp("export") / "handbuilt.tflite")
    tfquant.to_tflite(model.__call__, path)
    return path


@pytest.fixture(scope="module")
def report(tflite_path):
    return tfquant.inspect(tflite_path)


def test_every_op_is_integer(report):
    assert report.float_ops == []
    counts = report.op_counts()
    for op in ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED", "ADD", "CONCATENATION",
               "AVERAGE_POOL_2D", "MEAN", "SOFTMAX"):
        assert counts.get(op, 0) >= 1, op
    # Only the two edge ops touch float, and nothing was left for a separate BN.
    assert counts["QUANTIZE"] == 1 and counts["DEQUANTIZE"] == 1
    assert "MUL" not in counts


def test_conv_weights_per_channel_axis_0_with_int32_bias(report):
    for op in report.ops_of_type("CONV_2D"):
        x, w, b = (report.tensors[i] for i in op.inputs)
        out = report.tensors[op.outputs[0]]
        assert x.dtype == "INT8" and out.dtype == "INT8"
        assert w.dtype == "INT8" and w.quantized_dimension == 0
        assert len(w.scales) == w.shape[0] and set(w.zero_points) == {0}
        assert w.data.min() >= -127
        assert b.dtype == "INT32" and set(b.zero_points) == {0}
        np.testing.assert_allclose(b.scales, np.float32(x.scales[0]) * np.asarray(w.scales, np.float32),
                                   rtol=1e-6)


def test_depthwise_weights_per_channel_axis_3(report):
    (op,) = report.ops_of_type("DEPTHWISE_CONV_2D")
    x, w, b = (report.tensors[i] for i in op.inputs)
    assert w.dtype == "INT8" and w.quantized_dimension == 3 and w.shape == [1, 3, 3, 8]
    assert len(w.scales) == 8
    np.testing.assert_allclose(b.scales, x.scales[0] * np.asarray(w.scales), rtol=1e-6)


def test_shared_scales_and_fixed_softmax_output(report):
    (concat,) = report.ops_of_type("CONCATENATION")
    scales = {tuple(report.tensors[i].scales) for i in concat.inputs + concat.outputs}
    assert len(scales) == 1
    (pool,) = report.ops_of_type("AVERAGE_POOL_2D")
    assert report.tensors[pool.inputs[0]].scales == report.tensors[pool.outputs[0]].scales
    (softmax,) = report.ops_of_type("SOFTMAX")
    out = report.tensors[softmax.outputs[0]]
    assert out.scales == [1 / 256] and out.zero_points == [-128]


def test_weights_equal_simulation_weights_over_scales(model, report):
    """The flatbuffer's integers are exactly the simulation's weights divided by their scales."""
    (op,) = report.ops_of_type("DEPTHWISE_CONV_2D")
    w = report.tensors[op.inputs[1]]
    r = np.abs(model.dw_w.numpy()).max(axis=(0, 1)).reshape(-1)
    from tfquant.core import fake_quant_depthwise_kernel
    sim = fake_quant_depthwise_kernel(model.dw_w, -r, r, QuantSpec.weight()).numpy()   # [3,3,8,1]
    stored = w.data[0].astype(np.float64) * np.asarray(w.scales)                        # [3,3,8]
    np.testing.assert_allclose(stored, sim[..., 0], rtol=1e-6, atol=1e-9)


def test_verify_meets_the_fidelity_contract(model, tflite_path):
    result = tfquant.verify(tflite_path, model.exact, handbuilt_model.sample_inputs(256),
                            kernels=("reference", "default"))
    print(result.table())
    assert result.exact_fraction >= 0.995          # the contract; measured: every output bit-exact
    assert result.max_lsb == 0 and result.within_one_fraction == 1.0
    default = result.for_kernels("default")[0].fidelity
    assert default.within_one >= 0.999
    # Every intermediate tensor the integer kernels write is predicted exactly.
    assert len(result.tensors) >= 8
    assert all(t.exact == 1.0 for t in result.tensors), result.table()
    assert result.for_kernels("reference")[0].top1_vs_simulation >= 0.99


def test_int8_io(model, tmp_path):
    path = tmp_path / "io.tflite"
    tfquant.to_tflite(model.__call__, path, int8_io=True)
    report = tfquant.inspect(path)
    assert report.tensors[report.inputs[0]].dtype == "INT8"
    assert report.tensors[report.outputs[0]].dtype == "INT8"
    assert "QUANTIZE" not in report.op_counts() and "DEQUANTIZE" not in report.op_counts()
    result = tfquant.verify(path, model.exact, handbuilt_model.sample_inputs(64), kernels=("reference",))
    assert result.exact_fraction >= 0.995 and result.within_one_fraction == 1.0


def test_json_report(report):
    d = json.loads(report.to_json())
    assert d["float_ops"] == [] and d["op_counts"]["CONV_2D"] == 3
    assert any(t["per_channel"] and t["quantized_dimension"] == 3 for t in d["tensors"])


# ---- bad input ---------------------------------------------------------------------------
def test_missing_file(tmp_path):
    with pytest.raises(ModelFileError, match="does not exist"):
        tfquant.inspect(tmp_path / "nope.tflite")


def test_corrupt_file(tmp_path, tflite_path):
    bad = tmp_path / "bad.tflite"
    bad.write_bytes(b"this is not a flatbuffer at all")
    with pytest.raises(ModelFileError, match="not a TFLite flatbuffer"):
        tfquant.inspect(bad)
    truncated = tmp_path / "truncated.tflite"
    truncated.write_bytes(open(tflite_path, "rb").read()[:200])
    with pytest.raises(ModelFileError):
        tfquant.inspect(truncated)
    with pytest.raises(ModelFileError):
        tfquant.verify(bad, lambda x: x, np.zeros((1, 4), np.float32))


def test_graph_without_fake_quant_is_refused_and_nothing_is_written(tmp_path):
    @tf.function(input_signature=[tf.TensorSpec([1, 4], tf.float32)])
    def float_graph(x):
        return tf.nn.relu(x * 2.0)

    out = tmp_path / "float.tflite"
    with pytest.raises(ExportError, match="no FakeQuant ops"):
        tfquant.to_tflite(float_graph, out)
    assert not out.exists() and os.listdir(tmp_path) == []


def test_tf_function_without_signature_is_refused():
    @tf.function
    def f(x):
        return fake_quant(x, -1.0, 1.0, QuantSpec.activation())

    with pytest.raises(ExportError, match="input_signature"):
        tfquant.to_tflite(f)
    with pytest.raises(ExportError, match="cannot export a str"):
        tfquant.to_tflite("model.h5")


def test_failed_write_leaves_the_old_file(tmp_path, model, tflite_path):
    out = tmp_path / "model.tflite"
    out.write_bytes(b"previous")

    @tf.function(input_signature=[tf.TensorSpec([1, 4], tf.float32)])
    def float_graph(x):
        return x + 1.0

    with pytest.raises(ExportError):
        tfquant.to_tflite(float_graph, out)
    assert out.read_bytes() == b"previous"
    assert sorted(os.listdir(tmp_path)) == ["model.tflite"]


def test_written_file_has_the_usual_permissions(tmp_path):
    """Atomic writes go through a private temporary file; the result is readable as a plain
    open() would have made it (0666 minus the umask), not 0600."""
    from tfquant.io_utils import write_bytes_atomic

    umask = os.umask(0o022)
    try:
        path = write_bytes_atomic(tmp_path / "out.bin", b"data")
    finally:
        os.umask(umask)
    assert os.stat(path).st_mode & 0o777 == 0o644


def test_verify_rejects_bad_inputs(model, tflite_path):
    from tfquant.errors import DataError

    with pytest.raises(DataError, match="expects samples of shape"):
        tfquant.verify(tflite_path, model.__call__, np.zeros((2, 8, 8, 3), np.float32), kernels=("reference",))
    x = handbuilt_model.sample_inputs(2)
    x[0, 0, 0, 0] = np.nan
    with pytest.raises(DataError, match="NaN"):
        tfquant.verify(tflite_path, model.__call__, x)


def test_inspect_command(tflite_path, tmp_path):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    cmd = [sys.executable, "-m", "tools.inspect_tflite", tflite_path]
    table = subprocess.run(cmd, capture_output=True, text=True, env=env, check=True).stdout
    assert "DEPTHWISE_CONV_2D" in table and "per-channel axis 3" in table and "float ops: 0" in table
    js = subprocess.run(cmd + ["--json"], capture_output=True, text=True, env=env, check=True).stdout
    assert json.loads(js)["float_ops"] == []
    bad = subprocess.run([sys.executable, "-m", "tools.inspect_tflite", str(tmp_path / "missing.tflite")],
                         capture_output=True, text=True, env=env)
    assert bad.returncode == 1 and "does not exist" in bad.stderr and "Traceback" not in bad.stderr
