"""`diagnose`: the white paper's debugging workflow (Nagel et al. 2021, section 3.7) on a PTQ result
or a QAT model, from the same code.

    >>> d = tfquant.debug.diagnose(result, x_val)          # or a QAT model, or a float model + data
    >>> print(d.summary())                                  # ranked suspects, each with its fix
    >>> d.write_report("report/")                           # report.md with PNG plots

Steps: FP32 sanity (every quantizer bypassed against the float model as given: a PTQ result's
original model, or `float_model`; what the PTQ steps did to the float function); weights-only and
activations-only runs (which side does the damage); per-layer sensitivity (only this layer
quantized, and all but this layer); range statistics of every quantized tensor (percentiles,
outlier ratio) and per-channel weight range spread; a ranked list of suspects with the fix the
white paper suggests, and what keeping the worst in float gives (the mixed-precision fix, measured).
All figures are SQNR (dB) of the model's output against the float model, and top-1 agreement.
"""
from __future__ import annotations

import dataclasses
from typing import Optional

import numpy as np

from tfquant.debug.subjects import subject_of
from tfquant.export.verify import sqnr_db, top1_agreement as agreement
from tfquant.errors import DataError


@dataclasses.dataclass
class TensorStats:
    """Range statistics of one quantized activation tensor (float model values)."""

    entry: str
    min: float
    max: float
    p_low: float                 # 1st percentile
    p_high: float                # 99th percentile
    outlier_ratio: float         # (max - min) / (p_high - p_low): > 10 means a few values set the grid

    @classmethod
    def of(cls, entry: str, v: np.ndarray, vmin: Optional[float] = None,
           vmax: Optional[float] = None) -> "TensorStats":
        """From the values `v` (or a sample of them, with the exact `vmin` / `vmax`)."""
        v = v.ravel().astype(np.float64)
        lo, hi = np.percentile(v, [1.0, 99.0])
        vmin = float(v.min()) if vmin is None else vmin
        vmax = float(v.max()) if vmax is None else vmax
        spread = max(hi - lo, 1e-12)
        return cls(entry, vmin, vmax, float(lo), float(hi), float((vmax - vmin) / spread))


MAX_STAT_VALUES = 1 << 18     # per tensor: more are sampled (uniformly, seeded) for the percentiles


