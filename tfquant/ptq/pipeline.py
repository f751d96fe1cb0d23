"""`tfquant.ptq`: the white paper's standard post-training quantization pipeline (Nagel et al.
2021, section 3.5) on a SavedModel or a Keras model, to an int8 TFLite flatbuffer.

    >>> sim = tfquant.ptq("saved_model_dir", calibration=x_cal, output="model.tflite")
    >>> sim(x)                                  # the simulation (FakeQuant graph)
    >>> print(sim.report.summary())             # what each step did
    >>> tfquant.verify("model.tflite", sim.exact, x, float_model=sim.float_model)
    >>> sim = tfquant.ptq(model, config=PTQConfig(data_free=True, input_range=(-1, 1)))

Steps, in order (each optional, see `PTQConfig`):
  import -> BN folding -> activation fusion -> [calibrated pre-activation ranges] -> CLE ->
  high-bias absorption -> weight ranges -> [AdaRound, empirical bias correction: layer by layer]
  -> [analytic bias correction] -> activation ranges (on the weight-quantized model) -> export.
With no calibration data every step is data-free (BN statistics); AdaRound is then skipped.
"""
from __future__ import annotations

import dataclasses
import os
import time
from typing import Any, Optional

import numpy as np
import tensorflow as tf

from tfquant.core.op_rules import HARD_SWISH_TFLITE_OP
from tfquant.errors import DataError, ModelFileError, SpecError
from tfquant.graph import (
    Graph,
    QuantPlan,
    assign_quantizers,
    build_function,
    fuse_activations,
    fuse_hard_swish,
    load_graph,
    split_affines,
)
from tfquant.graph.patterns import equalization_chains
from tfquant.io_utils import atomic_directory
from tfquant.ptq.bias_correction import analytic_bias_correction
from tfquant.ptq.bn_folding import fold_batch_norms, unfolded_batch_norms
from tfquant.ptq.calibration import Calibration
from tfquant.ptq.cle import absorb_high_biases, equalize
from tfquant.ptq.config import PTQConfig
from tfquant.ptq.layerwise import LayerwiseReport, run_layerwise
from tfquant.ptq.ranges import calibrate_activations, pre_activation_ranges, set_data_free_ranges, set_weight_ranges


@dataclasses.dataclass
class PTQReport:
    """What the pipeline did, step by step."""

    source: str = ""
    data_free: bool = False
    steps: list[str] = dataclasses.field(default_factory=list)
    seconds: dict[str, float] = dataclasses.field(default_factory=dict)
    folded_bn: int = 0
    unfolded_bn: list[str] = dataclasses.field(default_factory=list)
    unknown_ops: list[tuple[str, str]] = dataclasses.field(default_factory=list)
    cle: Optional[str] = None
    absorbed: dict[str, int] = dataclasses.field(default_factory=dict)
    bias_correction: dict[str, float] = dataclasses.field(default_factory=dict)
    layerwise: Optional[LayerwiseReport] = None
    estimators: dict[str, int] = dataclasses.field(default_factory=dict)
    notes: list[str] = dataclasses.field(default_factory=list)

    def summary(self) -> str:
        lines = [f"tfquant.ptq on {self.source} ({'data-free' if self.data_free else 'calibrated'}); "
                 f"steps: {', '.join(self.steps) or 'none'}"]
        lines.append(f"  BN folded: {self.folded_bn}" + (f"; not folded: {', '.join(self.unfolded_bn)}"
                                                         if self.unfolded_bn else ""))
        if self.cle:
            lines.append("  " + self.cle)
        if self.absorbed:
            lines.append(f"  high-bias absorption: {sum(self.absorbed.values())} channels in {len(self.absorbed)} layers")
        if self.bias_correction:
            lines.append(f"  bias correction: {len(self.bias_correction)} layers, largest shift "
                         f"{max(self.bias_correction.values()):.4g}")
        if self.layerwise and self.layerwise.adaround:
            res = self.layerwise.adaround.values()
            better = sum(r.loss_adaround < r.loss_nearest for r in res)
            lines.append(f"  AdaRound: {len(res)} layers, {better} better than round-to-nearest")
        if self.estimators:
            lines.append("  activation ranges: " + ", ".join(f"{k} x{v}" for k, v in sorted(self.estimators.items())))
        if self.unknown_ops:
            lines.append("  passed through untouched: " + ", ".join(f"{n} ({op})" for n, op in self.unknown_ops))
        for note in self.notes:
            lines.append("  note: " + note)
        lines.append("  time: " + ", ".join(f"{k} {v:.1f}s" for k, v in self.seconds.items()))
        return "\n".join(lines)


