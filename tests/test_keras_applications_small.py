"""Issue 15 in the default test run: three whole Keras applications (weights=None) at 32x32, each
through both routes (PTQ from the Keras model, data-free steps; QAT with quantize_model +
calibrate), every flatbuffer fully int8 and 100% exact under the reference kernels, intermediate
tensors included. The TFLite converter's own PTQ of these three is fully int8 too (asserted by
tests/test_keras_applications_models.py, slow, which also runs PTQ from the SavedModel), so "no
more float ops than the converter" is no float op at all here.

Cheap by size, not by skipping work: 32x32 inputs, 8 calibration and 2 test samples; the cost is
tracing, freezing and converting graphs of 15-50k ops (see tfquant/export/converter.py)."""
from __future__ import annotations

import keras
import numpy as np
import pytest

import tfquant
from tfquant.ptq import DATA_FREE_STEPS

SHAPE = (32, 32, 3)


def _application(name: str) -> tuple[keras.Model, np.ndarray, np.ndarray]:
    """The application with BN statistics from one training pass, calibration and test inputs."""
    keras.utils.set_random_seed(0)
    model = getattr(keras.applications, name)(weights=None, input_shape=SHAPE, classes=10)
    rng = np.random.default_rng(0)
    for bn in [la for la in model._flatten_layers(include_self=False)
               if isinstance(la, keras.layers.BatchNormalization)]:
        bn.momentum = 0.0
    model(rng.uniform(-1, 1, (16, *SHAPE)).astype(np.float32), training=True)
    return (model, rng.uniform(-1, 1, (8, *SHAPE)).astype(np.float32),
            rng.uniform(-1, 1, (2, *SHAPE)).astype(np.float32))


def _assert_int8_and_exact(tflite: bytes, result, min_tensors: int) -> None:
    floats = [op.op for op in tfquant.inspect(tflite).float_ops]
    assert floats == [], floats
    assert result.exact_fraction == 1.0 and result.max_lsb == 0, result.table()
    assert len(result.tensors) >= min_tensors, result.table()
    assert all(t.exact == 1.0 for t in result.tensors), result.table()


@pytest.mark.parametrize("name, min_tensors", [
    ("MobileNetV3Small", 100),    # hard-swish, squeeze-excite MUL, Rescaling stem
    ("EfficientNetB0", 120),      # swish, squeeze-excite, Normalization stem
    ("ResNet50V2", 60),           # pre-activation BN (per-channel affine in int8)
])
def test_application_is_int8_and_exact_on_both_routes(name, min_tensors):
    model, x_cal, x_test = _application(name)
    sim = tfquant.ptq(model, x_cal, progress=False, steps=DATA_FREE_STEPS)
    _assert_int8_and_exact(sim.to_tflite(), sim.verify(x_test, kernels=("reference",)), min_tensors)

    qmodel = tfquant.quantize_model(model)
    tfquant.calibrate(qmodel, x_cal)
    tflite = tfquant.to_tflite(qmodel)
    _assert_int8_and_exact(tflite, tfquant.verify(tflite, qmodel, x_test, kernels=("reference",)), min_tensors)
