"""Issue 15, causes 3, 5 and 6: per-channel affines that no Conv/Dense absorbs are int8 on both
routes (as the TFLite converter makes them), and the simulation is exact under reference kernels.

- cause 3: a BatchNormalization after an add (pre-activation ResNetV2) or a concat (DenseNet);
- cause 5: preprocessing layers, Rescaling and Normalization (MobileNetV3, EfficientNet);
- cause 6: InceptionResNetV2's CustomScaleLayer (a + b * scale).
Each small reproducer goes through PTQ (`tfquant.ptq`) and QAT (`quantize_model` + `calibrate`).
"""
import numpy as np
import pytest

import keras
import tfquant

L = keras.layers
SHAPE = (16, 16, 3)


def data(n: int, seed: int, lo: float = -1.0, hi: float = 1.0) -> np.ndarray:
    return np.random.default_rng(seed).uniform(lo, hi, (n, *SHAPE)).astype(np.float32)


def with_bn_statistics(model: keras.Model, x: np.ndarray) -> keras.Model:
    """BN statistics from one training=True pass with momentum 0 (COVERAGE.md), so that they are
    not the identity."""
    for layer in model.layers:
        if isinstance(layer, L.BatchNormalization):
            layer.momentum = 0.0
    model(x, training=True)
    return model


def bn_after_add() -> keras.Model:
    keras.utils.set_random_seed(0)
    x = keras.Input(SHAPE)
    y = L.Add()([L.Conv2D(8, 3, padding="same")(x), L.Conv2D(8, 1)(x)])
    y = L.ReLU()(L.BatchNormalization(name="bn")(y))
    return keras.Model(x, L.Conv2D(4, 3, padding="same")(y))


def bn_after_concat() -> keras.Model:
    keras.utils.set_random_seed(1)
    x = keras.Input(SHAPE)
    y = L.Concatenate()([L.Conv2D(4, 3, padding="same")(x), L.Conv2D(6, 1)(x)])
    y = L.Activation("relu")(L.BatchNormalization(name="bn")(y))
    return keras.Model(x, L.Conv2D(4, 1)(y))


def preprocessing(kind: str) -> keras.Model:
    keras.utils.set_random_seed(2)
    x = keras.Input(SHAPE)
    y = L.Rescaling(1 / 127.5, offset=-1, name="pre")(x) if kind == "rescaling" else \
        L.Normalization(mean=[120.0, 110.0, 100.0], variance=[3000.0, 2500.0, 2800.0], name="pre")(x)
    y = L.Conv2D(8, 3, padding="same", activation="relu")(y)
    return keras.Model(x, L.Conv2D(4, 1)(y))


def scaled_residual() -> keras.Model:
    from keras.src.applications.inception_resnet_v2 import CustomScaleLayer

    keras.utils.set_random_seed(3)
    x = keras.Input(SHAPE)
    a = L.Conv2D(8, 3, padding="same", activation="relu")(x)
    b = L.Conv2D(8, 1)(a)
    y = L.Activation("relu")(CustomScaleLayer(0.17, name="scale")([a, b]))
    return keras.Model(x, L.Conv2D(4, 1)(y))


def ops_of(tflite: bytes) -> list[tuple[str, bool]]:
    return [(o.op, o.is_float) for o in tfquant.inspect(tflite).ops if o.op not in ("QUANTIZE", "DEQUANTIZE")]


def exact_fraction(tflite: bytes, simulation, x) -> float:
    return tfquant.verify(tflite, simulation, x, kernels=("reference",), intermediate_samples=0).exact_fraction


def both_routes(model: keras.Model, x_cal: np.ndarray, x_test: np.ndarray, layer: str):
    """[(route, ops, exact fraction)] for PTQ and QAT; QAT's report must call `layer` quantized."""
    result = tfquant.ptq(model, x_cal, progress=False, steps=("cle", "bias_absorption", "bias_correction"))
    tflite = result.to_tflite()
    out = [("ptq", ops_of(tflite), exact_fraction(tflite, result, x_test))]
    qmodel = tfquant.quantize_model(model)
    assert tfquant.keras.quantization_report(qmodel).status_of(layer) == "quantized"
    tfquant.calibrate(qmodel, x_cal)
    tflite = tfquant.to_tflite(qmodel)
    out.append(("qat", ops_of(tflite), exact_fraction(tflite, qmodel, x_test)))
    return out


