"""Upsampling. `NearestUpSampling` replaces Keras' nearest UpSampling1D / UpSampling2D, which
Keras computes with `repeat` (TILE ops, which TFLite's reference kernels lack for int8), by
RESIZE_NEAREST_NEIGHBOR: values are copied, so it is a pass-through on its input's grid.

`QuantResize`: UpSampling2D with bilinear interpolation — RESIZE_BILINEAR keeps its input's grid,
so the interpolated values are fake-quantized with the input's range (no quantizer of its own).
Nearest-neighbour upsampling is a pass-through (its values are its input's). No exact emulation
of RESIZE_BILINEAR's integer rounding: the fake-quant path is used in both modes."""
from __future__ import annotations

import keras

import tensorflow as tf

from tfquant.core import QuantSpec, fake_quant
from tfquant.keras.layers.base import QuantLayer
from tfquant.keras.quantizers import bypassed, calibrating
from tfquant.keras.registry import register_passthrough

ACT = QuantSpec.activation()


@keras.saving.register_keras_serializable(package="tfquant")
class QuantResize(QuantLayer):
    def __init__(self, layer, **kwargs):
        kwargs.pop("shared_output", None)
        super().__init__(**kwargs)
        self.layer = layer if isinstance(layer, keras.layers.Layer) else keras.layers.deserialize(layer)

    def build(self, input_shape):
        if not self.layer.built:
            self.layer.build(input_shape)

    def compute_output_shape(self, input_shape):
        return self.layer.compute_output_shape(input_shape)

    def output_quantizer(self, index: int = 0):
        return self.input_quantizer(0)

    def call(self, x, training=None):
        y = self.layer.call(x)
        if calibrating() or bypassed(getattr(self.input_quantizer(0), "name", None)):
            return y
        return fake_quant(y, *self.input_range(0), ACT)

    def get_config(self):
        config = super().get_config()
        config.pop("shared_output", None)
        config["layer"] = keras.layers.serialize(self.layer)
        return config


@register_passthrough
@keras.saving.register_keras_serializable(package="tfquant")
class NearestUpSampling(keras.layers.Layer):
    """Nearest-neighbour upsampling by integer factors as one RESIZE_NEAREST_NEIGHBOR op.

    `size`: (rows, cols) for [N, H, W, C] inputs, or (steps,) for [N, L, C] inputs.
    """

    def __init__(self, size, **kwargs):
        super().__init__(**kwargs)
        self.size = tuple(int(s) for s in (size if isinstance(size, (list, tuple)) else (size,)))

    def compute_output_shape(self, input_shape):
        shape = list(input_shape)
        for i, s in enumerate(self.size):
            shape[1 + i] = None if shape[1 + i] is None else shape[1 + i] * s
        return tuple(shape)

    def call(self, x):
        dims = [x.shape[1 + i] if x.shape[1 + i] is not None else tf.shape(x)[1 + i] for i in range(len(self.size))]
        target = [d * s for d, s in zip(dims, self.size)]
        if len(self.size) == 1:
            return tf.squeeze(tf.image.resize(tf.expand_dims(x, 2), [target[0], 1], method="nearest"), 2)
        return tf.image.resize(x, target, method="nearest")

    def get_config(self):
        config = super().get_config()
        config["size"] = list(self.size)
        return config
