"""Small float Keras models covering every layer tfquant's QAT quantizes, and the train -> export
-> inspect -> verify routine the tests run on them."""
from __future__ import annotations

import dataclasses

import keras
import numpy as np
import tensorflow as tf

import tfquant
from tfquant.export.converter import FAKE_QUANT_OPS, concrete_function_of

L = keras.layers


# ---- models --------------------------------------------------------------------------------
def convnet():
    """Conv+BN+ReLU6, depthwise+BN+ReLU, 1x1 conv, Add+ReLU, Concatenate (every input shared),
    ZeroPadding, MaxPool, AveragePool, GlobalAveragePool, Dense, Softmax."""
    inp = keras.Input((16, 16, 3), name="image")
    x = L.Conv2D(8, 3, padding="same", use_bias=False, name="stem")(inp)
    x = L.BatchNormalization(name="stem_bn")(x)
    x = L.ReLU(6.0, name="stem_relu6")(x)
    y = L.DepthwiseConv2D(3, padding="same", name="dw")(x)
    y = L.BatchNormalization(name="dw_bn")(y)
    y = L.ReLU(name="dw_relu")(y)
    y = L.Conv2D(8, 1, name="pw")(y)
    s = L.Add(name="residual")([x, y])
    s = L.ReLU(name="residual_relu")(s)
    a = L.Conv2D(4, 1, activation="relu", name="branch_a")(s)
    b = L.Conv2D(4, 3, padding="same", name="branch_b")(s)
    b = L.MaxPooling2D(3, strides=1, padding="same", name="branch_b_pool")(b)
    c = L.Concatenate(name="concat")([a, b])
    c = L.ZeroPadding2D(1, name="pad")(c)
    c = L.AveragePooling2D(2, name="avg_pool")(c)
    g = L.GlobalAveragePooling2D(name="gap")(c)
    out = L.Dense(10, activation="softmax", name="classifier")(g)
    return keras.Model(inp, out, name="convnet")


def sequence_net():
    """A Sequential 1-D model: Conv1D+BN+ReLU, causal dilated Conv1D with ReLU6, MaxPool1D,
    AveragePool1D, UpSampling1D, GlobalAveragePool1D, Dense+BN."""
    return keras.Sequential([
        keras.Input((32, 4)),
        L.Conv1D(8, 3, padding="same", use_bias=False),
        L.BatchNormalization(),
        L.ReLU(),
        L.Conv1D(8, 3, padding="causal", dilation_rate=2, activation="relu6"),
        L.MaxPooling1D(2),
        L.AveragePooling1D(2),
        L.UpSampling1D(2),
        L.GlobalAveragePooling1D(),
        L.Dense(6),
        L.BatchNormalization(),
    ], name="sequence_net")


def decoder_net():
    """SeparableConv2D+BN+ReLU6, strided Conv2D, Conv2DTranspose+BN+ReLU, nearest UpSampling2D,
    Reshape, Flatten, Dense (on a rank-3 tensor too)."""
    inp = keras.Input((12, 12, 3))
    x = L.SeparableConv2D(8, 3, padding="same", depth_multiplier=2, use_bias=False)(inp)
    x = L.BatchNormalization()(x)
    x = L.ReLU(6.0)(x)
    x = L.Conv2D(8, 3, strides=2, padding="same")(x)
    x = L.Conv2DTranspose(6, 3, strides=2, padding="same")(x)
    x = L.BatchNormalization()(x)
    x = L.Activation("relu")(x)
    x = L.UpSampling2D(2)(x)
    x = L.MaxPooling2D(4)(x)
    x = L.Reshape((36, 6))(x)
    x = L.Dense(4, activation="relu")(x)
    x = L.Flatten()(x)
    return keras.Model(inp, L.Dense(5)(x), name="decoder_net")


