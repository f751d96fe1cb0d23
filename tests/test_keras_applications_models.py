"""Issue 15: whole Keras applications (weights=None, small input), not miniatures. PTQ starts from
the model's SavedModel (`model.export`, the file a user hands to `tfquant-convert`), QAT from the
Keras model; each flatbuffer must keep no more float ops than the TFLite converter's own PTQ of the
same model and be 100% exact under the reference kernels. The 15-model sweep at 96x96 is
`benchmarks/suite_keras_applications.py`."""
from __future__ import annotations

import collections

import keras
import numpy as np
import pytest

import tfquant
from benchmarks.peers.converter_ptq import converter_ptq
from tfquant.ptq import DATA_FREE_STEPS

SHAPE = (32, 32, 3)


def _application(name: str) -> tuple[keras.Model, np.ndarray, np.ndarray]:
    """The application with BN statistics from one training pass, calibration and test inputs."""
    keras.utils.set_random_seed(0)
    model = getattr(keras.applications, name)(weights=None, input_shape=SHAPE, classes=10)
    rng = np.random.default_rng(0)
    bns = [la for la in model._flatten_layers(include_self=False)
           if isinstance(la, keras.layers.BatchNormalization)]
    for bn in bns:
        bn.momentum = 0.0
    model(rng.uniform(-1, 1, (32, *SHAPE)).astype(np.float32), training=True)
    return (model, rng.uniform(-1, 1, (16, *SHAPE)).astype(np.float32),
            rng.uniform(-1, 1, (4, *SHAPE)).astype(np.float32))


def _float_ops(tflite: bytes) -> collections.Counter:
    return collections.Counter(op.op for op in tfquant.inspect(tflite).float_ops)


def _assert_exact(result) -> None:
    assert result.exact_fraction == 1.0 and result.max_lsb == 0, result.table()
    assert result.tensors and all(t.exact == 1.0 for t in result.tensors), result.table()


# Slow: 1.5-4 minutes per test on the shared 2 cores (tracing and freezing 15-40k-op graphs, not
# the data: 32x32 inputs, 16 calibration samples, data-free PTQ steps). The default run has the
# miniatures (test_keras_applications_exact).
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module", params=[
    "MobileNetV3Small",    # hard-swish, squeeze-excite MUL
    "ResNet50V2",          # pre-activation BN
    "EfficientNetB0",      # swish, squeeze-excite
])
def application(request):
    """One built application per module run, shared by its PTQ and QAT tests, with the float
    ops of the TFLite converter's own PTQ (none: all three are int8 there)."""
    model, x_cal, x_test = _application(request.param)
    converter_floats = _float_ops(converter_ptq(model, x_cal))
    assert converter_floats == collections.Counter(), converter_floats
    return model, x_cal, x_test, converter_floats


def test_application_ptq_from_saved_model_is_int8_and_exact(application, tmp_path):
    model, x_cal, x_test, converter_floats = application
    model.export(str(tmp_path / "saved_model"), verbose=False)
    sim = tfquant.ptq(str(tmp_path / "saved_model"), x_cal, progress=False, steps=DATA_FREE_STEPS)   # coverage, not reconstruction
    assert _float_ops(sim.to_tflite()) == converter_floats
    _assert_exact(sim.verify(x_test, kernels=("reference",)))


def test_application_qat_is_int8_and_exact(application):
    model, x_cal, x_test, converter_floats = application
    qmodel = tfquant.quantize_model(model)
    tfquant.calibrate(qmodel, x_cal)
    tflite = tfquant.to_tflite(qmodel)
    assert _float_ops(tflite) == converter_floats
    _assert_exact(tfquant.verify(tflite, qmodel, x_test, kernels=("reference",)))
