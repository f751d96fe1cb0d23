"""`verify`: run the flatbuffer in the interpreter and compare it with the simulation.

    >>> result = verify("model.tflite", qat_model, x_test[:256], float_model=float_model)
    >>> result.exact_fraction            # int8 outputs equal to the simulation's prediction
    >>> print(result.table())

For every output, under each kernel set (TFLite's reference kernels for fidelity, the default
XNNPACK kernels as users run them): the fraction of int8 outputs exactly equal to what the
simulation predicts (its float output quantized with the flatbuffer's own output scale and zero
point), within one LSB, the largest error in LSBs, top-1 agreement, and SQNR against the float
model. Intermediate tensors are compared too where a flatbuffer tensor is named after a FakeQuant
op of the simulation graph.
"""
from __future__ import annotations

import dataclasses
from typing import Callable, Optional, Sequence

import numpy as np
import tensorflow as tf
from absl import logging

from tfquant.core.quant_params import converter_params, dequantize, quantize
from tfquant.core.integer_kernels import simulation_mode
from tfquant.core.spec import QuantSpec
from tfquant.errors import DataError, KernelAbortError
from tfquant.export.converter import concrete_function_of, frozen_graph_def, is_ptq_result, with_plan
from tfquant.export.inspector import inspect
from tfquant.export.interpreter import TFLiteRunner


@dataclasses.dataclass
class Fidelity:
    """Integer agreement of one tensor between the simulation and the interpreter."""

    name: str
    count: int
    exact: float             # fraction of elements equal
    within_one: float        # fraction within one LSB
    max_lsb: int             # largest absolute difference in LSBs

    @classmethod
    def of(cls, name: str, predicted: np.ndarray, actual: np.ndarray) -> "Fidelity":
        diff = np.abs(predicted.astype(np.int64) - actual.astype(np.int64))
        return cls(name=name, count=int(diff.size), exact=float(np.mean(diff == 0)),
                   within_one=float(np.mean(diff <= 1)), max_lsb=int(diff.max(initial=0)))


@dataclasses.dataclass
class OutputReport:
    """One output under one kernel set."""

    kernels: str
    fidelity: Fidelity
    top1_vs_simulation: Optional[float]
    top1_vs_float: Optional[float]
    sqnr_vs_float_db: Optional[float]
    sqnr_vs_simulation_db: float


@dataclasses.dataclass
class VerificationResult:
    outputs: list[OutputReport]
    tensors: list[Fidelity]          # intermediate tensors (reference kernels)
    samples: int
    not_run: dict = dataclasses.field(default_factory=dict)   # kernel set -> why it could not run
    int16_ops: list = dataclasses.field(default_factory=list)  # "#i OP" of ops computing in int16

    def _ref(self) -> list[OutputReport]:
        return [o for o in self.outputs if o.kernels == "reference"] or self.outputs

    @property
    def exact_fraction(self) -> float:
        """Worst output's fraction of exactly predicted integers under reference kernels (the
        first kernel set that ran, where they could not: see `not_run`)."""
        return min(o.fidelity.exact for o in self._ref())

    @property
    def within_one_fraction(self) -> float:
        return min(o.fidelity.within_one for o in self._ref())

    @property
    def max_lsb(self) -> int:
        return max(o.fidelity.max_lsb for o in self._ref())

    def for_kernels(self, kernels: str) -> list[OutputReport]:
        return [o for o in self.outputs if o.kernels == kernels]

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def table(self) -> str:
        def pct(v):
            return "-" if v is None else f"{100 * v:.2f}%"

        def db(v):
            return "-" if v is None else f"{v:.1f} dB"

        lines = [f"verify: {self.samples} samples",
                 f"{'kernels':<10} {'output':<28} {'exact':>8} {'<=1 LSB':>8} {'max LSB':>7} "
                 f"{'top1 sim':>9} {'top1 float':>10} {'SQNR float':>10}"]
        for o in self.outputs:
            f = o.fidelity
            lines.append(f"{o.kernels:<10} {f.name[-28:]:<28} {pct(f.exact):>8} {pct(f.within_one):>8} "
                         f"{f.max_lsb:>7} {pct(o.top1_vs_simulation):>9} {pct(o.top1_vs_float):>10} "
                         f"{db(o.sqnr_vs_float_db):>10}")
        for kernels, why in self.not_run.items():
            lines.append(f"{kernels:<10} not run: {why}")
        if self.int16_ops:
            lines.append(f"int16 ops ({len(self.int16_ops)}): {', '.join(self.int16_ops)}: the simulation has no "
                         "exact int16 kernels (FakeQuant rounding only); their error is in the figures above "
                         "and, where matched, in the int16 tensors below")
        if self.tensors:
            lines.append(f"intermediate tensors (reference kernels): {len(self.tensors)}")
            for f in self.tensors:
                lines.append(f"  {f.name[-60:]:<60} {pct(f.exact):>8} {pct(f.within_one):>8} {f.max_lsb:>5}")
        return "\n".join(lines)


