"""Range setting: weights (min-max or MSE, per-channel or per-tensor) and activations (min-max,
MSE, percentile, cross-entropy for the logits, or BN-based for a data-free pipeline).

Every range comes from `tfquant.core`'s estimators and becomes a scale only in `tfquant.core`.
Activations are observed on the model with its weights already on their integer grid (the model
the int8 kernels will run), streaming the calibration set batch by batch.
"""
from __future__ import annotations

from typing import Callable

import numpy as np
import tensorflow as tf

from tfquant.core import MSERange, QuantSpec, bn_range, kernel_range, make_estimator
from tfquant.errors import DataError
from tfquant.graph import Emitter, Graph, Node, QuantPlan, input_signature
from tfquant.ptq.cle import ChannelRange
from tfquant.ptq.layerwise import _chunks
from tfquant.core.op_rules import ACTIVATION_BOUNDS
from tfquant.ptq.stats import propagate_stats

ACT = QuantSpec.activation()


# ---------------------------------------------------------------------------------------------
# weights
# ---------------------------------------------------------------------------------------------
def _kernel_rows(node: Node) -> np.ndarray:
    """The kernel as [rows, output channels] (depthwise: C * M channels)."""
    k = node.kernel
    return k.reshape(-1, node.out_channels)


def weight_range(node: Node, spec: QuantSpec, estimator: str) -> tuple[np.ndarray, np.ndarray]:
    """(min, max) of a linear node's kernel under `spec` (per output channel or per tensor)."""
    if not np.all(np.isfinite(node.kernel)):
        raise DataError(f"The weights of {node.name!r} contain NaN or Inf: fix the float model.")
    if estimator == "minmax":
        lo, hi = kernel_range(node.kernel, depthwise=node.type == "depthwise", per_channel=spec.per_channel)
        return np.asarray(lo, np.float64), np.asarray(hi, np.float64)
    rows = _kernel_rows(node)
    est = MSERange(spec.replace(axis=-1), max_samples=max(rows.shape[0], 1) if spec.per_channel
                   else min(rows.size, 1_000_000))
    est.update(rows)
    lo, hi = est.range()
    return np.asarray(lo, np.float64), np.asarray(hi, np.float64)


def set_weight_ranges(graph: Graph, plan: QuantPlan, per_channel: bool, estimator: str) -> None:
    """Weight spec and range of every linear node (MatMul always per-tensor)."""
    for node in graph.linear_nodes():
        spec = QuantSpec.weight(per_channel=per_channel and node.type != "matmul")
        plan.weight_specs[node.name] = spec
        plan.weight_ranges[node.name] = weight_range(node, spec, estimator)


# ---------------------------------------------------------------------------------------------
# calibration passes
# ---------------------------------------------------------------------------------------------
def _reduce_axes(t: tf.Tensor) -> list[int]:
    return list(range(t.shape.rank - 1))


def pre_activation_ranges(graph: Graph, calibration, config, names: list[str],
                          progress: Callable = lambda it, **k: it) -> dict[str, ChannelRange]:
    """Per-channel min / max of the pre-activation outputs of linear nodes `names` (float model)."""
    if not names:
        return {}
    sig = input_signature(graph)

    @tf.function(input_signature=sig, autograph=False)
    def observe(*xs):
        em = Emitter(graph, None, "float", keep_pre_activation=True)
        em.run(xs)
        out = {}
        for n in names:
            y = em.pre_activation[n]
            out[n] = (tf.reduce_min(y, _reduce_axes(y)), tf.reduce_max(y, _reduce_axes(y)))
        return out

    ranges: dict[str, list] = {}
    for batch in progress(calibration.batches(config.batch_size, config.calibration_limit,
                                              asked=config.max_calibration_samples is not None),
                          desc="calibration: pre-activations"):
        out = observe(batch)
        for n, (lo, hi) in out.items():
            lo, hi = lo.numpy().astype(np.float64), hi.numpy().astype(np.float64)
            if n in ranges:
                ranges[n] = [np.minimum(ranges[n][0], lo), np.maximum(ranges[n][1], hi)]
            else:
                ranges[n] = [lo, hi]
    return {n: ChannelRange(lo, hi) for n, (lo, hi) in ranges.items()}


