"""`QuantPlan`: every quantized tensor of a model, its grid, its range and its precision.

One class for both routes: `tfquant.ptq` returns it as `result.plan`, and
`tfquant.keras.plan_of(qmodel)` reads it off a QAT model's live quantizers. Read it, save it,
edit it, and export from it:

    >>> plan = result.plan
    >>> print(plan.table())                       # one row per quantizer and per weight tensor
    >>> plan.save("plan.json"); plan = QuantPlan.load("plan.json")
    >>> plan.set_range("q17", -4.0, 4.0)          # one activation grid
    >>> tfquant.to_tflite(result, "edited.tflite", plan=plan)

Activation quantizers have an id (PTQ: "q<n>"; QAT: "<layer>/<quantizer>"); `qid` maps each float
tensor to its id, and the tensors of one id share one (scale, zero point) (concat, pooling,
reshape, pad... keep their input's grid). `owners` are the tensors whose producer writes the grid;
`fixed` ids carry a range TFLite imposes (softmax, logistic, tanh). Weight entries are keyed by
the layer (or IR node) that holds the kernel: their spec, and their (min, max) per channel.
`derived` weight entries (QAT: last-value ranges recomputed from the weights at every step) are
shown but cannot be edited.

Precision: "int8" (default), "int16" or "float". A float activation entry leaves its tensors in
float: the ops producing and consuming them run in float (the converter puts DEQUANTIZE / QUANTIZE
around them); a float weight entry runs its layer in float. An "int16" activation entry (PTQ
only; TFLite int16x8) puts its tensors on a 16-bit narrow-range symmetric grid over [-m, m], m the
larger magnitude of the calibrated range (`grid_of`); the ops writing them run in int16 (an island,
requantized at its edges: see `tfquant.graph.emit`). Mixed precision is a plan edit:

    >>> plan.set_precision("q17", "float")                 # one quantizer (or a tensor, a pattern)
    >>> plan.set_precision("*/dw_1/*", "float")            # every entry or tensor matching
    >>> plan.set_precision(["q3", "q4"], "int16")          # 16-bit activations
"""
from __future__ import annotations

import dataclasses
import fnmatch
import json
import os
from typing import Any, Optional, Union

import numpy as np

from tfquant.core.op_rules import INT16_ACTIVATION
from tfquant.core.spec import QuantSpec
from tfquant.errors import ExportError, PlanKeyError, SpecError, cause_text
from tfquant.io_utils import write_bytes_atomic

PRECISIONS = ("int8", "int16", "float")
ACTIVATION_SPEC = QuantSpec.activation()
FORMAT = "tfquant.QuantPlan/1"


def symmetric_range(rmin: float, rmax: float) -> tuple[float, float]:
    """[-m, m] with m = max(|rmin|, |rmax|): the range of a 16-bit activation (zero point 0)."""
    m = max(abs(float(rmin)), abs(float(rmax)))
    return -m, m


@dataclasses.dataclass(frozen=True)
class PlanEntry:
    """One row of a plan: a quantizer (activation) or a weight tensor."""

    name: str
    kind: str                      # "activation" or "weight"
    spec: QuantSpec
    min: Any                       # float, or a vector per channel
    max: Any
    precision: str = "int8"
    fixed: bool = False            # a range TFLite imposes
    derived: bool = False          # recomputed from the weights (QAT), not editable
    tensors: tuple[str, ...] = ()  # the float tensors on this grid (activations)


def _encode(x) -> Any:
    """Ranges keep their numpy dtype through JSON, so a round trip rebuilds identical bytes."""
    if x is None:
        return None
    if isinstance(x, (np.ndarray, np.generic)):
        a = np.asarray(x)
        return {"dtype": a.dtype.name, "shape": list(a.shape), "data": a.ravel().tolist()}
    return float(x)


def _decode(x) -> Any:
    if isinstance(x, dict):
        return np.asarray(x["data"], dtype=x["dtype"]).reshape(x["shape"])
    return None if x is None else float(x)


