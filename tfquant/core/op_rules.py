"""TFLite's per-op int8 rules, as data that both QAT (`tfquant.keras`) and PTQ (`tfquant.graph`,
`tfquant.ptq`) read instead of restating them.

    >>> apply_fused_activation("relu6", y)          # what the converter fuses into CONV_2D / ADD
    >>> ACTIVATION_BOUNDS["relu6"]                  # (0.0, 6.0): the clamp of the fused activation
    >>> FIXED_OUTPUT_RANGES["softmax"]              # (0.0, 255 / 256): scale 1/256, zero point -128

- Fused activations: CONV_2D, DEPTHWISE_CONV_2D, FULLY_CONNECTED and ADD fold a following
  ReLU / ReLU6 into their output range (`FUSED_ACTIVATIONS`).
- Fixed output grids (quantization_spec.md): SOFTMAX and LOGISTIC (1/256, -128), TANH (1/128, 0).
- Shared grids: ops whose int8 output must keep their input's scale and zero point
  (`SAME_SCALE_TF_OPS`, by TensorFlow op name).
"""
from __future__ import annotations

from typing import Callable, Optional

import numpy as np
import tensorflow as tf

# name -> the float function the simulation applies before the output FakeQuant.
FUSED_ACTIVATIONS: dict[Optional[str], Callable] = {None: tf.identity, "relu": tf.nn.relu,
                                                    "relu6": tf.nn.relu6}
# name -> (low, high) clamp of the fused activation, in real values.
ACTIVATION_BOUNDS: dict[Optional[str], tuple[float, float]] = {
    None: (-np.inf, np.inf), "relu": (0.0, np.inf), "relu6": (0.0, 6.0)}

SOFTMAX_RANGE = (0.0, 255.0 / 256.0)    # SOFTMAX: scale 1/256, zero point -128
LOGISTIC_RANGE = (0.0, 255.0 / 256.0)   # LOGISTIC: scale 1/256, zero point -128
TANH_RANGE = (-1.0, 127.0 / 128.0)      # TANH: scale 1/128, zero point 0
FIXED_OUTPUT_RANGES: dict[str, tuple[float, float]] = {
    "softmax": SOFTMAX_RANGE, "sigmoid": LOGISTIC_RANGE, "tanh": TANH_RANGE}
# TensorFlow op -> the fixed grid of the TFLite op it becomes.
FIXED_RANGE_TF_OPS: dict[str, tuple[float, float]] = {
    "Softmax": SOFTMAX_RANGE, "Sigmoid": LOGISTIC_RANGE, "Tanh": TANH_RANGE}

# TF ops that only move values around: their output stays on the input's integer grid.
SAME_SCALE_TF_OPS = frozenset({
    "Squeeze", "ExpandDims", "Transpose", "StridedSlice", "Slice", "SpaceToDepth", "DepthToSpace",
    "SpaceToBatchND", "BatchToSpaceND", "Reshape", "Identity", "MaxPool", "Pad", "PadV2",
    "GatherV2", "Tile", "Split", "SplitV", "Unpack", "Pack",
})


def apply_fused_activation(name: Optional[str], x):
    """`x` through the fused activation `name` (None, "relu", "relu6")."""
    try:
        fn = FUSED_ACTIVATIONS[name]
    except KeyError:
        raise ValueError(f"{name!r} is not an activation TFLite fuses; choose one of "
                         f"{list(FUSED_ACTIVATIONS)}.") from None
    return fn(x)
