"""`QuantizeWrapper`: quantize a layer tfquant does not know, as its `QuantizeConfig` says.

While the wrapped layer's `call` runs, each weight attribute named in the config holds its
fake-quantized value (last-value symmetric range, per channel on the last axis or per tensor);
the output gets an activation quantizer if the config asks for one. This is the generic path (no
BN folding, no bias rounding, no exact emulation): use it for layers whose TFLite lowering is one
int8 op the converter can quantize from FakeQuant ranges.
"""
from __future__ import annotations

import inspect

import keras
import tensorflow as tf

from tfquant.core import fake_quant, kernel_range
from tfquant.keras.layers.base import QuantLayer
from tfquant.keras.quantizers import ActivationQuantizer, WeightQuantizer, calibrating, deserialize, serialize
from tfquant.keras.registry import QuantizeConfig


@keras.saving.register_keras_serializable(package="tfquant")
class QuantizeWrapper(QuantLayer):
    def __init__(self, layer, config, weight_quantizer=None, activation_quantizer=None,
                 shared_output: bool = False, **kwargs):
        super().__init__(shared_output=shared_output, **kwargs)
        self.layer = layer if isinstance(layer, keras.layers.Layer) else keras.saving.deserialize_keras_object(layer)
        self.quantize_config = config if isinstance(config, QuantizeConfig) else deserialize(config)
        self.weight_quantizer = (self.quantize_config.weight_quantizer or deserialize(weight_quantizer)
                                 or WeightQuantizer())
        self.activation_quantizer = (self.quantize_config.activation_quantizer or deserialize(activation_quantizer)
                                     or ActivationQuantizer())
        self._call_takes_training = "training" in inspect.signature(self.layer.call).parameters

    @property
    def adoptable(self) -> bool:
        return self.quantize_config.quantize_output

    def build(self, input_shape):
        if not self.layer.built:
            self.layer.build(input_shape)
        if self.quantize_config.quantize_output:
            self._build_output_quantizer(ActivationQuantizer.from_config(self.activation_quantizer.get_config()))

    def output_quantizer(self, index: int = 0):
        return super().output_quantizer(index) if self.quantize_config.quantize_output else None

    def quantizers(self) -> dict:
        return super().quantizers() if self.quantize_config.quantize_output else {}

    def call(self, x, training=None):
        kwargs = {"training": training} if self._call_takes_training else {}
        if calibrating():
            y = self.layer.call(x, **kwargs)
        else:
            saved = {}
            spec = self.weight_quantizer.spec()
            try:
                for name in self.quantize_config.weights:
                    value = getattr(self.layer, name)
                    saved[name] = value
                    w = tf.convert_to_tensor(value)
                    lo, hi = kernel_range(w, False, spec.per_channel)
                    object.__setattr__(self.layer, name, fake_quant(w, lo, hi, spec))
                y = self.layer.call(x, **kwargs)
            finally:
                for name, value in saved.items():
                    object.__setattr__(self.layer, name, value)
        if not self.quantize_config.quantize_output:
            return y
        return self._quantize_output(y, training)

    def get_config(self):
        config = super().get_config()
        config.update({"layer": keras.saving.serialize_keras_object(self.layer),
                       "config": serialize(self.quantize_config),
                       "weight_quantizer": serialize(self.weight_quantizer),
                       "activation_quantizer": serialize(self.activation_quantizer)})
        return config
