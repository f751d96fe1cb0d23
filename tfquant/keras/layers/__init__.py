"""tfquant's QAT layers (one concept per module); `quantize_model` builds models from them."""
from tfquant.keras.layers.activation import QuantActivation
from tfquant.keras.layers.add import QuantAdd
from tfquant.keras.layers.affine import QuantAffine, QuantScaledAdd
from tfquant.keras.layers.base import QuantLayer
from tfquant.keras.layers.concat import QuantConcatenate
from tfquant.keras.layers.conv import QuantConv
from tfquant.keras.layers.input import QuantizeInput
from tfquant.keras.layers.layer_norm import QuantLayerNorm
from tfquant.keras.layers.multiply import QuantMultiply
from tfquant.keras.layers.pooling import QuantAveragePooling, QuantGlobalAveragePooling, QuantSharedGrid
from tfquant.keras.layers.resize import QuantResize
from tfquant.keras.layers.wrapper import QuantizeWrapper

__all__ = ["QuantLayer", "QuantConv", "QuantizeInput", "QuantAdd", "QuantAffine", "QuantScaledAdd", "QuantMultiply",
           "QuantConcatenate", "QuantAveragePooling", "QuantGlobalAveragePooling", "QuantSharedGrid", "QuantResize",
           "QuantActivation", "QuantLayerNorm",
           "QuantizeWrapper"]