def sqnr_db(reference: np.ndarray, test: np.ndarray) -> float:
    """Signal-to-quantization-noise ratio of `test` against `reference`, in dB."""
    reference = np.asarray(reference, np.float64)
    noise = np.mean((reference - np.asarray(test, np.float64)) ** 2)
    signal = np.mean(reference**2)
    if noise == 0:
        return float("inf")
    return float(10 * np.log10(signal / noise)) if signal > 0 else float("-inf")


def top1_agreement(a: np.ndarray, b: np.ndarray) -> Optional[float]:
    """Fraction of rows (classes on the last axis) whose argmax agrees; None without classes."""
    if a.ndim < 2 or a.shape[-1] < 2:
        return None
    return float(np.mean(np.argmax(a.reshape(-1, a.shape[-1]), -1) == np.argmax(b.reshape(-1, b.shape[-1]), -1)))


def _as_list(y) -> list[np.ndarray]:
    if isinstance(y, dict):
        return [np.asarray(v) for _, v in sorted(y.items())]
    if isinstance(y, (list, tuple)):
        return [np.asarray(v) for v in y]
    return [np.asarray(y)]


def run_model(fn: Callable, inputs: Sequence[np.ndarray], batch_size: int) -> list[np.ndarray]:
    """Outputs of a Keras model or TF callable over `inputs`, batch by batch, as numpy."""
    import keras

    n = inputs[0].shape[0]
    chunks = []
    for start in range(0, n, batch_size):
        batch = [tf.constant(a[start:start + batch_size], tf.float32) for a in inputs]
        arg = batch[0] if len(batch) == 1 else batch
        y = fn(arg, training=False) if isinstance(fn, keras.Model) else (fn(arg) if len(batch) == 1 else fn(*batch))
        chunks.append(_as_list(y))
    return [np.concatenate([c[k] for c in chunks]) for k in range(len(chunks[0]))]


def _simulated_value(fake_quant_op) -> tf.Tensor:
    """The simulation's value of a quantized tensor: the FakeQuant output or, in an exact-mode
    graph, the straight-through sum that carries the integer kernel's result."""
    for consumer in fake_quant_op.outputs[0].consumers():
        if consumer.name.split("/")[-1].startswith("exact_ste"):
            return consumer.outputs[0]
    return fake_quant_op.outputs[0]


def _reachable(graph_def: tf.compat.v1.GraphDef, outputs: Sequence[str]) -> set[str]:
    """Names of the nodes of `graph_def` that the tensors `outputs` depend on."""
    inputs = {n.name: [i.lstrip("^").split(":")[0] for i in n.input] for n in graph_def.node}
    seen: set[str] = set()
    stack = [t.split(":")[0] for t in outputs]
    while stack:
        name = stack.pop()
        if name not in seen:
            seen.add(name)
            stack.extend(inputs.get(name, ()))
    return seen


class _FrozenSession:
    """A traced simulation frozen to a GraphDef and imported once into a session (TF's own
    kernels, unfused: the meta optimizer off), which gives its outputs and every activation
    FakeQuant's range and value (no ConcreteFunction is rebuilt around the frozen graph, and the
    graph is optimized and run once, not once more by an eager call: for a 40k-op graph each
    cost tens of seconds)."""

    def __init__(self, fn):
        graph_def, feed_names = frozen_graph_def(fn)
        needed = _reachable(graph_def, [t.name for t in fn.outputs])
        self.graph = tf.Graph()
        with self.graph.as_default():
            tf.graph_util.import_graph_def(graph_def, name="")
        del graph_def
        self.feeds = [self.graph.get_tensor_by_name(n) for n in feed_names]
        self.outputs = [self.graph.get_tensor_by_name(t.name) for t in fn.outputs]
        self.fq_ops = [op for op in self.graph.get_operations()
                       if op.type == "FakeQuantWithMinMaxVars" and op.inputs[0].op.type != "Const"
                       and op.name in needed]
        config = tf.compat.v1.ConfigProto()
        config.graph_options.rewrite_options.disable_meta_optimizer = True   # the graph's own kernels, unfused
        self.session = tf.compat.v1.Session(graph=self.graph, config=config)

    def run(self, fetches, inputs: list[np.ndarray]):
        return self.session.run(fetches, dict(zip(self.feeds, inputs)))

    def outputs_of(self, inputs: list[np.ndarray], batch_size: int) -> list[np.ndarray]:
        """The simulation's outputs over `inputs`, batch by batch (as `run_model`)."""
        n = inputs[0].shape[0]
        chunks = [self.run(self.outputs, [a[i:i + batch_size] for a in inputs]) for i in range(0, n, batch_size)]
        return [np.concatenate([np.asarray(c[k]) for c in chunks]) for k in range(len(self.outputs))]

    def close(self) -> None:
        self.session.close()


