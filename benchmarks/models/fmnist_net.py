"""The Fashion-MNIST benchmark network: a small MobileNet-style CNN, trained once and cached.

Architecture (ARCH_TAG names it; change the tag whenever the layers or the training recipe
change, so that stale cached weights are never loaded):

    input 28x28x1 (float, [0, 1]; see benchmarks.data.fashion_mnist.preprocess)
    stem:   Conv2D 3x3/1 (16) + BN + ReLU6                                     28x28x16
    block1: DepthwiseConv2D 3x3/2 + BN + ReLU6, Conv2D 1x1 (32) + BN + ReLU6    14x14x32
    block2: DepthwiseConv2D 3x3/1 + BN + ReLU6, Conv2D 1x1 (32) + BN, Add       14x14x32
    block3: DepthwiseConv2D 3x3/2 + BN + ReLU6, Conv2D 1x1 (64) + BN + ReLU6      7x7x64
    block4: DepthwiseConv2D 3x3/1 + BN + ReLU6, Conv2D 1x1 (64) + BN, Add         7x7x64
    head:   Conv2D 1x1 (96) + BN + ReLU6, GlobalAveragePooling2D, Dense 10 (logits)

Convs have no bias (BN follows), padding 'same', BN epsilon 1e-3, ReLU6 is its own
`ReLU(6.0)` layer. The residual blocks end in a linear 1x1 projection (conv + BN, no
activation) before the Add, as in MobileNetV2 / EfficientNet-Lite: so the network has both
ReLU6-clipped tensors and signed tensors whose int8 zero point is not a round number.

The builder takes the Keras module as an argument (`_build(keras_module)`): Keras 3 here, and
tf_keras in the TFMOT worker process, so that both rebuild exactly the same layers with the
same names, and weights move between them by name (`save_weights_npz` / `load_weights_npz`).
"""
from __future__ import annotations

import os
import tempfile
import time
from typing import Dict, Optional

import numpy as np

ARCH_TAG = "fmnist_mbnet_v1"
INPUT_SHAPE = (28, 28, 1)
NUM_CLASSES = 10
BN_EPSILON = 1e-3
# 0.9, not Keras' 0.99: the moving statistics must keep up within a short (quick) training.
BN_MOMENTUM = 0.9

# (name, depthwise stride, pointwise filters, residual)
BLOCKS = (("block1", 2, 32, False),
          ("block2", 1, 32, True),
          ("block3", 2, 64, False),
          ("block4", 1, 64, True))
STEM_FILTERS = 16
HEAD_FILTERS = 96

# Training recipe (part of what ARCH_TAG names).
FULL_EPOCHS = 8
QUICK_EPOCHS = 1
QUICK_SAMPLES = 20000
BATCH_SIZE = 128
LEARNING_RATE = 3e-3


def _build(keras_module, name: str = "fmnist_net"):
    """The architecture, in any Keras-2/3-compatible module (`keras` or `tf_keras`)."""
    layers = keras_module.layers

    def bn(x, n):
        return layers.BatchNormalization(epsilon=BN_EPSILON, momentum=BN_MOMENTUM, name=f"{n}_bn")(x)

    def relu6(x, n):
        return layers.ReLU(6.0, name=f"{n}_relu6")(x)

    inputs = keras_module.Input(shape=INPUT_SHAPE, name="image")
    x = layers.Conv2D(STEM_FILTERS, 3, strides=1, padding="same", use_bias=False, name="stem_conv")(inputs)
    x = relu6(bn(x, "stem"), "stem")
    for block, stride, filters, residual in BLOCKS:
        shortcut = x
        x = layers.DepthwiseConv2D(3, strides=stride, padding="same", use_bias=False,
                                   name=f"{block}_dw")(x)
        x = relu6(bn(x, f"{block}_dw"), f"{block}_dw")
        x = layers.Conv2D(filters, 1, padding="same", use_bias=False, name=f"{block}_pw")(x)
        x = bn(x, f"{block}_pw")
        if residual:
            if stride != 1 or shortcut.shape[-1] != filters:
                raise ValueError(f"{block}: a residual block needs stride 1 and equal channels")
            x = layers.Add(name=f"{block}_add")([shortcut, x])
        else:
            x = relu6(x, f"{block}_pw")
    x = layers.Conv2D(HEAD_FILTERS, 1, padding="same", use_bias=False, name="head_conv")(x)
    x = relu6(bn(x, "head"), "head")
    x = layers.GlobalAveragePooling2D(name="pool")(x)
    outputs = layers.Dense(NUM_CLASSES, name="logits")(x)
    return keras_module.Model(inputs, outputs, name=name)


def build_fmnist_net():
    """The untrained network in Keras 3 (seed with keras.utils.set_random_seed first)."""
    import keras

    return _build(keras)


def _compile(model, keras_module, learning_rate: float = LEARNING_RATE, decay_steps: Optional[int] = None):
    lr = learning_rate
    if decay_steps:
        lr = keras_module.optimizers.schedules.CosineDecay(learning_rate, decay_steps, alpha=0.02)
    model.compile(optimizer=keras_module.optimizers.Adam(lr),
                  loss=keras_module.losses.SparseCategoricalCrossentropy(from_logits=True),
                  metrics=["accuracy"])
    return model


