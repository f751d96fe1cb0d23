"""What `quantize_model` did to each layer: quantized, folded / fused into another, passed through,
or left in float — and, for the last, why and how to quantize it.

    report = tfquant.keras.quantization_report(qmodel)
    print(report.table())
    report.float_layers            # [LayerReport(name=..., reason=..., how_to=...), ...]
"""
from __future__ import annotations

import dataclasses
from typing import Optional

STATUSES = ("quantized", "folded", "fused", "pass-through", "float")


@dataclasses.dataclass
class LayerReport:
    name: str                     # the layer's name in the original model (nested: "outer/inner")
    class_name: str
    status: str                   # one of STATUSES
    into: Optional[str] = None    # the tfquant layer that carries it
    reason: str = ""              # why it stayed float
    how_to: str = ""              # how to quantize it


@dataclasses.dataclass
class QuantizationReport:
    layers: list[LayerReport]

    @property
    def float_layers(self) -> list[LayerReport]:
        return [r for r in self.layers if r.status == "float"]

    def status_of(self, name: str) -> str:
        for r in self.layers:
            if r.name == name:
                return r.status
        raise KeyError(f"No layer named {name!r} in the report.")

    def to_dict(self) -> dict:
        return {"layers": [dataclasses.asdict(r) for r in self.layers]}

    def table(self) -> str:
        lines = [f"{'layer':<32} {'class':<24} {'status':<13} detail"]
        for r in self.layers:
            detail = f"-> {r.into}" if r.into else ""
            if r.status == "float":
                detail = f"{r.reason} To quantize it: {r.how_to}"
            lines.append(f"{r.name[-32:]:<32} {r.class_name[:24]:<24} {r.status:<13} {detail}")
        floats = self.float_layers
        lines.append(f"{len(floats)} layer(s) left in float" + (": " + ", ".join(r.name for r in floats)
                                                                 if floats else "."))
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.table()