def _frozen_session(simulation) -> Optional[_FrozenSession]:
    """The frozen session of a traced simulation, or None (a plain Python callable has no graph)."""
    import keras

    if isinstance(simulation, keras.Model):
        return None
    try:
        return _FrozenSession(concrete_function_of(simulation))
    except Exception:  # noqa: BLE001 - a plain Python callable has no graph to compare
        return None


def _graph_candidates(frozen: Optional[_FrozenSession], inputs: list[np.ndarray]) -> list[tuple[str, float, int, np.ndarray]]:
    """(name, scale, zero point, simulated value) of each activation FakeQuant of a traced
    simulation (its exact value where the graph is an exact-mode one) that the outputs depend on,
    fetched at once from its frozen session."""
    if frozen is None or not frozen.fq_ops:
        return []
    fq_ops = frozen.fq_ops
    specs = [QuantSpec(bits=op.get_attr("num_bits"), narrow_range=op.get_attr("narrow_range")) for op in fq_ops]
    names = [op.name for op in fq_ops]
    fetches = [op.inputs[k] for op in fq_ops for k in (1, 2)] + [_simulated_value(op) for op in fq_ops]
    values = frozen.run(fetches, inputs)
    out = []
    for i, (name, spec) in enumerate(zip(names, specs)):
        scale, zp = converter_params(values[2 * i], values[2 * i + 1], spec)
        out.append((name, float(scale), int(zp), np.asarray(values[2 * len(names) + i])))
    return out


def _keras_candidates(qmodel, inputs: list[np.ndarray]) -> list[tuple[str, float, int, np.ndarray]]:
    """The same for a tfquant QAT model: each top-level tfquant layer's output, computed eagerly in
    the exact simulation mode (a traced Keras model cannot run its exact kernels: they need the
    ranges' values), with the grid its output quantizer gives."""
    import keras

    from tfquant.core.quant_params import quant_params
    from tfquant.keras.errors import WiringError
    from tfquant.keras.layers import QuantLayer

    chosen = []
    for layer in qmodel.layers:
        if not isinstance(layer, QuantLayer) or not isinstance(layer.output, keras.KerasTensor):
            continue
        try:
            q = layer.output_quantizer()
        except WiringError:
            continue
        if q is not None:
            chosen.append((layer, q))
    if not chosen:
        return []
    probe = keras.Model(qmodel.inputs, [layer.output for layer, _ in chosen])
    with simulation_mode("exact"):
        values = probe(inputs[0] if len(inputs) == 1 else inputs, training=False)
    values = values if isinstance(values, (list, tuple)) else [values]
    out = []
    for (layer, q), v in zip(chosen, values):
        lo, hi = q.range()
        p = quant_params(np.asarray(lo), np.asarray(hi), q.spec)
        out.append((layer.name, float(p.scale), int(p.zero_point), np.asarray(v)))
    return out


def _intermediate_fidelity(simulation, runner: TFLiteRunner, inputs: list[np.ndarray],
                           frozen: Optional[_FrozenSession] = None) -> list[Fidelity]:
    """Compare each activation quantizer of the simulation with the flatbuffer tensor it became.

    The converter renames tensors after fused ops, so a quantized tensor of the simulation and a
    flatbuffer tensor are matched by what they must share: scale, zero point and shape.
    Ambiguous matches (a shared quantizer over tensors of one shape) are skipped. The simulated
    values are the exact simulation's (a QAT model's layers run eagerly in exact mode).
    """
    import keras

    found_all = (_keras_candidates(simulation, inputs) if isinstance(simulation, keras.Model)
                 else _graph_candidates(frozen, inputs))
    candidates: dict[tuple, list] = {}
    for name, scale, zp, sim in found_all:
        candidates.setdefault((zp, sim.shape[1:]), []).append((scale, name, sim))
    matches = []
    for t in runner.report.tensors:
        if t.is_constant or t.dtype not in ("INT8", "INT16") or len(t.scales) != 1:
            continue
        found = [(name, sim) for s, name, sim in candidates.get((t.zero_points[0], tuple(t.shape[1:])), [])
                 if abs(s - t.scales[0]) <= 1e-6 * t.scales[0]]
        if len(found) == 1:
            matches.append((t, found[0]))
    used = [name for _, (name, _) in matches]
    matches = [(t, m) for t, m in matches if used.count(m[0]) == 1]
    runner.invoke(inputs)
    results = []
    for t, (name, sim) in matches:
        scale, zp, spec = runner.tensor_params(t.index)
        actual = runner.get_tensor(t.index)
        if actual.shape != sim.shape:
            continue
        results.append(Fidelity.of(f"{t.name.split(';')[0]} <- {name}",
                                   quantize(sim, scale[0], zp[0], spec), actual))
    return results


