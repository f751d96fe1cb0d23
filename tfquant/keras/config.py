"""`QATConfig`: the model-wide choices of `quantize_model`.

    QATConfig()                                  # W8A8: per-channel weights, moving-average ranges
    QATConfig(weight_bits=4)                     # W4A8 (4-bit weights, INT4 in the flatbuffer)
    QATConfig(bn_folding="batch_stats", bn_freeze_steps=2000)
    QATConfig(learned_ranges=True)               # LSQ+-style trainable activation ranges
    QATConfig(float_layers=["head"])             # leave these layers in float

Invalid choices raise `tfquant.errors.SpecError` here, before any model is touched.
"""
from __future__ import annotations

import dataclasses
from typing import Optional, Sequence

from tfquant.core.op_rules import DEFAULT_HARD_SWISH_LOWERING, HARD_SWISH_LOWERINGS
from tfquant.errors import SpecError
from tfquant.keras.layers.bn_folding import FOLDINGS
from tfquant.keras.quantizers import ActivationQuantizer, WeightQuantizer


@dataclasses.dataclass
class QATConfig:
    """How `quantize_model` quantizes a model.

    Attributes:
      weight_bits: 4..8 for export (2..3 train, but the converter cannot export them).
      per_channel: per-output-channel conv / depthwise weights (Dense and Conv2DTranspose are
        always per-tensor: the converter cannot carry per-channel FakeQuants through them).
      activation_bits: must be 8 (TFLite's int8 kernels).
      momentum: EMA momentum of the activation ranges.
      learned_ranges: trainable activation ranges (LSQ+-style) instead of moving averages.
      bn_folding: "static" (frozen BN statistics, default) or "batch_stats".
      bn_freeze_steps: with "batch_stats", freeze the statistics after this many steps.
      float_layers: names of layers to leave in float (reported).
      hard_swish: how hard-swish (hard_silu) goes on the device (`core.op_rules.HARD_SWISH_LOWERINGS`):
        "decomposed" (ADD + RELU6, MUL, MUL, each on a grid of its own: XNNPACK-delegated) or
        "HARD_SWISH" (the converter's one op); both bit-exact in the exact simulation.
    """

    weight_bits: int = 8
    per_channel: bool = True
    activation_bits: int = 8
    momentum: float = 0.99
    learned_ranges: bool = False
    bn_folding: str = "static"
    bn_freeze_steps: Optional[int] = None
    float_layers: Sequence[str] = ()
    hard_swish: str = DEFAULT_HARD_SWISH_LOWERING

    def __post_init__(self):
        self.weight_quantizer()              # validate now: SpecError for 0 / 17 bits, ...
        self.activation_quantizer()
        if self.bn_folding not in FOLDINGS:
            raise SpecError(f"QATConfig.bn_folding must be one of {FOLDINGS}, got {self.bn_folding!r}.")
        if self.bn_freeze_steps is not None and int(self.bn_freeze_steps) < 0:
            raise SpecError(f"QATConfig.bn_freeze_steps must be >= 0, got {self.bn_freeze_steps}.")
        if self.hard_swish not in HARD_SWISH_LOWERINGS:
            raise SpecError(f"QATConfig.hard_swish must be one of {HARD_SWISH_LOWERINGS}, got {self.hard_swish!r}.")
        if isinstance(self.float_layers, str):
            self.float_layers = (self.float_layers,)

    def weight_quantizer(self) -> WeightQuantizer:
        return WeightQuantizer(bits=self.weight_bits, per_channel=self.per_channel)

    def activation_quantizer(self) -> ActivationQuantizer:
        return ActivationQuantizer(momentum=self.momentum, learned=self.learned_ranges, bits=self.activation_bits)

    @classmethod
    def coerce(cls, config) -> "QATConfig":
        if config is None:
            return cls()
        if isinstance(config, cls):
            return config
        if isinstance(config, dict):
            unknown = set(config) - {f.name for f in dataclasses.fields(cls)}
            if unknown:
                raise SpecError(f"Unknown QATConfig keys {sorted(unknown)}; valid: "
                                f"{[f.name for f in dataclasses.fields(cls)]}.")
            return cls(**config)
        raise SpecError(f"quantize_model's config must be a tfquant.keras.QATConfig or a dict, got {config!r}.")