@dataclasses.dataclass
class LayerwiseState:
    """What the layer-by-layer bias correction started from: its samples and the biases before it."""
    samples: np.ndarray
    biases: dict          # linear node name -> bias before the correction (None: no bias)


class PTQResult:
    """The quantized model: a simulation you can call, export and verify.

    __call__ / fake_quant: the FakeQuant graph (what the converter reads);
    exact: the bit-exact simulation of TFLite's reference kernels (for `tfquant.verify`);
    float_model: the transformed float model (BN folded, equalized, bias corrected);
    original_model: the model as imported, before any step (the reference for agreement);
    graph / plan: the IR and its `QuantPlan` (ranges, weight grids), to inspect, save or edit;
    `with_plan(plan)` gives the result for another plan (or call `rebuild()` after editing
    `plan` in place).
    """

    def __init__(self, graph: Graph, plan: QuantPlan, config: PTQConfig, report: PTQReport,
                 original: Optional[Graph] = None):
        self.graph, self.plan, self.config, self.report = graph, plan, config, report
        self.original_graph = original
        self.tflite: Optional[bytes] = None
        self._original_model = None
        self.layerwise_state: Optional[LayerwiseState] = None
        self._recorrected_own: Optional[dict] = None     # bias_corrected_for's own-plan baseline
        self.rebuild()

    @property
    def original_model(self):
        if self._original_model is None:
            self._original_model = build_function(self.original_graph if self.original_graph is not None
                                                  else self.graph)
        return self._original_model

    def rebuild(self) -> None:
        self.fake_quant = build_function(self.graph, self.plan, mode="quant")
        self.exact = build_function(self.graph, self.plan, mode="quant", exact=True)
        self.float_model = build_function(self.graph)

    def with_plan(self, plan: QuantPlan) -> "PTQResult":
        """The same model with another plan (e.g. an edited or loaded `result.plan`)."""
        self.plan.check_matches(plan)
        other = PTQResult(self.graph, plan.copy(), self.config, self.report, self.original_graph)
        other._original_model = self._original_model
        other.layerwise_state = self.layerwise_state
        return other

    def bias_corrected_for(self, plan: QuantPlan) -> "PTQResult":
        """`with_plan(plan)`, with the empirical bias correction re-run for it: a layer `plan`
        keeps in float gets its uncorrected bias back and the int8 layers after it are corrected
        for what now reaches them (the corrections made for the all-int8 model would over-correct).
        Kernels (AdaRound's included) and activation ranges stay. Without an empirical bias
        correction in the pipeline this is `with_plan(plan)`.

        The re-correction is applied as a difference: each bias moves by what the correction gives
        for `plan` minus what it gives for the pipeline's own plan. Without AdaRound the latter
        reproduces the pipeline's biases exactly, so this is the correction for `plan`; after
        AdaRound (which learned its rounding against the corrected biases, and whose mean error a
        second correction would undo) an unchanged plan keeps its biases, and only the layers the
        float tensors reach move (on a small model, one float tensor then left the flatbuffer's
        SQNR at 39.2 dB instead of lowering it to 37.7)."""
        state = self.layerwise_state
        if state is None:
            return self.with_plan(plan)
        self.plan.check_matches(plan)
        if self._recorrected_own is None:
            self._recorrected_own = self._recorrected_biases(self.plan)
        own, mixed = self._recorrected_own, self._recorrected_biases(plan)
        graph = self.graph.copy()
        for node in graph.linear_nodes():
            if node.name in state.biases and node.bias is not None and mixed.get(node.name) is not None:
                node.weights["bias"] = (node.bias + (mixed[node.name] - own[node.name])).astype(np.float32)
            elif node.name in state.biases:
                node.weights["bias"] = mixed.get(node.name)
                if node.weights["bias"] is None:
                    node.weights.pop("bias", None)
        other = PTQResult(graph, plan.copy(), self.config, self.report, self.original_graph)
        other._original_model = self._original_model
        other.layerwise_state = state
        return other

    def _recorrected_biases(self, plan: QuantPlan) -> dict:
        """Layer -> its bias after the empirical correction re-run for `plan` from the uncorrected
        biases (kernels as they are)."""
        state = self.layerwise_state
        graph = self.graph.copy()
        for node in graph.linear_nodes():
            if node.name not in state.biases:
                continue
            bias = state.biases[node.name]
            if bias is None:
                node.weights.pop("bias", None)
            else:
                node.weights["bias"] = bias
        run_layerwise(graph, plan, state.samples, self.config, bias_correction=True, adaround=False,
                      quantize_activations=self.config.layerwise_activations)
        return {n.name: None if n.bias is None else np.array(n.bias) for n in graph.linear_nodes()}

    def export_problems(self) -> list[str]:
        """What the converter would not honour in `plan`: float weights on an op whose input and
        output are int8 (the converter quantizes such weights itself)."""
        plan = self.plan
        return [f"{n.name}: float weights between int8 tensors; keep the layer in float through its "
                f"output quantizer ({plan.qid.get(n.output())}) instead"
                for n in self.graph.linear_nodes()
                if not plan.weights_quantized(n.name) and plan.is_quantized(n.inputs[0])
                and plan.is_quantized(n.output())]

    def __call__(self, *inputs):
        return self.fake_quant(*[tf.convert_to_tensor(x, tf.float32) for x in inputs])

    def to_tflite(self, path: Optional[str | os.PathLike] = None, int8_io: bool = False) -> bytes:
        """The int8 flatbuffer of `plan` (written atomically to `path` if given)."""
        from tfquant.export import to_tflite

        self.tflite = to_tflite(self.fake_quant, path, int8_io=int8_io)
        return self.tflite

    def save_float(self, directory: str | os.PathLike) -> str:
        """Write the transformed float model as a SavedModel (signature serving_default),
        atomically: the folder appears complete or not at all."""
        module = tf.Module()
        module.serve = self.float_model
        with atomic_directory(directory) as tmp:
            tf.saved_model.save(module, tmp, signatures={"serving_default": self.float_model.get_concrete_function()})
        return os.fspath(directory)

    def verify(self, inputs, **kwargs):
        """`tfquant.verify` of the exported flatbuffer against the exact simulation (and, for
        top-1 agreement and SQNR, against the original float model)."""
        from tfquant.export import verify

        if self.tflite is None:
            self.to_tflite()
        return verify(self.tflite, self.exact, inputs, float_model=self.original_model, **kwargs)