@dataclasses.dataclass
class QuantPlan:
    """Which quantizer each float tensor uses, with every range and weight grid.

    qid: float tensor -> quantizer id; owners: id -> tensors whose producer writes the grid;
    fixed: id -> TFLite's fixed range; ranges: id -> (min, max), set by calibration;
    weight_specs / weight_ranges: weight name -> kernel QuantSpec / (min, max) per channel;
    derived: weight names whose range is recomputed from the weights (QAT);
    precision: entry name -> "int8" (entries not listed are int8).
    """

    qid: dict[str, str]
    owners: dict[str, list[str]]
    fixed: dict[str, tuple[float, float]]
    ranges: dict[str, tuple[float, float]] = dataclasses.field(default_factory=dict)
    weight_specs: dict[str, QuantSpec] = dataclasses.field(default_factory=dict)
    weight_ranges: dict[str, tuple[np.ndarray, np.ndarray]] = dataclasses.field(default_factory=dict)
    derived: set = dataclasses.field(default_factory=set)
    precision: dict[str, str] = dataclasses.field(default_factory=dict)

    # ---- lookups used by the emitters ----------------------------------------------------
    def range_of(self, tensor_ref: str) -> tuple[float, float]:
        q = self.qid.get(tensor_ref)
        if q is None:
            raise ExportError(f"Tensor {tensor_ref!r} has no quantizer.")
        if q in self.fixed:
            return self.fixed[q]
        if q not in self.ranges:
            raise ExportError(f"Quantizer {q!r} (tensor {tensor_ref!r}) has no range: calibrate first.")
        return self.ranges[q]

    def calibrated_ids(self) -> list[str]:
        """Quantizer ids whose range must be set (not fixed), in graph order."""
        seen = []
        for q in self.owners:
            if q not in self.fixed and q not in seen:
                seen.append(q)
        return seen

    def is_owner(self, tensor_ref: str) -> bool:
        q = self.qid.get(tensor_ref)
        return q is not None and tensor_ref in self.owners.get(q, [])

    def is_quantized(self, tensor_ref: str) -> bool:
        """Whether a float tensor is int8: it has a quantizer, and that quantizer is int8."""
        return self.precision_of(tensor_ref) == "int8"

    def precision_of(self, tensor_ref: str) -> str:
        """"int8", "int16" or "float" (a tensor without a quantizer is float)."""
        q = self.qid.get(tensor_ref)
        return "float" if q is None else self.precision.get(q, "int8")

    def grid_of(self, tensor_ref: str, precision: Optional[str] = None) -> tuple[tuple[float, float], QuantSpec]:
        """(range, spec) of a tensor in `precision` (default: its own): int8 on its range, int16
        narrow-range symmetric on `symmetric_range` of it (a requantized copy may ask for either)."""
        precision = precision or self.precision_of(tensor_ref)
        rng = self.range_of(tensor_ref)
        if precision == "int16":
            return symmetric_range(*rng), INT16_ACTIVATION
        return rng, ACTIVATION_SPEC

    def weights_quantized(self, name: str) -> bool:
        return name in self.weight_specs and self.precision.get(name, "int8") != "float"

    def non_int8(self) -> list[str]:
        """Entries whose precision is not int8."""
        return [n for n, p in self.precision.items() if p != "int8"]

    def set_precision(self, names, precision: str) -> list[str]:
        """Set the precision of entries, by id / weight name, by tensor, or by fnmatch pattern
        (matched against entry names and tensor names). Returns the entries changed."""
        if precision not in PRECISIONS:
            raise SpecError(f"precision must be one of {PRECISIONS}, got {precision!r}.")
        names = [names] if isinstance(names, str) else list(names)
        entries = list(self.owners) + list(self.weight_specs)
        hit: list[str] = []
        for pattern in names:
            found = [e for e in entries if fnmatch.fnmatchcase(e, pattern)]
            found += [q for t, q in self.qid.items() if fnmatch.fnmatchcase(t, pattern)]
            if not found:
                raise PlanKeyError(f"No plan entry or tensor matches {pattern!r}; see plan.table().")
            hit += [e for e in found if e not in hit]
        if precision == "int16":
            self._check_int16(hit)
        for e in hit:
            if precision == "int8":
                self.precision.pop(e, None)
            else:
                self.precision[e] = precision
        return hit

    def _check_int16(self, entries: list[str]) -> None:
        """int16 is an activation precision (int16x8 keeps weights int8), and not for TFLite's
        fixed-range outputs (SOFTMAX, LOGISTIC, TANH stay int8 in the converter)."""
        weights = [e for e in entries if e in self.weight_specs]
        if weights:
            raise SpecError(f"precision 'int16' is for activations (TFLite int16x8: 16-bit activations, int8 "
                            f"weights); {weights[:3]} are weight entries: pick activation entries or tensors.")
        fixed = [e for e in entries if e in self.fixed]
        if fixed:
            raise SpecError(f"{fixed[:3]} carry TFLite's fixed range (softmax / logistic / tanh output), "
                            "which the converter keeps int8: they cannot be int16.")

    def copy(self) -> "QuantPlan":
        return QuantPlan(dict(self.qid), {k: list(v) for k, v in self.owners.items()}, dict(self.fixed),
                         dict(self.ranges), dict(self.weight_specs),
                         {k: (np.array(a), np.array(b)) for k, (a, b) in self.weight_ranges.items()},
                         set(self.derived), dict(self.precision))

    # ---- entries ---------------------------------------------------------------------------
    def entries(self) -> list[PlanEntry]:
        """Every activation quantizer (graph order), then every weight tensor."""
        tensors: dict[str, list[str]] = {}
        for t, q in self.qid.items():
            tensors.setdefault(q, []).append(t)
        rows = []
        for q in self.owners:
            lo, hi = self.fixed.get(q) or self.ranges.get(q, (None, None))
            prec = self.precision.get(q, "int8")
            rows.append(PlanEntry(q, "activation", INT16_ACTIVATION if prec == "int16" else ACTIVATION_SPEC, lo, hi, prec,
                                  fixed=q in self.fixed, tensors=tuple(tensors.get(q, ()))))
        for name, spec in self.weight_specs.items():
            lo, hi = self.weight_ranges.get(name, (None, None))
            rows.append(PlanEntry(name, "weight", spec, lo, hi, self.precision.get(name, "int8"),
                                  derived=name in self.derived))
        return rows

    def __getitem__(self, name: str) -> PlanEntry:
        for e in self.entries():
            if e.name == name:
                return e
        raise PlanKeyError(f"The plan has no entry {name!r}; see plan.table() for its entries.")

    def quantizer_of(self, tensor: str) -> str:
        """The quantizer id of a float tensor (its ref, e.g. "dense_1/BiasAdd:0")."""
        if tensor not in self.qid:
            raise PlanKeyError(f"Tensor {tensor!r} has no quantizer in this plan.")
        return self.qid[tensor]

    def set_range(self, name: str, rmin: float, rmax: float) -> None:
        """Set the range of one activation quantizer (by id, or by one of its tensors)."""
        q = self.qid.get(name, name)
        if q not in self.owners:
            raise PlanKeyError(f"The plan has no activation quantizer {name!r}; see plan.table().")
        if q in self.fixed:
            raise SpecError(f"Quantizer {q!r} has TFLite's fixed range {self.fixed[q]}: it cannot be edited.")
        rmin, rmax = float(rmin), float(rmax)
        if not (np.isfinite(rmin) and np.isfinite(rmax) and rmin < rmax):
            raise SpecError(f"Range ({rmin}, {rmax}) for {q!r} must be finite with min < max.")
        self.ranges[q] = (rmin, rmax)

    def set_weight_range(self, name: str, rmin, rmax) -> None:
        """Set the (per-channel) range of one weight tensor."""
        if name not in self.weight_specs:
            raise PlanKeyError(f"The plan has no weight entry {name!r}; see plan.table().")
        if name in self.derived:
            raise SpecError(f"The range of {name!r} is recomputed from its weights (QAT last-value): edit "
                            "the weights, not the plan.")
        old_lo, old_hi = self.weight_ranges[name]
        lo = np.asarray(rmin, dtype=np.asarray(old_lo).dtype) * np.ones_like(old_lo)
        hi = np.asarray(rmax, dtype=np.asarray(old_hi).dtype) * np.ones_like(old_hi)
        self.weight_ranges[name] = (lo, hi)

    def table(self) -> str:
        """One line per entry: name, kind, precision, grid, range, tensors."""
        lines = [f"{'entry':<36} {'kind':<10} {'prec':<5} {'grid':<22} {'range':<30} tensors"]
        for e in self.entries():
            s = e.spec
            grid = (f"{s.bits}b {'sym' if s.symmetric else 'asym'}"
                    f"{' per-ch' if s.per_channel else ''}")
            if e.min is None:
                rng = "(not set)"
            elif np.ndim(e.min):
                rng = f"{np.size(e.min)} ch, |max| <= {float(np.max(np.maximum(-np.asarray(e.min), e.max))):.4g}"
            else:
                rng = f"[{float(e.min):.4g}, {float(e.max):.4g}]"
            flags = " fixed" if e.fixed else (" derived" if e.derived else "")
            shown = ", ".join(e.tensors[:3]) + (f" +{len(e.tensors) - 3}" if len(e.tensors) > 3 else "")
            lines.append(f"{e.name[-36:]:<36} {e.kind:<10} {e.precision:<5} {grid + flags:<22} {rng:<30} {shown}")
        return "\n".join(lines)

    # ---- JSON ------------------------------------------------------------------------------
    def to_dict(self) -> dict:
        return {
            "format": FORMAT,
            "qid": self.qid,
            "owners": self.owners,
            "fixed": {q: [_encode(a), _encode(b)] for q, (a, b) in self.fixed.items()},
            "ranges": {q: [_encode(a), _encode(b)] for q, (a, b) in self.ranges.items()},
            "weight_specs": {n: s.get_config() for n, s in self.weight_specs.items()},
            "weight_ranges": {n: [_encode(a), _encode(b)] for n, (a, b) in self.weight_ranges.items()},
            "derived": sorted(self.derived),
            "precision": self.precision,
        }

    @classmethod
    def from_dict(cls, d: dict) -> "QuantPlan":
        if not isinstance(d, dict) or d.get("format") != FORMAT:
            raise SpecError(f"Not a tfquant plan (expected \"format\": {FORMAT!r}).")
        try:
            plan = cls._from_fields(d)
        except (KeyError, TypeError, ValueError, IndexError) as e:
            raise SpecError(f"The plan is malformed ({type(e).__name__}: {cause_text(e)}): give a file written by "
                            "QuantPlan.save.") from None
        bad = {n: p for n, p in plan.precision.items() if p not in PRECISIONS}
        if bad:
            raise SpecError(f"Unsupported precision in plan: {bad}; supported: {PRECISIONS}.")
        return plan

    @classmethod
    def _from_fields(cls, d: dict) -> "QuantPlan":
        pair = lambda v: (_decode(v[0]), _decode(v[1]))  # noqa: E731
        return cls(qid=dict(d["qid"]), owners={k: list(v) for k, v in d["owners"].items()},
                   fixed={q: pair(v) for q, v in d["fixed"].items()},
                   ranges={q: pair(v) for q, v in d["ranges"].items()},
                   weight_specs={n: QuantSpec.from_config(dict(c)) for n, c in d["weight_specs"].items()},
                   weight_ranges={n: pair(v) for n, v in d["weight_ranges"].items()},
                   derived=set(d.get("derived", ())), precision=dict(d.get("precision", {})))

    def to_json(self, indent: Optional[int] = 1) -> str:
        return json.dumps(self.to_dict(), indent=indent)

    @classmethod
    def from_json(cls, text: str) -> "QuantPlan":
        try:
            d = json.loads(text)
        except json.JSONDecodeError as e:
            raise SpecError(f"The plan is not valid JSON: {cause_text(e)}.") from None
        return cls.from_dict(d)

    def save(self, path: Union[str, os.PathLike]) -> str:
        """Write the plan as JSON (atomically)."""
        return write_bytes_atomic(path, self.to_json().encode())

    @classmethod
    def load(cls, path: Union[str, os.PathLike]) -> "QuantPlan":
        try:
            with open(path, encoding="utf-8") as f:
                text = f.read()
        except OSError as e:
            raise SpecError(f"Cannot read plan {os.fspath(path)!r}: {e.strerror}.") from None
        except UnicodeDecodeError:
            raise SpecError(f"The plan {os.fspath(path)!r} is not valid JSON (not even text): give a file "
                            "written by QuantPlan.save or --plan_output.") from None
        return cls.from_json(text)

    def check_matches(self, other: "QuantPlan") -> None:
        """Raise if `other` has different quantizers or weight entries (a plan of another model)."""
        for what, a, b in (("quantizers", set(self.owners), set(other.owners)),
                           ("weight entries", set(self.weight_specs), set(other.weight_specs))):
            if a != b:
                extra, missing = sorted(b - a)[:3], sorted(a - b)[:3]
                raise SpecError(f"The plan does not belong to this model: {what} differ "
                                f"(unknown {extra}, missing {missing}).")
