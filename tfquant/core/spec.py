"""`QuantSpec`: how one tensor is quantized (bits, sign, symmetry, granularity).

Example:
    >>> w = QuantSpec.weight(bits=4)           # symmetric, narrow, per-channel
    >>> (w.qmin, w.qmax)
    (-7, 7)
    >>> a = QuantSpec.activation()             # int8 asymmetric per-tensor
    >>> QuantSpec.from_config(a.get_config()) == a
    True
"""
from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from tfquant.errors import SpecError

MIN_BITS = 2
MAX_BITS = 16


@dataclasses.dataclass(frozen=True)
class QuantSpec:
    """Integer grid of a quantized tensor.

    Attributes:
      bits: integer width, 2..16 (TFLite stores 2..8 as int8 and 9..16 as int16).
      signed: integers centred on 0 (int8 [-128, 127]) rather than [0, 255].
      symmetric: zero point fixed at 0; the range is [-m, m] (narrow) or [-m - s, m].
      narrow_range: drop the most negative integer (TFLite weights: [-127, 127]).
      per_channel: one (scale, zero point) per slice along `axis`.
      axis: channel axis for per-channel specs (the converter wants the last axis).
    """

    bits: int = 8
    signed: bool = True
    symmetric: bool = False
    narrow_range: bool = False
    per_channel: bool = False
    axis: int = -1

    def __post_init__(self):
        for name in ("bits", "axis"):   # numpy integers (np.int32(8)) are ints too
            value = getattr(self, name)
            if isinstance(value, np.integer):
                object.__setattr__(self, name, int(value))
        if isinstance(self.bits, bool) or not isinstance(self.bits, int):
            raise SpecError(f"QuantSpec.bits must be an int, got {self.bits!r}.")
        if not MIN_BITS <= self.bits <= MAX_BITS:
            raise SpecError(
                f"QuantSpec.bits={self.bits} is not supported: choose {MIN_BITS}..{MAX_BITS} bits "
                "(a 1-bit grid has no zero and no sign; TFLite has no integer type above 16 bits "
                "for activations or weights)."
            )
        if not isinstance(self.axis, int):
            raise SpecError(f"QuantSpec.axis must be an int, got {self.axis!r}.")

    # ---- the integer grid -------------------------------------------------------------
    @property
    def qmin(self) -> int:
        low = -(2 ** (self.bits - 1)) if self.signed else 0
        return low + 1 if self.narrow_range else low

    @property
    def qmax(self) -> int:
        return 2 ** (self.bits - 1) - 1 if self.signed else 2**self.bits - 1

    @property
    def levels(self) -> int:
        """Number of integer steps, qmax - qmin."""
        return self.qmax - self.qmin

    @property
    def storage_dtype(self) -> str:
        """The TFLite storage type of this grid."""
        if self.bits <= 8:
            return "int8" if self.signed else "uint8"
        return "int16" if self.signed else "uint16"

    # ---- presets ------------------------------------------------------------------------
    @classmethod
    def weight(cls, bits: int = 8, per_channel: bool = True, axis: int = -1) -> "QuantSpec":
        """TFLite weights: symmetric, narrow range, per output channel by default."""
        return cls(bits=bits, signed=True, symmetric=True, narrow_range=True,
                   per_channel=per_channel, axis=axis)

    @classmethod
    def activation(cls, bits: int = 8) -> "QuantSpec":
        """TFLite activations: asymmetric, per tensor, full range."""
        return cls(bits=bits, signed=True, symmetric=False, narrow_range=False,
                   per_channel=False)

    def replace(self, **changes: Any) -> "QuantSpec":
        return dataclasses.replace(self, **changes)

    # ---- config round trip (Keras style) -------------------------------------------------
    def get_config(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> "QuantSpec":
        unknown = set(config) - {f.name for f in dataclasses.fields(cls)}
        if unknown:
            raise SpecError(f"QuantSpec config has unknown keys {sorted(unknown)}.")
        return cls(**config)