def _progress(config: PTQConfig):
    if not config.progress:
        return lambda it, **k: it
    from tqdm.auto import tqdm

    return lambda it, **k: tqdm(it, leave=False, **k)


def _check_graph(graph: Graph) -> None:
    if len(graph.inputs) != 1:
        raise ModelFileError(f"tfquant.ptq quantizes models with one input; this one has {len(graph.inputs)} "
                             f"({', '.join(s.key for s in graph.inputs)}).")
    spec = graph.inputs[0]
    if not spec.dtype.is_floating:
        raise ModelFileError(f"The model's input {spec.key!r} is {spec.dtype.name}: tfquant.ptq needs a float input.")
    if spec.shape is None:
        raise ModelFileError(f"The model's input {spec.key!r} has an unknown rank.")
    for node in graph:
        for key, value in node.weights.items():
            if value is not None and np.issubdtype(np.asarray(value).dtype, np.floating) \
                    and not np.all(np.isfinite(value)):
                raise DataError(f"The model's weights contain NaN or Inf: {key} of {node.name!r} "
                                f"({node.tf_type}). Fix the float model before quantizing it.")
    if not graph.linear_nodes():
        raise ModelFileError("The model has no Conv2D, DepthwiseConv2dNative or MatMul with constant "
                             "weights: nothing for tfquant.ptq to quantize.")


