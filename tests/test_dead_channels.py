"""A dead or near-dead channel (zero kernel with a bias, BN gamma 0, a 1e-12 kernel) keeps the
exact simulation equal to TFLite: the converter saturates such a channel's bias to int32 (its
weight scale is tiny), and the simulation must saturate it too, not wrap it."""
import keras
import numpy as np
import pytest

import tfquant

L = keras.layers


def model_with_dead_channels() -> keras.Model:
    keras.utils.set_random_seed(0)
    inp = keras.Input((8, 8, 3))
    conv = L.Conv2D(4, 3, padding="same", name="c")
    x = L.ReLU()(conv(inp))
    bn_conv = L.Conv2D(4, 1, use_bias=False, name="d")
    bn = L.BatchNormalization(name="bn")
    x = L.ReLU()(bn(bn_conv(x)))
    model = keras.Model(inp, L.Dense(3, name="head")(L.GlobalAveragePooling2D()(x)))
    k, b = conv.get_weights()
    k[..., 0], b[0] = 0.0, -1.0                 # dead: no weights, a negative bias
    k[..., 1], b[1] = 1e-12, 0.5                # near-dead
    conv.set_weights([k, b])
    gamma, beta, mean, var = bn.get_weights()
    gamma[2], beta[2] = 0.0, 0.7                # BN switched the channel off: a constant
    bn.set_weights([gamma, beta, mean + 0.1, var + 0.5])
    return model


def data(n, seed):
    return np.random.default_rng(seed).uniform(-1, 1, (n, 8, 8, 3)).astype(np.float32)


@pytest.mark.parametrize("route", ["ptq", "qat"])
def test_dead_channels_stay_exact(route):
    model = model_with_dead_channels()
    if route == "ptq":
        sim = tfquant.ptq(model, data(64, 0), progress=False, steps=("cle", "bias_absorption", "bias_correction"))
        tflite = sim.to_tflite()
    else:
        sim = tfquant.quantize_model(model)
        tfquant.keras.calibrate(sim, data(64, 0))
        tflite = tfquant.to_tflite(sim)
    report = tfquant.inspect(tflite)
    biases = [report.tensors[op.inputs[2]].data for op in report.ops_of_type("CONV_2D")]
    assert any(int(b.min()) == -2**31 for b in biases)          # the converter saturated the dead bias
    result = tfquant.verify(tflite, sim, data(16, 1), kernels=("reference",))
    assert result.exact_fraction == 1.0, result.table()
    assert all(t.exact == 1.0 for t in result.tensors), result.table()