def train_fmnist_net(epochs: int = FULL_EPOCHS, seed: int = 0, n_train: Optional[int] = None,
                     batch_size: int = BATCH_SIZE, verbose: int = 0, data=None):
    """Train the network from scratch on Fashion-MNIST (random horizontal flips) and return it.

    `n_train` limits the training set (quick mode); `data` = load_fashion_mnist()'s tuple, to
    avoid reading it again. Test accuracy is set as `model.test_accuracy` and the training wall
    time as `model.train_seconds`."""
    import keras
    import tensorflow as tf

    from benchmarks.data.fashion_mnist import load_fashion_mnist, preprocess

    x_train, y_train, x_test, y_test = data if data is not None else load_fashion_mnist()
    if n_train is not None:
        x_train, y_train = x_train[:n_train], y_train[:n_train]
    x_train, x_test = preprocess(x_train), preprocess(x_test)
    y_train, y_test = y_train.astype(np.int32), y_test.astype(np.int32)

    keras.utils.set_random_seed(seed)
    model = build_fmnist_net()
    steps = epochs * int(np.ceil(len(x_train) / batch_size))
    _compile(model, keras, decay_steps=steps)
    ds = (tf.data.Dataset.from_tensor_slices((x_train, y_train))
          .shuffle(len(x_train), seed=seed, reshuffle_each_iteration=True)
          .batch(batch_size)
          .map(lambda x, y: (tf.image.random_flip_left_right(x, seed=seed), y),
               num_parallel_calls=tf.data.AUTOTUNE)
          .prefetch(tf.data.AUTOTUNE))
    start = time.perf_counter()
    model.fit(ds, epochs=epochs, shuffle=False, verbose=verbose)  # ds is shuffled
    model.train_seconds = time.perf_counter() - start
    _, acc = model.evaluate(x_test, y_test, batch_size=512, verbose=0)
    model.test_accuracy = float(acc)
    return model


def cache_dir() -> str:
    return os.environ.get("TFQUANT_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "tfquant")


def cached_weights_path(quick: bool = False) -> str:
    return os.path.join(cache_dir(), f"{ARCH_TAG}_{'quick' if quick else 'full'}.weights.h5")


def cached_fmnist_net(quick: bool = False, verbose: int = 0):
    """The trained network: trained once (full: FULL_EPOCHS on all 60k images; quick: one epoch
    on QUICK_SAMPLES images, cached separately), its weights cached under $TFQUANT_CACHE or
    ~/.cache/tfquant as `<ARCH_TAG>_{full,quick}.weights.h5`, written atomically."""
    path = cached_weights_path(quick)
    if os.path.isfile(path):
        model = build_fmnist_net()
        model.load_weights(path)
        return model
    if quick:
        model = train_fmnist_net(epochs=QUICK_EPOCHS, n_train=QUICK_SAMPLES, verbose=verbose)
    else:
        model = train_fmnist_net(epochs=FULL_EPOCHS, verbose=verbose)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    # Keras insists on the '.weights.h5' suffix, so the temporary name keeps it.
    fd, tmp = tempfile.mkstemp(prefix=os.path.basename(path) + ".", suffix=".tmp.weights.h5",
                               dir=os.path.dirname(path))
    os.close(fd)
    try:
        model.save_weights(tmp, overwrite=True)
        os.chmod(tmp, 0o644)  # mkstemp makes it 0600
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return model


def save_weights_npz(model, path: str) -> None:
    """Every layer's weights by layer name: key '<layer name>/<i>' for the i-th array of
    layer.get_weights() (Conv2D: kernel; DepthwiseConv2D: kernel [3,3,C,1]; BN: gamma, beta,
    moving mean, moving variance; Dense: kernel, bias) -- the same order in Keras 3 and tf_keras."""
    arrays: Dict[str, np.ndarray] = {}
    for layer in model.layers:
        for i, w in enumerate(layer.get_weights()):
            arrays[f"{layer.name}/{i}"] = np.asarray(w)
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(suffix=".npz", dir=directory)
    os.close(fd)
    try:
        np.savez(tmp, **arrays)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def load_weights_npz(model, path: str) -> None:
    """Set a model's weights from save_weights_npz's file, by layer name (Keras 3 or tf_keras).
    Every weighted layer must be found, with matching shapes."""
    with np.load(path) as data:
        by_layer: Dict[str, Dict[int, np.ndarray]] = {}
        for key in data.files:
            name, i = key.rsplit("/", 1)
            by_layer.setdefault(name, {})[int(i)] = data[key]
    used = set()
    for layer in model.layers:
        current = layer.get_weights()
        if not current:
            continue
        if layer.name not in by_layer:
            raise KeyError(f"{path}: no weights for layer {layer.name!r}")
        stored = by_layer[layer.name]
        new = [stored[i] for i in range(len(stored))]
        if [w.shape for w in new] != [w.shape for w in current]:
            raise ValueError(f"{layer.name}: shapes {[w.shape for w in new]} in {path}, "
                             f"model wants {[w.shape for w in current]}")
        layer.set_weights(new)
        used.add(layer.name)
    unused = set(by_layer) - used
    if unused:
        raise KeyError(f"{path}: weights for layers the model lacks: {sorted(unused)}")