def verify(model, simulation: Callable, inputs, float_model: Optional[Callable] = None, *,
           kernels: Sequence[str] = ("reference", "default"), batch_size: int = 64,
           intermediate_samples: int = 8, print_table: bool = False, plan=None) -> VerificationResult:
    """Compare a flatbuffer's integer outputs with the simulation (and the float model).

    Args:
      model: the .tflite path or bytes.
      simulation: what predicts the flatbuffer: a tfquant Keras model (called eagerly in the
        "exact" simulation mode) or a tf.function traced in "exact" mode (see
        `tfquant.core.simulation_mode`), or a `tfquant.ptq` result (its exact simulation); a
        fake-quant-mode graph works too, within rounding.
      inputs: float input array (or a list, one per model input), batch first.
      float_model: the unquantized model, for top-1 agreement and SQNR against float.
      kernels: kernel sets to run ("reference", "optimized", "default").
      intermediate_samples: samples used for the per-tensor comparison (0 to skip).
      plan: simulate with this `tfquant.QuantPlan` (the one the flatbuffer was exported with).
    """
    arrays = [np.asarray(inputs, np.float32)] if isinstance(inputs, np.ndarray) else \
        [np.asarray(a, np.float32) for a in inputs]
    if arrays[0].shape[0] == 0:
        raise DataError("verify needs at least one input sample.")
    for a in arrays:
        if not np.all(np.isfinite(a)):
            raise DataError("verify: the inputs contain NaN or Inf.")
    TFLiteRunner(model, kernels="reference")._prepare(arrays)   # shape check before any work
    with with_plan(simulation, plan) as simulation:
        if is_ptq_result(simulation):
            simulation = simulation.exact
        with simulation_mode("exact"):   # Keras simulations run eagerly and read the mode per call
            frozen = _frozen_session(simulation)
            try:
                sim_outs = (run_model(simulation, arrays, batch_size) if frozen is None
                            else frozen.outputs_of(arrays, batch_size))
                tensors: list[Fidelity] = []     # intermediate tensors, under the reference kernels
                if intermediate_samples and "reference" in kernels:
                    try:
                        tensors = _intermediate_fidelity(
                            simulation, TFLiteRunner(model, kernels="reference", preserve_all_tensors=True),
                            [a[:intermediate_samples] for a in arrays], frozen)
                    except KernelAbortError:
                        pass                     # reported below, from the run over all samples
            finally:
                if frozen is not None:
                    frozen.close()
    float_outs = run_model(float_model, arrays, batch_size) if float_model is not None else None

    reports: list[OutputReport] = []
    not_run: dict[str, str] = {}
    for k in kernels:
        runner = TFLiteRunner(model, kernels=k, preserve_all_tensors=True)
        try:
            ints = runner.run_int(arrays, batch_size=batch_size)
        except KernelAbortError as e:
            if len(kernels) == 1:
                raise
            logging.warning("verify: %s kernels not run: %s", k, e)
            not_run[k] = str(e)
            continue
        if len(ints) != len(sim_outs):
            raise DataError(f"The flatbuffer has {len(ints)} outputs but the simulation gives {len(sim_outs)}.")
        for j, (q, sim) in enumerate(zip(ints, sim_outs)):
            index = runner.integer_output_indices()[j]
            scale, zp, spec = runner.tensor_params(index)
            predicted = quantize(sim.reshape(q.shape), scale[0], zp[0], spec)
            actual_float = dequantize(q, scale[0], zp[0])
            fl = float_outs[j].reshape(q.shape) if float_outs is not None else None
            reports.append(OutputReport(
                kernels=k,
                fidelity=Fidelity.of(runner.report.tensors[index].name.split(";")[0], predicted, q),
                top1_vs_simulation=top1_agreement(sim.reshape(q.shape), actual_float),
                top1_vs_float=None if fl is None else top1_agreement(fl, actual_float),
                sqnr_vs_float_db=None if fl is None else sqnr_db(fl, actual_float),
                sqnr_vs_simulation_db=sqnr_db(sim.reshape(q.shape), actual_float)))
    report = inspect(model)
    int16_ops = [f"#{op.index} {op.op}" for op in report.ops if op.op not in ("QUANTIZE", "DEQUANTIZE")
                 and any(report.tensors[i].dtype == "INT16" for i in op.outputs)]
    result = VerificationResult(outputs=reports, tensors=tensors, samples=int(arrays[0].shape[0]), not_run=not_run,
                                int16_ops=int16_ops)
    if print_table:
        print(result.table())
    return result
