"""Layer-by-layer steps on quantized inputs: empirical bias correction and AdaRound.

The graph is run node by node, in order, twice side by side over a bounded set of calibration
samples: the float model (x) and the model whose preceding layers already have their final
quantized weights (x^). At each linear layer, before moving on:

- AdaRound learns the layer's rounding from (x^, f_a(W x + b)) (see `adaround`; with
  PTQConfig.adaround_qdrop each step's input mixes x into x^ element by element, QDrop; with
  adaround_output_quant the loss sees the output on its int8 grid);
- empirical bias correction (white paper eq. "Delta W E[x] = E[W^ x] - E[W x]") subtracts the
  mean per-channel difference between the layer's quantized pre-activation output (on x^) and
  the float one (on x) from the bias, so that each layer's mean output shift is removed in turn,
  the corrections of earlier layers included.

Tensors are freed as soon as their last reader has run; memory is bounded by the
`layerwise_samples` kept (PTQConfig).
"""
from __future__ import annotations

import dataclasses
from typing import Callable, Optional

import numpy as np
import tensorflow as tf

from tfquant.core import QuantSpec, fake_quant
from tfquant.core.op_rules import apply_fused_activation, linear_pre_activation
from tfquant.graph import Emitter, Graph, Node, QuantPlan, linear_op, linear_runs_int8, node_kernel_on_grid, ref
from tfquant.ptq.adaround import AdaRoundResult, adaround_layer



@dataclasses.dataclass
class LayerwiseReport:
    bias_shift: dict[str, float] = dataclasses.field(default_factory=dict)   # max |correction|
    adaround: dict[str, AdaRoundResult] = dataclasses.field(default_factory=dict)


def _chunks(n: int, size: int):
    for start in range(0, n, size):
        yield slice(start, min(n, start + size))


def _apply(fn: Callable, xs: list[np.ndarray], chunk: int) -> np.ndarray:
    n = xs[0].shape[0]
    out = None
    for s in _chunks(n, chunk):     # written into one array: no list of parts to concatenate
        part = np.asarray(fn(*[tf.constant(x[s]) if isinstance(x, np.ndarray) else x for x in xs]))
        if out is None:
            out = np.empty((n,) + part.shape[1:], part.dtype)
        out[s] = part
    return out


def quantized_kernel(node: Node, plan: QuantPlan) -> np.ndarray:
    """The kernel on its integer grid (core's FakeQuant with the plan's range)."""
    lo, hi = plan.weight_ranges[node.name]
    return np.asarray(node_kernel_on_grid(node, tf.constant(node.kernel), lo, hi, plan.weight_specs[node.name]))


def run_layerwise(graph: Graph, plan: QuantPlan, samples: np.ndarray, config, *, bias_correction: bool,
                  adaround: bool, quantize_activations: bool = False,
                  progress: Callable = lambda it, **k: it, chunk: int = 16) -> LayerwiseReport:
    """Run AdaRound and / or empirical bias correction layer by layer (modifies the graph).

    `quantize_activations`: the quantized side also quantizes activations (plan.ranges must be
    set), so that bias correction also removes the mean shift activation quantization causes."""
    report = LayerwiseReport()
    rng = np.random.default_rng(config.seed)
    float_em = Emitter(graph, None, "float")
    quant_em = Emitter(graph, plan, "quant" if quantize_activations else "weights")
    nodes = list(graph)
    last_use: dict[str, int] = {}
    for i, node in enumerate(nodes):
        for r in node.inputs:
            last_use[r] = i
    env_f: dict[str, np.ndarray] = {}
    env_q: dict[str, np.ndarray] = {}
    linear_count = sum(1 for n in nodes if n.is_linear)
    bar = progress(range(linear_count), desc="layer by layer: " + "+".join(
        s for s, on in (("adaround", adaround), ("bias correction", bias_correction)) if on))
    bar_iter = iter(bar)
    for i, node in enumerate(nodes):
        if node.type == "input":
            env_f[node.output()] = samples
            env_q[node.output()] = _run_batched(quant_em, node, [samples], samples.shape[0], chunk)[0]
            continue
        if node.is_linear:
            y_f, y_q = _linear_step(node, env_f[node.inputs[0]], env_q[node.inputs[0]], plan, config,
                                    bias_correction, adaround, rng, report, chunk, quantize_activations)
            env_f[node.output()], env_q[node.output()] = y_f, y_q
            if hasattr(bar, "set_postfix_str"):      # tqdm: which layer, beside the ETA
                bar.set_postfix_str(node.name[-40:], refresh=False)
            next(bar_iter, None)
        else:
            for env, em in ((env_f, float_em), (env_q, quant_em)):
                ins = [env[r] for r in node.inputs]
                if node.type == "const":
                    outs = [np.asarray(node.weights["value"])]
                elif not _shape_dependent(graph, node) and \
                        any(isinstance(x, np.ndarray) and x.ndim > 0 and x.shape[0] == samples.shape[0] for x in ins):
                    outs = _run_batched(em, node, ins, samples.shape[0], chunk)
                else:
                    outs = [np.asarray(o) for o in em.run_node(node, [tf.constant(x) for x in ins])]
                for k, o in enumerate(outs):
                    env[ref(node.name, k)] = o
        for r in node.inputs:
            if last_use.get(r) == i and not graph.is_output(r):
                env_f.pop(r, None)
                env_q.pop(r, None)
    for _ in bar_iter:
        pass
    return report


