"""PTQ -> QAT: a QAT model initialised from a tfquant.ptq result holds PTQ's int8 weights."""
import os
import sys

import numpy as np
import pytest

import tfquant

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "ptq"))
import ptq_models  # noqa: E402


def int8_weights(tflite: bytes) -> list[np.ndarray]:
    return [t.data for t in tfquant.inspect(tflite).tensors if t.is_constant and t.dtype == "INT8"]


@pytest.fixture(scope="module")
def ptq_and_qat():
    model = ptq_models.keras3_model()
    x = ptq_models.data(64, seed=1)
    # BN folding, CLE, absorption, bias correction (no AdaRound: this test is about the transfer)
    result = tfquant.ptq(model, x, progress=False, steps=("cle", "bias_absorption", "bias_correction"))
    qmodel = tfquant.quantize_model(model)
    report = tfquant.keras.init_from_ptq(qmodel, result, calibration=x)
    return model, result, qmodel, report


def test_qat_starts_from_ptq_weights_and_ranges(ptq_and_qat):
    model, result, qmodel, report = ptq_and_qat
    assert set(report.weights) == {"stem", "dw", "project", "expand", "dw2", "branch", "logits"}
    assert "stem/output" in report.ranges and "logits/output" in report.ranges
    ptq_w, qat_w = int8_weights(result.to_tflite()), int8_weights(tfquant.to_tflite(qmodel))
    assert len(ptq_w) == len(qat_w) == 7
    for w in ptq_w:       # every int8 kernel of the PTQ flatbuffer is in the QAT one, unchanged
        assert any(v.shape == w.shape and np.array_equal(v, w) for v in qat_w)
    # PTQ's ranges for those tensors
    plan = tfquant.keras.plan_of(qmodel)
    stem = [n for n in result.graph.linear_nodes() if n.name.endswith("stem_1/convolution")][0]
    assert plan.ranges["stem/output"] == pytest.approx(result.plan.range_of(stem.output()))
    # the two simulations agree to the softmax's LSB
    x = ptq_models.data(32, seed=2)
    assert float(np.abs(np.asarray(result(x)) - np.asarray(qmodel(x))).max()) <= 2 / 256
    # a fresh QAT model (the float weights, calibrated) does not hold PTQ's weights
    fresh = tfquant.quantize_model(model)
    tfquant.keras.calibrate(fresh, ptq_models.data(64, seed=1))
    fresh_w = int8_weights(tfquant.to_tflite(fresh))
    assert not all(any(v.shape == w.shape and np.array_equal(v, w) for v in fresh_w) for w in ptq_w)


def test_init_from_ptq_errors(ptq_and_qat):
    _, result, _, _ = ptq_and_qat
    other = tfquant.quantize_model(ptq_models.keras3_model(seed=5))
    with pytest.raises(tfquant.SpecError, match="matched no layer"):
        tfquant.keras.init_from_ptq(other, result)
    with pytest.raises(tfquant.SpecError, match="needs a tfquant.ptq result"):
        tfquant.keras.init_from_ptq(other, object())
