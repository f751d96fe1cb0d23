"""`QuantAffine` and `QuantScaledAdd`: per-channel affines that no Conv/Dense absorbs, as the int8
MUL by a constant and ADD of a constant of `core.op_rules.AFFINE_TFLITE_OPS`.

- `QuantAffine(layer)`: y = act(x * scale + offset) for a BatchNormalization that does not follow
  a Conv/Dense (pre-activation ResNetV2, DenseNet, BN after an add or a concat), a Rescaling, a
  Normalization, or ConvNeXt's LayerScale (x * gamma: the MUL alone, gamma trains). The MUL's
  output has a grid of its own ("mid"), the ADD's is the layer's output grid, a following
  ReLU / ReLU6 is fused in the last op. The batch norm uses its moving
  statistics (inference form) in training too; gamma and beta train through the fake-quant graph.
  Keras' arithmetic with a number (`x + 3.0`, `x * (1 / 6)`, `scalar_affine`) is a Rescaling
  with that scale and offset, quantized the same way.
- `QuantScaledAdd(scale)`: y = act(a + b * scale), InceptionResNetV2's `CustomScaleLayer`: MUL of
  b by the int8 constant `scale` onto "mid", then ADD of two tensors.

In the "exact" mode both return TFLite's reference kernels' integers (`core.quantized_affine`,
`core.quantized_mul`, `core.quantized_add`).

    y = QuantAffine(layer=keras.layers.BatchNormalization(), activation="relu")(x)
"""
from __future__ import annotations

from typing import Optional

import keras
import numpy as np
import tensorflow as tf

from tfquant.core import bn_affine, quantized_add, quantized_affine, quantized_constant, quantized_mul
from tfquant.core.op_rules import FUSED_ACTIVATIONS, affine_parts, apply_fused_activation
from tfquant.errors import SpecError
from tfquant.keras.layers.base import QuantLayer
from tfquant.keras.quantizers import ActivationQuantizer, deserialize, serialize

L = keras.layers


def _layer_scale_classes() -> tuple[type, ...]:
    """keras.applications' ConvNeXt `LayerScale` (x * gamma per channel), a Keras-private class."""
    try:
        from keras.src.applications.convnext import LayerScale
    except ImportError:  # pragma: no cover - another Keras layout
        return ()
    return (LayerScale,)


LAYER_SCALE_LAYERS = _layer_scale_classes()
AFFINE_LAYERS = (L.BatchNormalization, L.Rescaling, L.Normalization, *LAYER_SCALE_LAYERS)


def affine_problem(layer) -> Optional[str]:
    """Why `layer` (one of AFFINE_LAYERS) cannot be a per-channel affine on the last axis, or None."""
    if isinstance(layer, L.BatchNormalization):
        axis = layer.axis if isinstance(layer.axis, int) else (layer.axis[0] if len(layer.axis) == 1 else None)
        if axis is None or axis not in (-1, len(layer.input.shape) - 1):
            return "BatchNormalization over an axis other than the last (TFLite's channels are last)."
        if getattr(layer, "renorm", False):
            return "BatchNormalization with renorm."
    if isinstance(layer, L.Normalization):
        if layer.invert:
            return "Normalization(invert=True)."
        if tuple(layer.axis) not in ((-1,), (len(layer.input.shape) - 1,)):
            return "Normalization over an axis other than the last."
    if isinstance(layer, L.Rescaling) and np.ndim(layer.scale) > 1:
        return "Rescaling with a scale of rank > 1."
    return None


def scaled_add_scale(layer) -> Optional[float]:
    """The scale of an InceptionResNetV2 `CustomScaleLayer` (a + b * scale), or None for any other layer."""
    try:
        from keras.src.applications.inception_resnet_v2 import CustomScaleLayer  # Keras-private class
    except ImportError:  # pragma: no cover - another Keras layout
        return None
    if type(layer) is CustomScaleLayer and isinstance(layer.scale, (int, float)):
        return float(layer.scale)
    return None