def logits_quantizers(graph: Graph, plan: QuantPlan) -> set[str]:
    """Quantizer ids of the logits: the input of a softmax, or a model output that is not."""
    ids = set()
    for node in graph:
        if node.type == "softmax":
            q = plan.qid.get(node.inputs[0])
            if q is not None and q not in plan.fixed:
                ids.add(q)
    for r in graph.output_refs():
        producer = graph.producer(r)
        q = plan.qid.get(r)
        shape = producer.out_shapes[0] if producer.out_shapes else None
        if q is not None and q not in plan.fixed and producer.type != "softmax" and \
                shape is not None and shape.rank == 2 and (shape[-1] or 0) >= 2:
            ids.add(q)
    return ids


def _estimator(name: str, config):
    """The core estimator of that name, with its defaults (the ones QAT's calibrate uses)."""
    if name == "percentile":
        return make_estimator("percentile", ACT, percentile=config.percentile, seed=config.seed)
    if name in ("mse", "cross_entropy"):
        return make_estimator(name, ACT, seed=config.seed)
    return make_estimator(name, ACT)


def calibrate_activations(graph: Graph, plan: QuantPlan, calibration, config,
                          progress: Callable = lambda it, **k: it, mode: str = "weights") -> dict[str, str]:
    """Set plan.ranges for every calibrated quantizer from the calibration data.

    Returns {quantizer id: estimator used}."""
    ids = plan.calibrated_ids()
    logits = logits_quantizers(graph, plan)
    chosen = {}
    act_name = config.activation_estimator
    if act_name == "best":
        candidates = {q: (config.logits_estimator,) if q in logits else tuple(config.range_candidates)
                      for q in ids}
        observed = observe_candidate_ranges(graph, plan, calibration, config, candidates, progress, mode)
        samples = calibration.take(config.range_selection_samples, batch_size=config.batch_size)
        return select_ranges_by_output(graph, plan, samples, observed, {q: cs[0] for q, cs in candidates.items()},
                                       progress)
    stats_ranges = bn_ranges(graph, plan, config, None, allow_missing=True) if act_name == "bn" else {}
    observe = {}
    for q in ids:
        name = config.logits_estimator if q in logits else act_name
        if name == "bn":
            if q in stats_ranges:
                plan.ranges[q] = stats_ranges[q]
                chosen[q] = "bn"
                continue
            name = "minmax"   # no batch norm behind this tensor: observe it
        observe[q] = (name,)
        chosen[q] = name
    if observe:
        observed = observe_candidate_ranges(graph, plan, calibration, config, observe, progress, mode)
        for q, (name,) in observe.items():
            plan.ranges[q] = observed[q][name]
    return chosen


# ---------------------------------------------------------------------------------------------
# data-free (BN-based) activation ranges
# ---------------------------------------------------------------------------------------------
def bn_ranges(graph: Graph, plan: QuantPlan, config, input_range, allow_missing: bool = False) -> dict:
    """Ranges from batch-norm statistics (beta +- alpha |gamma|, clipped by the activation),
    propagated through the graph; the model input takes `input_range`."""
    from tfquant.ptq.stats import input_stats_from_range

    in_stats = input_stats_from_range(graph, input_range) if input_range is not None else {}
    post, pre = propagate_stats(graph, in_stats)
    out: dict[str, tuple[float, float]] = {}
    for q in plan.calibrated_ids():
        los, his = [], []
        for r in plan.owners[q]:
            node = graph.producer(r)
            if node.type == "input" and input_range is not None:
                los.append(input_range[0])
                his.append(input_range[1])
                continue
            if node.is_linear and node.name in pre:
                st, act = pre[node.name], node.activation
            elif r in post:
                st, act = post[r], (node.activation if node.type in ("add", "affine", "bias_add") else None)
            else:
                break
            low, high = ACTIVATION_BOUNDS[act]
            lo, hi = bn_range(st.std, st.mean, alpha=config.bn_alpha,
                              clip_low=None if not np.isfinite(low) else low,
                              clip_high=None if not np.isfinite(high) else high)
            los.append(float(lo))
            his.append(float(hi))
        else:
            out[q] = (min(los), max(his))
            continue
        if not allow_missing:
            node = graph.producer(plan.owners[q][0])
            raise DataError(
                f"Data-free range setting has no batch-norm statistics for tensor {plan.owners[q][0]!r} "
                f"({node.tf_type or node.type}): give calibration data.")
    return out


def set_data_free_ranges(graph: Graph, plan: QuantPlan, config) -> None:
    if config.input_range is None:
        raise DataError("A data-free PTQ needs the model's input range: set PTQConfig.input_range "
                        "(e.g. (-1.0, 1.0)), or give calibration data.")
    plan.ranges.update(bn_ranges(graph, plan, config, config.input_range))