def assert_int8_and_exact(results, must_have: list[str]):
    for route, ops, exact in results:
        assert [op for op, is_float in ops if is_float] == [], route      # no float op left
        names = [op for op, _ in ops]
        for op in must_have:
            assert op in names, (route, names)
        assert exact == 1.0, (route, exact)


def test_cause3_batch_norm_after_an_add_is_int8_mul_add_and_exact():
    x = data(32, 10)
    model = with_bn_statistics(bn_after_add(), x)
    results = both_routes(model, x, data(8, 11), "bn")
    # what the converter emits: CONV CONV ADD | MUL ADD (the BN, ReLU fused) | CONV
    for route, ops, _ in results:
        assert [op for op, _ in ops] == ["CONV_2D", "CONV_2D", "ADD", "MUL", "ADD", "CONV_2D"], route
    assert_int8_and_exact(results, ["MUL"])


@pytest.mark.slow
def test_cause3_batch_norm_after_a_concat_is_int8_and_exact():
    x = data(32, 12)
    model = with_bn_statistics(bn_after_concat(), x)
    assert_int8_and_exact(both_routes(model, x, data(8, 13), "bn"), ["CONCATENATION", "MUL", "ADD"])


@pytest.mark.parametrize("kind", ["rescaling", pytest.param("normalization", marks=pytest.mark.slow)])
def test_cause5_preprocessing_layers_are_int8_and_exact(kind):
    model = preprocessing(kind)
    results = both_routes(model, data(32, 14, 0.0, 255.0), data(8, 15, 0.0, 255.0), "pre")
    assert_int8_and_exact(results, ["MUL", "ADD"])


def test_cause6_inception_resnet_scaled_residual_is_int8_and_exact():
    model = scaled_residual()
    (_, ptq_ops, _), (_, qat_ops, _) = results = both_routes(model, data(32, 16), data(8, 17), "scale")
    assert_int8_and_exact(results, ["ADD"])
    assert ("MUL", False) in qat_ops                   # QAT: MUL by the constant scale, then ADD
    assert "MUL" not in [op for op, _ in ptq_ops]      # PTQ folds b * scale into b's conv


def test_an_affine_over_another_axis_stays_float_with_a_reason():
    x = keras.Input(SHAPE)
    y = L.BatchNormalization(axis=1, name="bn")(L.Add()([L.Conv2D(3, 1)(x), x]))
    qmodel = tfquant.quantize_model(keras.Model(x, L.Conv2D(4, 1)(y)))
    report = tfquant.keras.quantization_report(qmodel)
    assert report.status_of("bn") == "float"
    assert "axis other than the last" in str(report)


@pytest.mark.slow
def test_resnet50v2_pre_activation_batch_norms_are_int8_and_exact():
    """keras.applications.ResNet50V2 at a small input: its 17 pre-activation BNs (34 float ops on
    main) become int8 MUL + ADD on both routes, and the simulation is exact."""
    keras.utils.set_random_seed(0)
    model = keras.applications.ResNet50V2(weights=None, input_shape=(32, 32, 3), classes=10)
    x = np.random.default_rng(20).uniform(-1, 1, (32, 32, 32, 3)).astype(np.float32)
    with_bn_statistics(model, x)
    x_test = np.random.default_rng(21).uniform(-1, 1, (8, 32, 32, 3)).astype(np.float32)
    results = both_routes(model, x, x_test, "post_bn")
    assert_int8_and_exact(results, ["MUL", "ADD"])
    for route, ops, _ in results:
        assert [op for op, _ in ops].count("MUL") >= 17, route