# Keras' arithmetic ops on a tensor and a number (`x + 3.0`, `x * (1 / 6)`: MobileNetV3's
# hard-sigmoid): op class name -> (scale, offset) of the affine, from the number and whether the
# tensor is the first operand.
_SCALAR_OPS = {
    "Add": lambda c, first: (1.0, c),
    "Subtract": lambda c, first: (1.0, -c) if first else None,     # c - x is a SUB of its own
    "Multiply": lambda c, first: (c, 0.0),
    "TrueDivide": lambda c, first: (float(np.float32(1.0) / np.float32(c)), 0.0) if first and c != 0 else None,
}


def scalar_affine(call) -> Optional[tuple[float, float]]:
    """(scale, offset) of a Keras op call x + c, c + x, x - c, x * c, c * x or x / c with c a
    Python number (an affine with scalar constants: int8 ADD of / MUL by a constant), else None."""
    node = call.node
    rule = _SCALAR_OPS.get(type(call.layer).__name__) if node is not None else None
    if rule is None or not type(call.layer).__module__.startswith("keras.src.ops"):
        return None
    args, kwargs = node.arguments.args, node.arguments.kwargs
    if kwargs or len(args) != 2 or len(call.inputs) != 1:
        return None
    first = isinstance(args[0], keras.KerasTensor)
    c = args[1] if first else args[0]
    if isinstance(c, bool) or not isinstance(c, (int, float, np.floating, np.integer)):
        return None
    return rule(float(c), first)      # None for c - x, c / x


def _last_axis(v) -> tf.Tensor:
    v = tf.convert_to_tensor(v, tf.float32)
    return tf.reshape(v, [-1]) if v.shape.rank and v.shape.rank > 1 else v


@keras.saving.register_keras_serializable(package="tfquant")
class QuantAffine(QuantLayer):
    adoptable = True

    def __init__(self, layer, activation: Optional[str] = None, activation_quantizer=None,
                 shared_output: bool = False, **kwargs):
        super().__init__(shared_output=shared_output, **kwargs)
        if isinstance(layer, dict):
            layer = keras.layers.deserialize(layer)
        if not isinstance(layer, AFFINE_LAYERS):
            raise SpecError(f"QuantAffine wraps a BatchNormalization, Rescaling, Normalization or LayerScale, got "
                            f"{type(layer).__name__}.")
        if activation not in FUSED_ACTIVATIONS:
            raise SpecError(f"QuantAffine fuses only ReLU / ReLU6, got {activation!r}.")
        self.layer = layer
        self.activation = activation
        self.activation_quantizer = deserialize(activation_quantizer) or ActivationQuantizer()
        self.mid_quantizer = None

    def build(self, input_shape):
        if not self.layer.built:
            self.layer.build(input_shape)
        if all(self.parts()):
            self.mid_quantizer = ActivationQuantizer.from_config(self.activation_quantizer.get_config())
            self.mid_quantizer.build(self, "mid")
        self._build_output_quantizer(ActivationQuantizer.from_config(self.activation_quantizer.get_config()))

    def parts(self) -> tuple[bool, bool]:
        """(has MUL, has ADD): a batch norm and a normalization have both, a LayerScale the MUL;
        a Rescaling what its scale and offset need (`op_rules.affine_parts`)."""
        if isinstance(self.layer, L.Rescaling):
            return affine_parts(np.asarray(self.layer.scale, np.float32), np.asarray(self.layer.offset, np.float32))
        if isinstance(self.layer, LAYER_SCALE_LAYERS):
            return True, False        # gamma trains: the MUL stays whatever its value
        return True, True

    def affine(self) -> tuple[Optional[tf.Tensor], Optional[tf.Tensor]]:
        """(scale, offset) over the last axis, None for a part the layer does not need."""
        la = self.layer
        if isinstance(la, L.BatchNormalization):
            mean, var = la.moving_mean, la.moving_variance
            gamma = la.gamma if la.scale else tf.ones_like(mean)
            beta = la.beta if la.center else tf.zeros_like(mean)
            scale, offset = bn_affine(tf.convert_to_tensor(gamma), tf.convert_to_tensor(beta),
                                      tf.convert_to_tensor(mean), tf.convert_to_tensor(var), float(la.epsilon))
        elif isinstance(la, LAYER_SCALE_LAYERS):
            scale, offset = tf.convert_to_tensor(la.gamma), None
        elif isinstance(la, L.Normalization):
            std = tf.maximum(tf.sqrt(_last_axis(la.variance)), keras.config.epsilon())
            scale = 1.0 / std
            offset = -_last_axis(la.mean) * scale
        else:
            scale, offset = _last_axis(la.scale), _last_axis(la.offset)
        has_mul, has_add = self.parts()
        return (scale if has_mul else None), (offset if has_add else None)

    def quantizers(self) -> dict:
        out = super().quantizers()
        if self.mid_quantizer is not None:
            out["mid"] = self.mid_quantizer
        return out

    def compute_output_shape(self, input_shape):
        return input_shape

    def call(self, x, training=None):
        scale, offset = self.affine()
        y = x
        if scale is not None:
            y = y * quantized_constant(scale)[0]
            if self.mid_quantizer is not None:
                y = self.mid_quantizer(y, training=bool(training))
        if offset is not None:
            y = y + quantized_constant(offset)[0]
        y = apply_fused_activation(self.activation, y)

        def exact(output_range):
            mid = None if self.mid_quantizer is None else self.mid_quantizer.range()
            return quantized_affine(x, scale, offset, input_range=self.input_range(0), mid_range=mid,
                                    output_range=output_range, activation=self.activation)
        return self._quantize_output(y, training, exact=exact)

    def get_config(self):
        config = super().get_config()
        config.update({"layer": keras.layers.serialize(self.layer), "activation": self.activation,
                       "activation_quantizer": serialize(self.activation_quantizer)})
        return config