def _config(config: Optional[PTQConfig], overrides: dict) -> PTQConfig:
    config = config or PTQConfig()
    if not isinstance(config, PTQConfig):
        raise SpecError(f"config must be a tfquant.PTQConfig, got {type(config).__name__}.")
    if overrides:
        fields = {f.name for f in dataclasses.fields(PTQConfig)}
        unknown = sorted(set(overrides) - fields)
        if unknown:
            raise SpecError(f"Unknown tfquant.ptq option(s) {unknown}; see PTQConfig.")
        config = dataclasses.replace(config, **overrides)
    return config


def _activation_ranges(graph, plan, cal, config, progress, report) -> None:
    chosen = calibrate_activations(graph, plan, cal, config, progress)
    for name in chosen.values():
        report.estimators[name] = report.estimators.get(name, 0) + 1
    report.steps.append("activation ranges (" + ", ".join(sorted(set(chosen.values()))) + ")")


def ptq(model: Any, calibration: Any = None, config: Optional[PTQConfig] = None, *,
        signature: str = "serving_default", output: Optional[str | os.PathLike] = None,
        saved_model_output: Optional[str | os.PathLike] = None, int8_io: bool = False,
        **overrides) -> PTQResult:
    """Post-training quantization of a float model to an int8 TFLite simulation and flatbuffer.

    Args:
      model: a SavedModel directory (its `signature`), a Keras model, or a tf.function with an
        input signature.
      calibration: a numpy array [N, ...] of preprocessed float samples, a tf.data.Dataset, a
        folder of images (see PTQConfig.image_mean / image_std), a .npy file, a .tfrecord of
        tf.train.Example (see PTQConfig.tfrecord_feature), or None for a
        data-free pipeline (then PTQConfig.input_range is required).
      config: a `PTQConfig`; keyword `overrides` replace its fields (e.g. per_channel=False).
      output: write the int8 flatbuffer there (atomically).
      saved_model_output: write the transformed float model there as a SavedModel (atomically).
      int8_io: int8 inputs and outputs in the flatbuffer (otherwise float, quantized inside).

    Returns a `PTQResult` (callable simulation; `.exact`, `.float_model`, `.report`, `.tflite`).
    Raises `ModelFileError`, `DataError` or `SpecError` (all `TFQuantError`) for bad input.
    """
    config = _config(config, overrides)
    progress = _progress(config)
    report = PTQReport()
    clock = time.perf_counter()
    t_start = clock

    def lap(name: str):
        nonlocal clock
        now = time.perf_counter()
        report.seconds[name] = report.seconds.get(name, 0.0) + now - clock
        clock = now

    graph = load_graph(model, signature)
    report.source = graph.source
    _check_graph(graph)
    original = graph.copy()
    data_free = config.data_free or calibration is None
    report.data_free = data_free
    if data_free and config.input_range is None:
        raise DataError("No calibration data: a data-free PTQ needs the model's input range. Set "
                        "input_range=(min, max) (e.g. (-1.0, 1.0) for inputs scaled to [-1, 1]) or give "
                        "calibration data.")
    cal = None if data_free else Calibration.of(calibration, graph.inputs[0], config)
    if cal is not None:   # fail early on empty, mistyped, misshapen or constant data
        first = next(iter(cal.batches(config.batch_size, limit=config.batch_size)))
        if first.shape[0] > 1 and float(np.ptp(first)) == 0.0:
            raise DataError(f"The calibration data are constant (the first {first.shape[0]} samples are all "
                            f"{float(first.flat[0])!r}): ranges set from them would quantize every real input "
                            "to a constant. Give real, preprocessed samples.")
    report.unknown_ops = graph.unknown_ops
    lap("import")

    steps = config.steps_for(data_free)
    report.folded_bn = len(fold_batch_norms(graph))
    report.unfolded_bn = unfolded_batch_norms(graph)
    if config.hard_swish == HARD_SWISH_TFLITE_OP:
        fuse_hard_swish(graph)    # x * relu6(x + 3) / 6: one int8 HARD_SWISH, as the converter makes it
    split_affines(graph)          # the rest: int8 MUL / ADD with constants, as the converter makes them
    fuse_activations(graph)
    lap("bn folding")

    pre_ranges: dict = {}
    chains = equalization_chains(graph)
    if cal is not None and chains and ("cle" in steps or "bias_absorption" in steps):
        names = sorted({n.name for c in chains for n in c.layers[:-1]})
        pre_ranges = pre_activation_ranges(graph, cal, config, names, progress)
        lap("calibration (pre-activations)")
    if "cle" in steps:
        eq = equalize(graph, config, pre_ranges, data_free=data_free)
        report.cle = eq.summary() + (f"; {eq.relu6_replaced} ReLU6 replaced by ReLU" if eq.relu6_replaced else "")
        report.steps.append("cle")
        lap("cle")
    if "bias_absorption" in steps:
        report.absorbed = absorb_high_biases(graph, config, pre_ranges, data_free=data_free)
        report.steps.append("bias_absorption")
        lap("bias absorption")

    plan = assign_quantizers(graph)
    set_weight_ranges(graph, plan, config.per_channel, config.weight_estimator)
    report.steps.append(f"weight ranges ({config.weight_estimator}, "
                        f"{'per-channel' if config.per_channel else 'per-tensor'})")
    lap("weight ranges")

    empirical = "bias_correction" in steps and not data_free and config.bias_correction in ("auto", "empirical")
    analytic = "bias_correction" in steps and (data_free or config.bias_correction == "analytic")
    adaround = "adaround" in steps and not data_free
    if "adaround" in steps and data_free:
        report.notes.append("AdaRound skipped: it needs calibration data.")
    if "bias_correction" in steps and data_free and config.bias_correction == "empirical":
        report.notes.append("empirical bias correction needs data: analytic bias correction used instead.")
    ranges_set = False
    layerwise_state = None
    if empirical or adaround:
        if config.layerwise_activations:   # ranges first: the layer-by-layer steps see them
            _activation_ranges(graph, plan, cal, config, progress, report)
            ranges_set = True
            lap("activation ranges")
        samples = cal.take(config.layerwise_samples, batch_size=config.batch_size)
        if empirical:       # what a mixed-precision plan re-corrects from (bias_corrected_for)
            layerwise_state = LayerwiseState(samples, {n.name: None if n.bias is None else n.bias.copy()
                                                        for n in graph.linear_nodes()})
        lw = run_layerwise(graph, plan, samples, config, bias_correction=empirical, adaround=adaround,
                           quantize_activations=config.layerwise_activations,
                           progress=progress)
        report.layerwise = lw
        report.bias_correction.update(lw.bias_shift)
        if adaround:
            report.steps.append("adaround")
        if empirical:
            report.steps.append("bias_correction (empirical)")
        lap("layer by layer")
    if analytic:
        report.bias_correction.update(analytic_bias_correction(graph, plan, config.input_range))
        report.steps.append("bias_correction (analytic)")
        lap("bias correction (analytic)")

    if data_free:
        set_data_free_ranges(graph, plan, config)
        report.estimators = {"bn": len(plan.calibrated_ids())}
        report.steps.append("activation ranges (bn)")
    elif not ranges_set:
        _activation_ranges(graph, plan, cal, config, progress, report)
    lap("activation ranges")

    result = PTQResult(graph, plan, config, report, original)
    result.layerwise_state = layerwise_state
    if output is not None:
        result.to_tflite(output, int8_io=int8_io)
        lap("export")
    if saved_model_output is not None:
        result.save_float(saved_model_output)
        lap("float SavedModel")
    report.seconds["total"] = time.perf_counter() - t_start
    return result
