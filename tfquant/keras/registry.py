"""Which Keras layers tfquant's QAT knows, and the public API to teach it yours.

    tfquant.keras.register_quantize_config(MyLayer, QuantizeConfig(weights=["kernel"]))
    tfquant.keras.register_passthrough(MyReshape)     # values stay on their input's grid

A `QuantizeConfig` says what to quantize in a layer tfquant does not know: the names of its
weight attributes (fake-quantized with `weight_quantizer`, per output channel on the last axis
or per tensor) and whether its output gets an activation quantizer. `quantize_model` then wraps
the layer in a `QuantizeWrapper`. Pass-through layers (reshape, flatten, max pool, padding,
dropout, ...) get no quantizer: their outputs stay on their input's grid, which TFLite requires.
"""
from __future__ import annotations

from typing import Any, Optional, Sequence

import keras

from tfquant.core.op_rules import NO_OP, SAME_SCALE_OPS, keeps_input_grid
from tfquant.keras.quantizers import ActivationQuantizer, WeightQuantizer, deserialize, serialize

L = keras.layers

# Keras layer -> the TFLite op it becomes, for layers whose output values lie on their input's
# integer grid (`core.op_rules.keeps_input_grid`); NO_OP: nothing on the device.
_PASSTHROUGH: dict[type, Optional[str]] = {
    L.Reshape: "RESHAPE", L.Flatten: "RESHAPE", L.Permute: "TRANSPOSE", L.RepeatVector: "TILE", L.Identity: NO_OP,
    L.MaxPooling1D: "MAX_POOL_2D", L.MaxPooling2D: "MAX_POOL_2D", L.MaxPooling3D: "MAX_POOL_3D",
    L.GlobalMaxPooling1D: "REDUCE_MAX", L.GlobalMaxPooling2D: "REDUCE_MAX",
    L.ZeroPadding1D: "PAD", L.ZeroPadding2D: "PAD", L.Cropping1D: "STRIDED_SLICE", L.Cropping2D: "STRIDED_SLICE",
    L.Dropout: NO_OP, L.SpatialDropout1D: NO_OP, L.SpatialDropout2D: NO_OP, L.GaussianNoise: NO_OP,
    L.GaussianDropout: NO_OP, L.AlphaDropout: NO_OP, L.ActivityRegularization: NO_OP,
}


def register_passthrough(layer_class: type, tflite_op: Optional[str] = NO_OP) -> type:
    """Declare that `layer_class` only moves values (its outputs stay on its input's grid): it
    becomes `tflite_op` on the device (one of `core.op_rules.SAME_SCALE_OPS`), or no op."""
    if not (isinstance(layer_class, type) and issubclass(layer_class, keras.layers.Layer)):
        raise TypeError(f"register_passthrough expects a Keras layer class, got {layer_class!r}.")
    if not keeps_input_grid(tflite_op):
        raise ValueError(f"{tflite_op!r} does not keep its input's grid in TFLite; pass-through ops are "
                         f"{sorted(SAME_SCALE_OPS)} (or None: no op on the device).")
    _PASSTHROUGH[layer_class] = tflite_op
    return layer_class


def is_passthrough(layer) -> bool:
    t = type(layer)
    if t in _PASSTHROUGH:
        return keeps_input_grid(_PASSTHROUGH[t])
    if t is L.Activation:
        return keras.activations.serialize(layer.activation) == "linear"
    return False


@keras.saving.register_keras_serializable(package="tfquant")
class QuantizeConfig:
    """How to quantize a layer tfquant does not know (the counterpart of TFMOT's QuantizeConfig).

    Args:
      weights: names of the layer's weight attributes to fake-quantize (e.g. ["kernel"]). The
        output channel must be the last axis for per-channel quantization.
      quantize_output: give the layer's output an activation quantizer (int8 on device).
      weight_quantizer: defaults to the model's (per-channel symmetric 8-bit).
      activation_quantizer: defaults to the model's (moving-average int8).

    The weight attributes must be plain attributes holding variables (not read-only properties):
    the wrapper swaps in their fake-quantized values while the layer's `call` runs.
    """

    def __init__(self, weights: Sequence[str] = (), quantize_output: bool = True,
                 weight_quantizer: Optional[WeightQuantizer] = None,
                 activation_quantizer: Optional[ActivationQuantizer] = None):
        if isinstance(weights, str):
            weights = [weights]
        self.weights = list(weights)
        self.quantize_output = bool(quantize_output)
        self.weight_quantizer = deserialize(weight_quantizer)
        self.activation_quantizer = deserialize(activation_quantizer)

    def get_config(self) -> dict[str, Any]:
        return {"weights": self.weights, "quantize_output": self.quantize_output,
                "weight_quantizer": serialize(self.weight_quantizer),
                "activation_quantizer": serialize(self.activation_quantizer)}

    @classmethod
    def from_config(cls, config):
        return cls(**config)

    def __repr__(self):
        return f"QuantizeConfig(weights={self.weights}, quantize_output={self.quantize_output})"


_CUSTOM: dict[type, QuantizeConfig] = {}


def register_quantize_config(layer_class: type, config: QuantizeConfig) -> None:
    """Quantize every `layer_class` layer (exact type) of a model with `config`.

    Also overrides tfquant's own handling of a built-in layer class, if you register one.
    """
    if not (isinstance(layer_class, type) and issubclass(layer_class, keras.layers.Layer)):
        raise TypeError(f"register_quantize_config expects a Keras layer class, got {layer_class!r}.")
    if not isinstance(config, QuantizeConfig):
        raise TypeError(f"register_quantize_config expects a tfquant.keras.QuantizeConfig, got {config!r}.")
    _CUSTOM[layer_class] = config


def unregister_quantize_config(layer_class: type) -> None:
    _CUSTOM.pop(layer_class, None)


def custom_config(layer) -> Optional[QuantizeConfig]:
    return _CUSTOM.get(type(layer))
