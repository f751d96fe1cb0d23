"""Average pooling: AVERAGE_POOL_2D keeps its input's grid (no quantizer of its own); global
average pooling becomes MEAN, which has its own output grid.

Exact mode: `tfquant.core.quantized_avg_pool` / `quantized_mean` (TFLite's integer rounding).
1-D poolings run as their 2-D form on [N, L, 1, C].
"""
from __future__ import annotations

import keras
import tensorflow as tf

from tfquant.core import QuantSpec, fake_quant, quantized_avg_pool, quantized_mean
from tfquant.errors import SpecError
from tfquant.keras.layers.base import QuantLayer, is_exact
from tfquant.keras.quantizers import ActivationQuantizer, bypassed, calibrating, deserialize, serialize

L = keras.layers


def _layer(obj):
    return obj if isinstance(obj, keras.layers.Layer) else keras.layers.deserialize(obj)


@keras.saving.register_keras_serializable(package="tfquant")
class QuantAveragePooling(QuantLayer):
    """AveragePooling1D / AveragePooling2D on the input's grid."""

    def __init__(self, layer, **kwargs):
        kwargs.pop("shared_output", None)
        super().__init__(**kwargs)
        self.layer = _layer(layer)
        if type(self.layer) not in (L.AveragePooling1D, L.AveragePooling2D):
            raise SpecError(f"QuantAveragePooling takes AveragePooling1D/2D, got {type(self.layer).__name__}.")

    def build(self, input_shape):
        pass

    def compute_output_shape(self, input_shape):
        return self.layer.compute_output_shape(input_shape)

    def output_quantizer(self, index: int = 0):
        return self.input_quantizer(0)

    def call(self, x, training=None):
        layer = self.layer
        one_d = isinstance(layer, L.AveragePooling1D)
        # 1-D: [N, L, 1, C] with the stride repeated on the unit width (same result, and the
        # exact AVERAGE_POOL_2D emulation needs equal strides).
        pool = (layer.pool_size[0], 1) if one_d else tuple(layer.pool_size)
        strides = (layer.strides[0], layer.strides[0]) if one_d else tuple(layer.strides)
        x4 = tf.expand_dims(x, 2) if one_d else x
        if calibrating() or bypassed(getattr(self.input_quantizer(0), "name", None)):
            y = tf.nn.avg_pool2d(x4, pool, strides, layer.padding.upper())
        else:
            y = quantized_avg_pool(x4, pool, strides, layer.padding.upper(), input_range=self.input_range(0))
        return tf.squeeze(y, 2) if one_d else y

    def get_config(self):
        config = super().get_config()
        config.pop("shared_output", None)
        config["layer"] = keras.layers.serialize(self.layer)
        return config


@keras.saving.register_keras_serializable(package="tfquant")
class QuantSharedGrid(QuantLayer):
    """Identity on its input's grid, for the output of a pass-through op (max pool, ...) read by
    an average pool and by other layers: the average pool's output FakeQuant has the same grid,
    and the converter carries it back onto the average pool's input only, so the other readers
    got the float tensor and ran in float. A FakeQuant with the producer's range here (a no-op on
    values already on it; none in exact mode) gives every reader the int8 tensor."""

    def __init__(self, **kwargs):
        kwargs.pop("shared_output", None)
        super().__init__(**kwargs)

    def build(self, input_shape):
        pass

    def compute_output_shape(self, input_shape):
        return input_shape

    def output_quantizer(self, index: int = 0):
        return self.input_quantizer(0)

    def call(self, x, training=None):
        q = self.input_quantizer(0)
        if q is None or calibrating() or bypassed(getattr(q, "name", None)) or is_exact(bool(training)):
            return x
        return fake_quant(x, *q.range(), QuantSpec.activation())

    def get_config(self):
        config = super().get_config()
        config.pop("shared_output", None)
        return config


@keras.saving.register_keras_serializable(package="tfquant")
class QuantGlobalAveragePooling(QuantLayer):
    """GlobalAveragePooling1D / 2D as TFLite's MEAN, with its own output range."""

    adoptable = True

    def __init__(self, axes=(1, 2), keepdims: bool = False, activation_quantizer=None,
                 shared_output: bool = False, **kwargs):
        super().__init__(shared_output=shared_output, **kwargs)
        self.axes = [int(a) for a in axes]
        self.keepdims = bool(keepdims)
        self.activation_quantizer = deserialize(activation_quantizer) or ActivationQuantizer()

    def build(self, input_shape):
        self._build_output_quantizer(ActivationQuantizer.from_config(self.activation_quantizer.get_config()))

    def compute_output_shape(self, input_shape):
        shape = list(input_shape)
        if self.keepdims:
            for a in self.axes:
                shape[a] = 1
            return tuple(shape)
        return tuple(s for i, s in enumerate(shape) if i not in self.axes)

    def call(self, x, training=None):
        y = tf.reduce_mean(x, axis=self.axes, keepdims=self.keepdims)

        def exact(output_range):
            return quantized_mean(x, self.axes, input_range=self.input_range(0), output_range=output_range,
                                  keepdims=self.keepdims)
        return self._quantize_output(y, training, exact=exact)

    def get_config(self):
        config = super().get_config()
        config.update({"axes": self.axes, "keepdims": self.keepdims,
                       "activation_quantizer": serialize(self.activation_quantizer)})
        return config