def _range_statistics(subject, x: np.ndarray) -> tuple[list[TensorStats], dict[str, np.ndarray]]:
    """TensorStats of every activation entry over `x`, one batch at a time (exact min / max,
    percentiles of at most `MAX_STAT_VALUES` values per tensor), and the values kept."""
    rng = np.random.default_rng(0)
    lo: dict[str, float] = {}
    hi: dict[str, float] = {}
    kept: dict[str, list] = {}
    for i in range(0, len(x), subject.batch_size):
        part = x[i:i + subject.batch_size]
        for e, v in subject.values(part).items():
            if not v.size:
                continue
            v = v.ravel()
            lo[e] = min(lo.get(e, np.inf), float(v.min()))
            hi[e] = max(hi.get(e, -np.inf), float(v.max()))
            step = -(-v.size * len(x) // (len(part) * MAX_STAT_VALUES))     # the whole set's size / cap
            kept.setdefault(e, []).append(v if step <= 1 else v[rng.integers(0, v.size, v.size // step)])
    values = {e: np.concatenate(vs) for e, vs in kept.items()}
    return [TensorStats.of(e, v, lo[e], hi[e]) for e, v in values.items() if v.size], values


@dataclasses.dataclass
class LayerSensitivity:
    layer: str
    entries: list[str]
    only_db: float               # SQNR with only this layer quantized
    all_but_db: float            # SQNR with every layer but this one quantized
    weight_spread: Optional[float] = None    # max / median per-channel weight range
    outlier_ratio: Optional[float] = None    # of its output tensor


@dataclasses.dataclass
class Suspect:
    layer: str
    gain_db: float               # what leaving it in float gains over the fully quantized model
    cause: str
    fix: str


@dataclasses.dataclass
class Diagnosis:
    route: str
    samples: int
    fp32_sanity_db: Optional[float]   # quantizers bypassed vs the float model as given (None: no such model)
    quantized_db: float               # this and the next two: against the quantizers-bypassed path
    weights_only_db: float
    activations_only_db: float
    quantized_agreement: Optional[float]
    layers: list[LayerSensitivity]
    tensors: list[TensorStats]
    suspects: list[Suspect]
    fix_description: str = ""     # the fix tried on the worst suspect
    fix_floats: list[str] = dataclasses.field(default_factory=list)   # entries the tried fix kept in float
    fixed_db: Optional[float] = None
    fixed_agreement: Optional[float] = None
    quantized_vs_given_db: Optional[float] = None   # the quantized model vs the float model as given
    tflite_exact: Optional[float] = None     # flatbuffer vs the exact simulation, outputs (reference kernels)
    tensor_fidelity: list = dataclasses.field(default_factory=list)   # (tensor, exact fraction, max LSB)
    weight_ranges: dict = dataclasses.field(default_factory=dict, repr=False)   # for the plots
    samples_of: dict = dataclasses.field(default_factory=dict, repr=False)      # worst tensors' values

    @property
    def fp32_sanity(self) -> str:
        """The FP32 sanity figure as text ("not checked" for a QAT model without `float_model`)."""
        return "not checked (no float model given)" if self.fp32_sanity_db is None else f"{self.fp32_sanity_db:.1f} dB"

    def summary(self) -> str:
        agree = "" if self.quantized_agreement is None else f", top-1 agreement {100 * self.quantized_agreement:.1f}%"
        lines = [f"tfquant.debug on a {self.route} model, {self.samples} samples",
                 f"  FP32 sanity (all quantizers bypassed vs the float model): {self.fp32_sanity}",
                 f"  quantized: {self.quantized_db:.1f} dB{agree}" + (
                     "" if self.quantized_vs_given_db is None
                     else f" (vs the float model as given: {self.quantized_vs_given_db:.1f} dB)"),
                 f"  weights only: {self.weights_only_db:.1f} dB; activations only: {self.activations_only_db:.1f} dB"]
        if np.isinf(self.weights_only_db) and self.fp32_sanity_db is not None and np.isfinite(self.fp32_sanity_db):
            lines.append("  (the weights are already on their grid in the bypassed path, AdaRound's rounding: "
                         "their error is in the FP32 sanity figure)")
        for i, s in enumerate(self.suspects, 1):
            lines.append(f"  suspect {i}: {s.layer} (+{s.gain_db:.1f} dB if float): {s.cause} -> {s.fix}")
        if self.tflite_exact is not None:
            worst = min(self.tensor_fidelity, key=lambda t: t[1], default=None)
            lines.append(f"  flatbuffer vs simulation: outputs {100 * self.tflite_exact:.2f}% exact; "
                         f"{len(self.tensor_fidelity)} intermediate tensors compared"
                         + (f", worst {worst[0]} {100 * worst[1]:.1f}% exact" if worst else ""))
        if self.fixed_db is not None:
            agree = "" if self.fixed_agreement is None else f", agreement {100 * self.fixed_agreement:.1f}%"
            lines.append(f"  tried: {self.fix_description} -> {self.fixed_db:.1f} dB{agree}")
        return "\n".join(lines)

    def write_report(self, directory) -> str:
        from tfquant.debug.report import write_report

        return write_report(self, directory)


def _weight_spread(kernel_rows: np.ndarray) -> float:
    r = np.max(np.abs(kernel_rows), axis=0)
    return float(np.max(r) / max(np.median(r), 1e-12))


def _cause_and_fix(layer: LayerSensitivity, weights_hurt: bool, per_channel: bool) -> tuple[str, str]:
    if layer.outlier_ratio is not None and layer.outlier_ratio > 10:
        return (f"its output range is set by rare outliers (range {layer.outlier_ratio:.0f}x the "
                "1-99% interval)", "clip the range (ranges='mse' or 'percentile'), or keep the tensor in float")
    if weights_hurt and layer.weight_spread is not None and layer.weight_spread > 8 and not per_channel:
        return (f"per-channel weight ranges differ {layer.weight_spread:.0f}x under one per-tensor grid",
                "cross-layer equalization (steps 'cle') or per-channel weights")
    if weights_hurt:
        return "weight rounding", "AdaRound (steps 'adaround') and bias correction"
    return "activation quantization", "better activation ranges ('mse'), or keep the tensor in float"


def diagnose(model, data, *, float_model=None, calibration=None, top: int = 3, try_fix: bool = True,
             check_tflite: bool = True, max_samples: int = 256, batch_size: int = 8,
             progress: bool = True, **ptq_options) -> Diagnosis:
    """Run the debugging workflow on `model` with `data` (float inputs [N, ...]).

    model: a `tfquant.ptq` result, a Keras model from `tfquant.quantize_model` (calibrated or
    trained), or a float SavedModel directory / Keras model, which is first quantized with
    `tfquant.ptq(model, calibration or data, **ptq_options)`.
    float_model: the reference (default: the model's own float path).
    check_tflite: export the model and compare the interpreter with the exact simulation, outputs
    and intermediate tensors (`tfquant.verify`, reference kernels, 8 samples).
    batch_size: samples per eager run (memory is one batch's live tensors, whatever the depth).
    progress: a tqdm bar over the runs (two per layer for the sensitivity).
    """
    x = np.asarray(data, np.float32)[:max_samples]
    if x.ndim < 2 or x.shape[0] == 0:
        raise DataError("diagnose needs a batch of float input samples [N, ...].")
    if not np.all(np.isfinite(x)):
        raise DataError("diagnose: the data contain NaN or Inf.")
    subject = _subject(model, x if calibration is None else calibration, ptq_options, batch_size)
    y_float = np.asarray(float_model(x)) if float_model is not None else subject.float_run(x)
    all_entries = subject.entries
    weights = set(subject.weight_entries())

    def db(floats=(), mode="quant"):
        return sqnr_db(y_float, subject.run(x, floats, mode))

    y_q = subject.run(x)
    # The bypassed path against an independent float model: a PTQ result's original model (its
    # steps change the float function: bias correction on purpose, CLE through clipping ReLU6),
    # or the `float_model` given. A QAT model alone has no other float model to compare with.
    y_given = (np.asarray(float_model(x)) if float_model is not None else
               subject.reference_run(x) if subject.route == "PTQ" else None)
    sanity = None if y_given is None else sqnr_db(y_given, subject.float_run(x))
    quantized = sqnr_db(y_float, y_q)
    quantized_given = None if y_given is None else sqnr_db(y_given, y_q)
    w_only = db(mode="weights")
    a_only = db(floats=weights)
    bar = _bar(progress, 1 + 2 * len(subject.layers), "tfquant.debug")
    tensors, values = _range_statistics(subject, x)
    bar.update(1)
    tensors.sort(key=lambda t: -t.outlier_ratio)
    stats = {t.entry: t for t in tensors}
    kernels = subject.kernels()
    per_channel = any(spec.per_channel for spec in subject.plan.weight_specs.values())
    layers = []
    for name, entries in subject.layers.items():
        others = [e for e in all_entries if e not in entries]
        w = [e for e in entries if e in weights]
        out = [e for e in entries if e not in weights]
        layers.append(LayerSensitivity(
            layer=name, entries=entries, only_db=db(floats=others), all_but_db=db(floats=entries),
            weight_spread=_weight_spread(kernels[w[0]][0]) if w and w[0] in kernels else None,
            outlier_ratio=stats[out[0]].outlier_ratio if out and out[0] in stats else None))
        bar.update(2)
    bar.close()
    ranked = sorted(layers, key=lambda la: -(la.all_but_db - quantized))
    weights_hurt = w_only < a_only
    suspects = []
    for la in ranked[:top]:
        gain = la.all_but_db - quantized
        if gain <= 0.05:
            break
        cause, fix = _cause_and_fix(la, weights_hurt and la.weight_spread is not None, per_channel)
        suspects.append(Suspect(la.layer, gain, cause, fix))
    result = Diagnosis(route=subject.route, samples=int(x.shape[0]), fp32_sanity_db=sanity,
                       quantized_db=quantized, quantized_vs_given_db=quantized_given,
                       weights_only_db=w_only, activations_only_db=a_only,
                       quantized_agreement=agreement(y_float, y_q), layers=layers, tensors=tensors,
                       suspects=suspects,
                       weight_ranges={n: (np.max(np.abs(k), 0), None if b is None else np.max(np.abs(b), 0))
                                      for n, (k, b) in kernels.items()},
                       samples_of={t.entry: values[t.entry].ravel()[:100_000] for t in tensors[:3]})
    if check_tflite:
        import tfquant

        v = tfquant.verify(tfquant.to_tflite(subject.model), subject.model, x[:8], kernels=("reference",),
                           intermediate_samples=8)
        result.tflite_exact = v.exact_fraction
        result.tensor_fidelity = [(f.name, f.exact, f.max_lsb) for f in v.tensors]
    if try_fix and suspects:
        worst = suspects[0]
        plan = subject.per_channel_plan(worst.layer) if "per-channel" in worst.fix and \
            hasattr(subject, "per_channel_plan") else None
        if plan is not None:           # the fix the report suggests, on that layer alone
            y_fix = subject.run_plan(x, plan)
            result.fix_description = f"{worst.layer} with per-channel weights"
        else:                          # mixed precision: its output tensor in float
            result.fix_floats = [e for e in subject.layers[worst.layer] if e not in weights] or \
                subject.layers[worst.layer]
            y_fix = subject.run(x, result.fix_floats)
            result.fix_description = f"{', '.join(result.fix_floats)} in float"
        result.fixed_db, result.fixed_agreement = sqnr_db(y_float, y_fix), agreement(y_float, y_fix)
    return result


class _NoBar:
    def update(self, n=1):
        pass

    def close(self):
        pass


def _bar(progress: bool, total: int, desc: str):
    if not progress:
        return _NoBar()
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, leave=False, unit="run")


def _subject(model, calibration, ptq_options, batch_size: int):
    import keras

    from tfquant.keras.layers import QuantLayer

    is_qat = isinstance(model, keras.Model) and any(
        isinstance(la, QuantLayer) for la in model._flatten_layers(include_self=False))
    is_ptq = hasattr(model, "plan") and hasattr(model, "graph")
    if not (is_qat or is_ptq):      # a float model: quantize it first
        import tfquant

        model = tfquant.ptq(model, calibration, progress=False, **ptq_options)
    return subject_of(model, batch_size)