def gating_net():
    """Standalone activations with TFLite's fixed grids (sigmoid, tanh), SiLU (LOGISTIC + MUL),
    Multiply, Subtract, a Concatenate whose input also feeds another layer (requantized), and
    a Softmax layer."""
    inp = keras.Input((8, 8, 4))
    a = L.Conv2D(8, 1, activation="sigmoid")(inp)
    b = L.Conv2D(8, 1, activation="tanh")(inp)
    g = L.Multiply()([a, b])
    d = L.Conv2D(8, 1)(inp)
    e = L.Subtract()([g, d])
    f = L.Activation("silu")(e)
    h = L.Conv2D(8, 1)(f)
    c = L.Concatenate()([f, h])
    p = L.GlobalAveragePooling2D()(c)
    return keras.Model(inp, L.Softmax()(L.Dense(6)(p)), name="gating_net")


def nested_net():
    """A Sequential block and a Functional block used as layers inside a Functional model."""
    block = keras.Sequential([keras.Input((8, 8, 4)), L.Conv2D(4, 3, padding="same", use_bias=False),
                              L.BatchNormalization(), L.ReLU()], name="seq_block")
    inner_in = keras.Input((8, 8, 4))
    inner = keras.Model(inner_in, L.Add()([inner_in, L.Conv2D(4, 1)(inner_in)]), name="func_block")
    inp = keras.Input((8, 8, 4))
    x = block(inp)
    x = inner(x)
    x = L.ReLU()(x)
    x = L.GlobalAveragePooling2D()(x)
    return keras.Model(inp, L.Dense(3)(x), name="nested_net")


MODELS = {"convnet": convnet, "sequence_net": sequence_net, "decoder_net": decoder_net,
          "gating_net": gating_net, "nested_net": nested_net}


# ---- the routine ------------------------------------------------------------------------------
def sample_data(model, n: int, seed: int = 0, scale: float = 1.0):
    rng = np.random.default_rng(seed)
    x = rng.uniform(-scale, scale, (n, *model.inputs[0].shape[1:])).astype(np.float32)
    y = rng.normal(0.0, 1.0, (n, *model.outputs[0].shape[1:])).astype(np.float32)
    return x, y


@dataclasses.dataclass
class Exported:
    model: keras.Model
    qmodel: keras.Model
    tflite: bytes
    report: object
    x_test: np.ndarray


def train_and_export(build, config=None, steps: int = 4, batch: int = 16, seed: int = 0,
                     scale: float = 1.0) -> Exported:
    keras.utils.set_random_seed(seed)
    model = build()
    qmodel = tfquant.quantize_model(model, config)
    x, y = sample_data(model, steps * batch, seed, scale)
    qmodel.compile(keras.optimizers.Adam(1e-3), "mse")
    qmodel.fit(x, y, batch_size=batch, epochs=1, shuffle=False, verbose=0)
    tflite = tfquant.to_tflite(qmodel)
    x_test, _ = sample_data(model, 128, seed + 1, scale)
    return Exported(model, qmodel, tflite, tfquant.inspect(tflite), x_test)


def fake_quant_graph_ops(qmodel):
    """The ops of the fake-quant graph the converter reads."""
    return concrete_function_of(qmodel).graph.get_operations()


def back_to_back_fake_quants(qmodel) -> list[str]:
    """FakeQuant ops whose input comes (through Identity ops) from another FakeQuant."""
    bad = []
    for op in fake_quant_graph_ops(qmodel):
        if op.type not in FAKE_QUANT_OPS:
            continue
        src = op.inputs[0].op
        while src.type == "Identity":
            src = src.inputs[0].op
        if src.type in FAKE_QUANT_OPS:
            bad.append(f"{src.name} -> {op.name}")
    return bad


def requantize_ops(report) -> list:
    """QUANTIZE ops from an int8 tensor to another int8 tensor (a requantization)."""
    return [op for op in report.ops_of_type("QUANTIZE") if report.tensors[op.inputs[0]].dtype == "INT8"]


def fidelity_line(name: str, result) -> str:
    parts = [f"{o.kernels}: exact {100 * o.fidelity.exact:.2f}% <=1 LSB {100 * o.fidelity.within_one:.2f}% "
             f"max {o.fidelity.max_lsb}" for o in result.outputs]
    return f"[verify] {name}: " + "; ".join(parts)


def tf_seed(seed: int) -> None:
    keras.utils.set_random_seed(seed)
    tf.random.set_seed(seed)
