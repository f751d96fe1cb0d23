"""The TFLite converter peer (benchmarks.peers.converter_ptq): float and PTQ flatbuffers, run_tflite."""
from __future__ import annotations

import os

import numpy as np
import pytest

pytest.importorskip("ai_edge_litert")

from benchmarks.data import fashion_mnist as fm  # noqa: E402
from benchmarks.peers import converter_ptq as cp  # noqa: E402

HAVE_DATA = all(os.path.isfile(os.path.join(fm.data_dir(), f)) for f in fm.FILES.values())
pytestmark = pytest.mark.skipif(not HAVE_DATA, reason="apt-get install -y dataset-fashion-mnist")


@pytest.fixture(scope="module")
def setup():
    """A briefly trained benchmark network, calibration images and evaluation images."""
    import keras

    from benchmarks.models import fmnist_net

    x_train, y_train, x_test, _ = fm.load_fashion_mnist()
    x = fm.preprocess(x_train[:2048])
    y = y_train[:2048].astype(np.int32)
    keras.utils.set_random_seed(0)
    model = fmnist_net._compile(fmnist_net.build_fmnist_net(), keras)
    model.fit(x, y, batch_size=64, epochs=1, verbose=0)
    evaluation = fm.preprocess(x_test[:64])
    return dict(model=model, cal=fm.preprocess(x_train[-32:]), eval=evaluation,
                float_logits=model.predict(evaluation, verbose=0))


@pytest.fixture(scope="module")
def ptq(setup):
    return cp.converter_ptq(setup["model"], setup["cal"], per_channel=True)


def conv_weights(tflite: bytes):
    """[(op name, weight tensor detail, weight values)] for every conv / depthwise / FC op."""
    interp = cp.make_interpreter(tflite)
    interp.allocate_tensors()
    details = {d["index"]: d for d in interp.get_tensor_details()}
    out = []
    for op in interp._get_ops_details():
        if op["op_name"] in ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED"):
            d = details[int(op["inputs"][1])]
            out.append((op["op_name"], d, interp.get_tensor(d["index"])))
    return out


def test_float_tflite_matches_keras(setup):
    tflite = cp.float_tflite(setup["model"])
    weights = conv_weights(tflite)
    assert len(weights) == 11 and all(np.dtype(d["dtype"]) == np.float32 for _, d, _ in weights)
    logits = cp.run_tflite(tflite, setup["eval"])
    assert logits.dtype == np.float32 and logits.shape == (64, 10)
    np.testing.assert_allclose(logits, setup["float_logits"], rtol=1e-4, atol=1e-4)
    # Reference kernels, one thread, an uneven batch split: the same numbers.
    ref = cp.run_tflite(tflite, setup["eval"], batch_size=10, reference=True, num_threads=1)
    np.testing.assert_allclose(ref, logits, rtol=1e-4, atol=1e-4)


def test_ptq_per_channel_int8_weights_and_agreement(setup, ptq):
    weights = conv_weights(ptq)
    kinds = [k for k, _, _ in weights]
    assert kinds.count("CONV_2D") == 6 and kinds.count("DEPTHWISE_CONV_2D") == 4
    for kind, detail, w in weights:
        assert w.dtype == np.int8, detail["name"]
        assert w.min() >= -127                                      # symmetric, narrow range
        qp = detail["quantization_parameters"]
        assert np.all(qp["zero_points"] == 0)
        if kind == "CONV_2D":
            assert len(qp["scales"]) == w.shape[0] and qp["quantized_dimension"] == 0
        elif kind == "DEPTHWISE_CONV_2D":
            assert len(qp["scales"]) == w.shape[3] and qp["quantized_dimension"] == 3
        # Each channel uses its full range: the largest |w| per channel is 127.
        axis = tuple(i for i in range(w.ndim) if i != qp["quantized_dimension"])
        if len(qp["scales"]) > 1:
            assert np.all(np.abs(w.astype(np.int32)).max(axis=axis) == 127)
    interp = cp.make_interpreter(ptq)
    assert np.dtype(interp.get_input_details()[0]["dtype"]) == np.float32
    assert np.dtype(interp.get_output_details()[0]["dtype"]) == np.float32
    logits = cp.run_tflite(ptq, setup["eval"])
    agreement = np.mean(np.argmax(logits, -1) == np.argmax(setup["float_logits"], -1))
    assert agreement >= 0.85
    err = np.abs(logits - setup["float_logits"]).max()
    assert 0 < err < 0.25 * np.abs(setup["float_logits"]).max()


def test_ptq_per_tensor(setup):
    tflite = cp.converter_ptq(setup["model"], setup["cal"], per_channel=False)
    for kind, detail, w in conv_weights(tflite):
        if kind in ("CONV_2D", "DEPTHWISE_CONV_2D"):
            assert w.dtype == np.int8 and len(detail["quantization_parameters"]["scales"]) == 1
    logits = cp.run_tflite(tflite, setup["eval"])
    assert logits.shape == (64, 10) and np.all(np.isfinite(logits))


def test_int8_io_and_run_tflite_quantizes_inputs(setup, ptq):
    tflite = cp.converter_ptq(setup["model"], setup["cal"], per_channel=True, int8_io=True)
    interp = cp.make_interpreter(tflite)
    inp, out = interp.get_input_details()[0], interp.get_output_details()[0]
    assert np.dtype(inp["dtype"]) == np.int8 and np.dtype(out["dtype"]) == np.int8
    # Inputs in [0, 1] calibrate to scale 1/255, zero point -128.
    scale, zp = inp["quantization"]
    assert zp == -128 and abs(scale - 1 / 255) < 1e-6
    raw = cp.run_tflite(tflite, setup["eval"], dequantize=False)
    assert raw.dtype == np.int8 and raw.shape == (64, 10)
    deq = cp.run_tflite(tflite, setup["eval"], batch_size=7)
    out_scale, out_zp = out["quantization"]
    np.testing.assert_allclose(deq, (raw.astype(np.float32) - out_zp) * out_scale, rtol=1e-6)
    # Feeding int8 directly gives the same result as letting run_tflite quantize.
    q_in = cp.quantize(setup["eval"], scale, zp)
    np.testing.assert_array_equal(cp.run_tflite(tflite, q_in, dequantize=False), raw)
    # Same calibration as the float-io model: the same integers, within one output LSB.
    float_io = cp.run_tflite(ptq, setup["eval"])
    assert np.abs(float_io - deq).max() <= out_scale * 1.001


def test_quantize_rounds_half_away_from_zero():
    x = np.array([0.5, -0.5, 1.5, -1.5, 2.5, -2.5, 0.49, 300.0, -300.0])
    np.testing.assert_array_equal(cp.quantize(x, 1.0, 0), [1, -1, 2, -2, 3, -3, 0, 127, -128])
    np.testing.assert_array_equal(cp.quantize(np.array([0.0, 1.0]), 1 / 255, -128), [-128, 127])