def _shape_dependent(graph: Graph, node: Node) -> bool:
    """A node whose result depends on the batch size it sees (Shape, or a Reshape to a shape
    computed from one, as tf.tensordot makes for Dense on a 3-D tensor): it runs on all the
    samples at once, so that the shapes it computes or reads agree with the tensors they shape."""
    if node.tf_type in ("Shape", "ShapeN", "Size"):
        return True
    return node.type == "reshape" and graph.producer(node.inputs[1]).type != "const"


def _run_batched(em: Emitter, node: Node, ins: list, n: int, chunk: int) -> list[np.ndarray]:
    """Run a node over the samples in chunks (inputs without the batch axis are passed whole)."""
    parts: list[list[np.ndarray]] = []
    for s in _chunks(n, chunk):
        args = [tf.constant(x[s]) if isinstance(x, np.ndarray) and x.ndim > 0 and x.shape[0] == n
                else tf.constant(x) for x in ins]
        parts.append([np.asarray(o) for o in em.run_node(node, args)])
    return [np.concatenate([p[k] for p in parts]) if parts[0][k].ndim > 0 else parts[0][k]
            for k in range(len(parts[0]))]


def _linear_step(node: Node, x_f: np.ndarray, x_q: np.ndarray, plan: QuantPlan, config, bias_correction: bool,
                 adaround: bool, rng, report: LayerwiseReport, chunk: int, quantize_activations: bool):
    op = linear_op(node)
    act = lambda y: apply_fused_activation(node.activation, y)  # noqa: E731
    kernel = tf.constant(node.kernel)
    bias = np.zeros(node.out_channels, np.float32) if node.bias is None else node.bias.astype(np.float32)
    pre_f = _apply(lambda x: linear_pre_activation(op, x, kernel, bias), [x_f], chunk)
    y_f = np.asarray(act(pre_f)) if node.activation else pre_f
    limit = config.adaround_max_weights
    if adaround and plan.weights_quantized(node.name) and (limit is None or node.kernel.size <= limit):
        spec = plan.weight_specs[node.name]
        lo, hi = plan.weight_ranges[node.name]
        out = node.output()
        out_range = plan.range_of(out) if config.adaround_output_quant and quantize_activations and \
            plan.is_owner(out) and plan.is_quantized(out) else None
        learned, result = adaround_layer(node, x_q, y_f, spec, lo, hi, config, rng,
                                         x_float=x_f if config.adaround_qdrop > 0 else None, out_range=out_range)
        node.weights["kernel"] = learned
        report.adaround[node.name] = result
    int8 = linear_runs_int8(node, plan)        # a layer mixed precision keeps in float: no correction
    k_q = tf.constant(quantized_kernel(node, plan)) if int8 else kernel
    pre_q = _apply(lambda x: linear_pre_activation(op, x, k_q, bias), [x_q], chunk)
    if bias_correction and int8:
        shift = _mean_difference(pre_q, pre_f, chunk)
        node.weights["bias"] = (bias - shift).astype(np.float32)
        pre_q -= shift.astype(np.float32)          # pre_q is this step's own array
        report.bias_shift[node.name] = float(np.max(np.abs(shift)))
    del pre_f
    y_q = np.asarray(act(pre_q)) if node.activation else pre_q
    if quantize_activations and plan.is_owner(node.output()) and plan.is_quantized(node.output()):
        lo, hi = plan.range_of(node.output())
        y_q = _apply(lambda y: fake_quant(y, lo, hi, QuantSpec.activation()), [y_q], chunk)
    return y_f, y_q


def _mean_difference(a: np.ndarray, b: np.ndarray, chunk: int) -> np.ndarray:
    """Per channel (last axis), the float64 mean of a - b, summed over chunks of samples (no
    float64 copy of the whole activation)."""
    axes = tuple(range(a.ndim - 1))
    total = sum(np.sum(a[s].astype(np.float64) - b[s], axis=axes) for s in _chunks(a.shape[0], chunk))
    return total / (a.size // a.shape[-1])


def layer_output_shift(graph: Graph, plan: QuantPlan, samples: np.ndarray, reference: Optional[Graph] = None,
                       chunk: int = 16) -> dict[str, np.ndarray]:
    """Per linear layer, the mean per-channel difference between its pre-activation output in the
    weight-quantized model (on quantized inputs) and in the float `reference` model (default:
    `graph` itself; give a copy taken before bias correction) — what empirical bias correction
    drives to zero. For tests and debugging."""
    out: dict[str, np.ndarray] = {}
    float_em = Emitter(reference if reference is not None else graph, None, "float", keep_pre_activation=True)
    quant_em = Emitter(graph, plan, "weights", keep_pre_activation=True)
    sums: dict[str, list] = {}
    for s in _chunks(samples.shape[0], chunk):
        x = tf.constant(samples[s])
        float_em.run([x])
        quant_em.run([x])
        for node in graph.linear_nodes():
            d = np.asarray(quant_em.pre_activation[node.name], np.float64) - np.asarray(float_em.pre_activation[node.name])
            axes = tuple(range(d.ndim - 1))
            sums.setdefault(node.name, []).append((d.sum(axis=axes), np.prod([d.shape[a] for a in axes])))
    for name, parts in sums.items():
        out[name] = sum(p[0] for p in parts) / sum(p[1] for p in parts)
    return out