# ---------------------------------------------------------------------------------------------
# per-tensor estimator choice by the model's output error
# ---------------------------------------------------------------------------------------------
def observe_candidate_ranges(graph: Graph, plan: QuantPlan, calibration, config,
                             candidates: dict[str, tuple[str, ...]], progress: Callable = lambda it, **k: it,
                             mode: str = "weights") -> dict[str, dict[str, tuple[float, float]]]:
    """{quantizer id: {estimator: (min, max)}} of each quantizer's `candidates` estimators, in one
    calibration pass."""
    estimators = {q: {c: _estimator(c, config) for c in cs} for q, cs in candidates.items()}
    fetch = {q: list(plan.owners[q]) for q in candidates}
    refs = sorted({r for rs in fetch.values() for r in rs})
    sig = input_signature(graph)

    @tf.function(input_signature=sig, autograph=False)
    def observe(*xs):
        env = Emitter(graph, plan, mode).run(xs)
        return {r: env[r] for r in refs}

    for batch in progress(calibration.batches(config.batch_size, config.calibration_limit,
                                              asked=config.max_calibration_samples is not None),
                          desc="calibration: activations"):
        out = observe(batch)
        for q, rs in fetch.items():
            for r in rs:
                value = out[r].numpy()
                for est in estimators[q].values():
                    est.update(value)
    return {q: {c: tuple(float(v) for v in est.range()) for c, est in ests.items()}
            for q, ests in estimators.items()}


def select_ranges_by_output(graph: Graph, plan: QuantPlan, samples: np.ndarray,
                            candidates: dict[str, dict[str, tuple[float, float]]], start: dict[str, str],
                            progress: Callable = lambda it, **k: it, chunk: int = 16) -> dict[str, str]:
    """Per quantizer, the candidate range with the least error of the model's outputs.

    Coordinate descent in graph order from `start` ({quantizer: estimator}): every other
    quantizer keeps its current choice while one quantizer tries each of its candidates on
    `samples` (all activations quantized, weights on their grid), against the float model's
    outputs; the lowest summed squared error wins (a tie keeps the current choice). Sets
    plan.ranges; returns {quantizer: estimator chosen}."""
    work = plan.copy()
    variables = {}
    for q, choice in start.items():
        lo, hi = candidates[q][choice]
        variables[q] = (tf.Variable(lo, dtype=tf.float32, trainable=False),
                        tf.Variable(hi, dtype=tf.float32, trainable=False))
        work.ranges[q] = variables[q]
    sig = input_signature(graph)
    outputs = [r for _, r in graph.outputs]

    @tf.function(input_signature=sig, autograph=False)
    def float_fn(*xs):
        env = Emitter(graph, None, "float").run(xs)
        return {r: env[r] for r in outputs}

    @tf.function(input_signature=sig, autograph=False)
    def quant_fn(*xs):
        env = Emitter(graph, work, "quant").run(xs)
        return {r: env[r] for r in outputs}

    batches = [tf.constant(samples[s]) for s in _chunks(samples.shape[0], chunk)]
    targets = [{r: np.asarray(v, np.float64) for r, v in float_fn(b).items()} for b in batches]

    def total() -> float:
        err = 0.0
        for b, t in zip(batches, targets):
            for r, v in quant_fn(b).items():
                err += float(np.sum(np.square(np.asarray(v, np.float64) - t[r])))
        return err

    chosen = dict(start)
    best = total()
    for q in progress(list(start), desc="activation ranges: choosing"):
        for c, (lo, hi) in candidates[q].items():
            old = candidates[q][chosen[q]]
            if c == chosen[q] or _same_grid((lo, hi), old):
                continue
            variables[q][0].assign(lo)
            variables[q][1].assign(hi)
            e = total()
            if e < best:
                best, chosen[q] = e, c
            else:
                variables[q][0].assign(old[0])
                variables[q][1].assign(old[1])
    for q, c in chosen.items():
        plan.ranges[q] = candidates[q][c]
    return chosen


def _same_grid(a: tuple[float, float], b: tuple[float, float], tolerance: float = 0.02) -> bool:
    """Whether two ranges differ by at most `tolerance` of their width at both ends (trying the
    other is not worth a pass over the samples)."""
    width = max(a[1] - a[0], b[1] - b[0], 1e-12)
    return abs(a[0] - b[0]) <= tolerance * width and abs(a[1] - b[1]) <= tolerance * width

