"""Small float models for the PTQ tests: Keras 3, tf_keras (in a subprocess) and tf.Module.

Batch norms get non-trivial statistics and some channels much larger weights than others, so
that folding, equalization and bias correction have something to do.
"""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import numpy as np
import tensorflow as tf

INPUT_SHAPE = (16, 16, 3)


def randomize_bn(layer, rng, beta_scale: float = 0.3, gamma=(0.5, 2.0)):
    c = layer.gamma.shape[0]
    layer.set_weights([rng.uniform(*gamma, c).astype("f4"), (rng.standard_normal(c) * beta_scale).astype("f4"),
                       (rng.standard_normal(c) * 0.2).astype("f4"), rng.uniform(0.3, 2.0, c).astype("f4")])


def unbalance(layer, rng, factor: float = 8.0):
    """Scale a few output channels of a conv kernel up: uneven ranges for CLE to fix."""
    w = layer.get_weights()
    k = w[0]
    c = k.shape[-1] if k.shape[-1] > 1 else k.shape[-2]
    scale = np.ones(c, np.float32)
    scale[rng.choice(c, max(1, c // 4), replace=False)] = factor
    if type(layer).__name__ == "DepthwiseConv2D":
        w[0] = k * scale[None, None, :, None]
    else:
        w[0] = k * scale
    layer.set_weights(w)


def keras3_model(seed: int = 0, activation: str = "relu6", softmax: bool = True):
    """conv3x3/2 + BN + act -> depthwise + BN + act -> 1x1 conv + BN -> residual add ->
    1x1 conv + BN + act -> pad -> depthwise (valid) + BN + act -> concat with a 1x1 branch ->
    GAP -> dense -> softmax."""
    import keras
    from keras import layers

    rng = np.random.default_rng(seed)
    keras.utils.set_random_seed(seed)

    def act(x):
        return layers.ReLU(6.0)(x) if activation == "relu6" else layers.ReLU()(x)

    inp = keras.Input(INPUT_SHAPE)
    x = layers.Conv2D(8, 3, strides=2, padding="same", use_bias=False, name="stem")(inp)
    x = layers.BatchNormalization(name="stem_bn")(x)
    s = act(x)
    x = layers.DepthwiseConv2D(3, padding="same", use_bias=False, name="dw")(s)
    x = layers.BatchNormalization(name="dw_bn")(x)
    x = act(x)
    x = layers.Conv2D(8, 1, use_bias=False, name="project")(x)
    x = layers.BatchNormalization(name="project_bn")(x)
    x = layers.Add()([s, x])
    x = layers.Conv2D(16, 1, use_bias=False, name="expand")(x)
    x = layers.BatchNormalization(name="expand_bn")(x)
    x = act(x)
    x = layers.ZeroPadding2D(1)(x)
    x = layers.DepthwiseConv2D(3, padding="valid", use_bias=False, name="dw2")(x)
    x = layers.BatchNormalization(name="dw2_bn")(x)
    x = act(x)
    b = layers.Conv2D(4, 1, name="branch")(x)
    x = layers.Concatenate()([x, b])
    x = layers.GlobalAveragePooling2D()(x)
    x = layers.Dense(10, name="logits")(x)
    if softmax:
        x = layers.Softmax()(x)
    model = keras.Model(inp, x)
    for layer in model.layers:
        if isinstance(layer, layers.BatchNormalization):
            randomize_bn(layer, rng)
    for name in ("stem", "dw", "expand"):
        unbalance(model.get_layer(name), rng)
    return model


def chain_model(seed: int = 0, activation: str = "relu", length: int = 3, high_bias: bool = False,
                first_kernel: int = 3):
    """conv -> BN -> act -> [depthwise | conv 1x1] ... : one CLE chain, no residual.

    `high_bias`: batch norms with large beta and small gamma (pre-activations mostly > 0)."""
    import keras
    from keras import layers

    rng = np.random.default_rng(seed)
    keras.utils.set_random_seed(seed)
    inp = keras.Input(INPUT_SHAPE)
    x = inp
    for i in range(length):
        if i == 0:
            x = layers.Conv2D(8, first_kernel, padding="same", use_bias=False, name=f"l{i}")(x)
        elif i % 2 == 1:
            x = layers.DepthwiseConv2D(3, padding="same", use_bias=False, name=f"l{i}")(x)
        else:
            x = layers.Conv2D(8, 1, use_bias=False, name=f"l{i}")(x)
        x = layers.BatchNormalization(name=f"bn{i}")(x)
        if i < length - 1:
            x = layers.ReLU(6.0)(x) if activation == "relu6" else layers.ReLU()(x)
    model = keras.Model(inp, x)
    for i in range(length):
        bn = model.get_layer(f"bn{i}")
        if high_bias and i < length - 1:
            randomize_bn(bn, rng, beta_scale=0.0, gamma=(0.05, 0.2))
            w = bn.get_weights()
            w[1] = rng.uniform(2.0, 4.0, w[1].shape).astype("f4")
            bn.set_weights(w)
        else:
            randomize_bn(bn, rng)
        unbalance(model.get_layer(f"l{i}"), rng)
    return model


def export_keras3(model, path: str) -> str:
    model.export(path, format="tf_saved_model", verbose=False)
    return path


TF_KERAS_SCRIPT = textwrap.dedent('''
    import os, sys
    os.environ["TF_USE_LEGACY_KERAS"] = "1"
    os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
    import numpy as np
    import tensorflow as tf
    import tf_keras as keras
    from tf_keras import layers
    rng = np.random.default_rng(0)
    inp = keras.Input((16, 16, 3))
    x = layers.ZeroPadding2D(1)(inp)
    x = layers.Conv2D(8, 3, strides=2, use_bias=False)(x)
    x = layers.BatchNormalization()(x)
    x = layers.ReLU(6.0)(x)
    x = layers.DepthwiseConv2D(3, padding="same", use_bias=False)(x)
    x = layers.BatchNormalization()(x)
    x = layers.Activation("relu")(x)
    x = layers.Conv2D(8, 1)(x)
    x = layers.AveragePooling2D(2)(x)
    x = layers.Flatten()(x)
    x = layers.Dense(10)(x)
    model = keras.Model(inp, x)
    for layer in model.layers:
        if isinstance(layer, layers.BatchNormalization):
            c = layer.gamma.shape[0]
            layer.set_weights([rng.uniform(0.5, 2, c), rng.standard_normal(c) * 0.3,
                               rng.standard_normal(c) * 0.2, rng.uniform(0.3, 2, c)])
    tf.saved_model.save(model, sys.argv[1])
''')


def export_tf_keras(path: str) -> str:
    """A tf_keras (Keras 2) model saved as a SavedModel, written by a subprocess (the legacy
    Keras cannot share a process with Keras 3)."""
    env = dict(os.environ, TF_USE_LEGACY_KERAS="1", TF_CPP_MIN_LOG_LEVEL="3")
    subprocess.run([sys.executable, "-c", TF_KERAS_SCRIPT, path], check=True, env=env,
                   capture_output=True, timeout=300)
    return path


class ModuleModel(tf.Module):
    """A plain tf.Module: conv + fused batch norm + ReLU, depthwise + ReLU6, an op the IR does
    not know (sigmoid gate), global mean, matmul; returns a dict."""

    def __init__(self, seed: int = 0, gate: bool = True):
        super().__init__()
        rng = np.random.default_rng(seed)
        self.gate = gate
        self.w = tf.Variable(rng.standard_normal((3, 3, 3, 8)).astype("f4") * 0.4)
        self.gamma = tf.Variable(rng.uniform(0.5, 2.0, 8).astype("f4"))
        self.beta = tf.Variable((rng.standard_normal(8) * 0.3).astype("f4"))
        self.mean = tf.Variable((rng.standard_normal(8) * 0.2).astype("f4"))
        self.var = tf.Variable(rng.uniform(0.3, 2.0, 8).astype("f4"))
        self.dw = tf.Variable(rng.standard_normal((3, 3, 8, 1)).astype("f4") * 0.4)
        self.dw_b = tf.Variable((rng.standard_normal(8) * 0.1).astype("f4"))
        self.fc = tf.Variable(rng.standard_normal((8, 5)).astype("f4") * 0.5)
        self.fc_b = tf.Variable((rng.standard_normal(5) * 0.1).astype("f4"))

    @tf.function(input_signature=[tf.TensorSpec([None, *INPUT_SHAPE], tf.float32)])
    def __call__(self, x):
        y = tf.nn.conv2d(x, self.w, 1, "SAME")
        y, _, _ = tf.compat.v1.nn.fused_batch_norm(y, self.gamma, self.beta, self.mean, self.var,
                                                   is_training=False)
        y = tf.nn.relu(y)
        y = tf.nn.relu6(tf.nn.depthwise_conv2d(y, self.dw, [1, 1, 1, 1], "SAME") + self.dw_b)
        if self.gate:
            y = y * tf.sigmoid(y)
        y = tf.reduce_mean(y, [1, 2])
        return {"scores": tf.matmul(y, self.fc) + self.fc_b}


def export_module(path: str, **kwargs) -> str:
    m = ModuleModel(**kwargs)
    tf.saved_model.save(m, path)
    return path


def data(n: int, seed: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).uniform(-1.0, 1.0, (n, *INPUT_SHAPE)).astype(np.float32)


def signature_fn(path: str):
    """(call(x) -> first output as numpy) of a SavedModel's serving_default."""
    loaded = tf.saved_model.load(path)
    fn = loaded.signatures["serving_default"]
    key = list(fn.structured_input_signature[1])[0]

    def call(x):
        out = fn(**{key: tf.constant(x)})
        return np.asarray(out[sorted(out)[0]])

    call.loaded = loaded
    return call


def first_output(y) -> np.ndarray:
    if isinstance(y, dict):
        return np.asarray(y[sorted(y)[0]])
    if isinstance(y, (list, tuple)):
        return np.asarray(y[0])
    return np.asarray(y)


def rel_error(a, b) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.linalg.norm(a - b) / max(np.linalg.norm(a), 1e-30))