@keras.saving.register_keras_serializable(package="tfquant")
class QuantScaledAdd(QuantLayer):
    adoptable = True

    def __init__(self, scale: float, activation: Optional[str] = None, activation_quantizer=None,
                 shared_output: bool = False, **kwargs):
        super().__init__(shared_output=shared_output, **kwargs)
        if activation not in FUSED_ACTIVATIONS:
            raise SpecError(f"QuantScaledAdd fuses only ReLU / ReLU6, got {activation!r}.")
        self.scale = float(scale)
        self.activation = activation
        self.activation_quantizer = deserialize(activation_quantizer) or ActivationQuantizer()
        self.mid_quantizer = None

    def build(self, input_shape):
        self.mid_quantizer = ActivationQuantizer.from_config(self.activation_quantizer.get_config())
        self.mid_quantizer.build(self, "mid")
        self._build_output_quantizer(ActivationQuantizer.from_config(self.activation_quantizer.get_config()))

    def quantizers(self) -> dict:
        return {**super().quantizers(), "mid": self.mid_quantizer}

    def compute_output_shape(self, input_shape):
        return input_shape[0]

    def call(self, inputs, training=None):
        if len(inputs) != 2:
            raise SpecError(f"{self.name}: QuantScaledAdd takes exactly two inputs (a, b of a + b * scale), "
                            f"got {len(inputs)}.")
        a, b = inputs
        s, s_range = quantized_constant(np.float32(self.scale))
        mid = self.mid_quantizer(b * s, training=bool(training))
        y = apply_fused_activation(self.activation, a + mid)

        def exact(output_range):
            mid_range = self.mid_quantizer.range()
            m = quantized_mul(b, s, a_range=self.input_range(1), b_range=s_range, output_range=mid_range)
            return quantized_add(a, m, a_range=self.input_range(0), b_range=mid_range, output_range=output_range,
                                 activation=self.activation)
        return self._quantize_output(y, training, exact=exact)

    def get_config(self):
        config = super().get_config()
        config.update({"scale": self.scale, "activation": self.activation,
                       "activation_quantizer": serialize(self.activation_quantizer)})
        return config
