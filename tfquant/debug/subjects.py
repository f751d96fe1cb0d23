"""What the debugger examines, seen the same way for both routes: a model whose quantizers can be
switched to float one by one.

    >>> subject = subject_of(ptq_result)            # or a QAT Keras model from quantize_model
    >>> subject.layers                              # layer -> its plan entries (weights, output)
    >>> subject.run(x, floats={"q3"})               # outputs with those entries in float
    >>> subject.values(x)                           # float values of every quantized tensor

A PTQ result switches entries through its `QuantPlan` (precision "float"), a QAT model through
`tfquant.keras.quantizers.bypass`; both name entries as their plan does.

Every run is eager and in batches of `batch_size` samples (no tf.function per plan: the debugger
tries one plan per layer, and a traced function per plan costs a trace, a graph with every weight
in it, and memory that grows with the number of layers); a PTQ run keeps only the tensors still
to be read (`Emitter.run(fetch=...)`), so memory is bounded by one batch's live tensors.
"""
from __future__ import annotations

from typing import Iterable, Optional

import numpy as np
import tensorflow as tf

from tfquant.core import QuantPlan
from tfquant.errors import SpecError


BATCH_SIZE = 8


def _batches(x: np.ndarray, batch_size: int):
    for i in range(0, len(x), batch_size):
        yield tf.convert_to_tensor(x[i:i + batch_size], tf.float32)


def _stack(outs) -> np.ndarray:
    if isinstance(outs, dict):
        outs = list(outs.values())
    if isinstance(outs, (list, tuple)):
        outs = outs[0]
    return np.asarray(outs)


class PTQSubject:
    """A `tfquant.ptq` result."""

    route = "PTQ"

    def __init__(self, result, batch_size: int = BATCH_SIZE):
        self.result = self.model = result
        self.plan = result.plan
        self.batch_size = batch_size
        self.layers: dict[str, list[str]] = {}
        owned = set()
        for node in result.graph.linear_nodes():
            entries = [node.name]
            if self.plan.is_owner(node.output()):
                entries.append(self.plan.qid[node.output()])
            owned.update(entries)
            self.layers[node.name] = entries
        for q in self.plan.calibrated_ids():
            if q not in owned:
                self.layers[self.plan.owners[q][0].rsplit(":", 1)[0]] = [q]
        self.entries = [e for es in self.layers.values() for e in es]

    def weight_entries(self) -> list[str]:
        return list(self.plan.weight_specs)

    def run(self, x: np.ndarray, floats: Iterable[str] = (), mode: str = "quant") -> np.ndarray:
        plan = self.plan.copy()
        for e in frozenset(floats):
            plan.precision[e] = "float"
        return self.run_plan(x, plan, mode)

    def float_run(self, x: np.ndarray) -> np.ndarray:
        """The transformed float model (quantizers bypassed; CLE, bias absorption and bias
        correction in its weights)."""
        return self.run(x, mode="float")

    def reference_run(self, x: np.ndarray) -> np.ndarray:
        """The float model as it was given (before any PTQ step): what agreement is measured to.
        Eager, in batches, like every run here."""
        from tfquant.graph import Emitter

        graph = self.result.original_graph if self.result.original_graph is not None else self.result.graph
        out = graph.outputs[0][1]
        emitter = Emitter(graph, None, "float")
        return np.concatenate([np.asarray(emitter.run([b], fetch=[out])[out]) for b in _batches(x, self.batch_size)])

    def per_channel_plan(self, layer: str) -> Optional[QuantPlan]:
        """The plan with `layer`'s weights per output channel (min-max), or None if they already are
        or cannot be (FULLY_CONNECTED weights stay per-tensor in the converter)."""
        from tfquant.core import QuantSpec
        from tfquant.ptq.ranges import weight_range

        node = self.result.graph[layer]
        spec = self.plan.weight_specs.get(layer)
        if spec is None or spec.per_channel or node.type == "matmul":
            return None
        plan = self.plan.copy()
        plan.weight_specs[layer] = QuantSpec.weight(bits=spec.bits, per_channel=True)
        plan.weight_ranges[layer] = weight_range(node, plan.weight_specs[layer], "minmax")
        return plan

    def run_plan(self, x: np.ndarray, plan: QuantPlan, mode: str = "quant") -> np.ndarray:
        """The first output of the fake-quant simulation of `plan` (eager, in batches)."""
        from tfquant.core import simulation_mode
        from tfquant.graph import Emitter

        graph = self.result.graph
        out = graph.outputs[0][1]
        emitter = Emitter(graph, plan, mode)
        with simulation_mode("fake_quant"):
            return np.concatenate([np.asarray(emitter.run([b], fetch=[out])[out])
                                   for b in _batches(x, self.batch_size)])

    def values(self, x: np.ndarray) -> dict[str, np.ndarray]:
        """Float values of each activation quantizer's tensors (first tensor), by entry (all of
        them at once: pass one batch)."""
        from tfquant.graph import Emitter
        from tfquant.graph.ir import ref

        refs = {q: ts[0] for q, ts in self.plan.owners.items() if q not in self.plan.fixed}
        graph_refs = {ref(n.name, i) for n in self.result.graph for i in range(len(n.out_dtypes))}
        refs = {q: r for q, r in refs.items() if r in graph_refs}
        env = Emitter(self.result.graph, self.plan, "float").run([tf.convert_to_tensor(x, tf.float32)],
                                                                 fetch=sorted(set(refs.values())))
        return {q: np.asarray(env[r]) for q, r in refs.items()}

    def kernels(self) -> dict[str, tuple[np.ndarray, Optional[np.ndarray]]]:
        """weight entry -> (kernel as [rows, channels] now, before the PTQ steps or None)."""
        before = {n.name: n for n in self.result.original_graph.linear_nodes()} \
            if self.result.original_graph is not None else {}
        out = {}
        for node in self.result.graph.linear_nodes():
            old = before.get(node.name)
            out[node.name] = (node.kernel.reshape(-1, node.out_channels),
                              None if old is None else old.kernel.reshape(-1, old.out_channels))
        return out


class QATSubject:
    """A Keras model from `tfquant.quantize_model` (fake-quant mode)."""

    route = "QAT"

    def __init__(self, qmodel, batch_size: int = BATCH_SIZE):
        from tfquant.keras.layers import QuantConv
        from tfquant.keras.plan import plan_of

        self.model = qmodel
        self.batch_size = batch_size
        self.plan: QuantPlan = plan_of(qmodel)
        self.layers = {}
        for name in self.plan.owners:
            self.layers.setdefault(name.rsplit("/", 1)[0], []).append(name)
        for name in self.plan.weight_specs:
            self.layers.setdefault(name.rsplit("/", 1)[0], []).append(name)
        self.layers = {k: v for k, v in self.layers.items()
                       if any(e not in self.plan.fixed for e in v)}
        self.entries = [e for es in self.layers.values() for e in es]
        self._convs = {la.name: la for la in qmodel._flatten_layers(include_self=False) if isinstance(la, QuantConv)}

    def weight_entries(self) -> list[str]:
        return list(self.plan.weight_specs)

    def run(self, x: np.ndarray, floats: Iterable[str] = (), mode: str = "quant") -> np.ndarray:
        from tfquant.keras.quantizers import bypass

        names = set(floats)
        if mode == "weights":
            names |= set(self.plan.owners)
        with bypass(names):
            return np.concatenate([_stack(self.model(b, training=False)) for b in _batches(x, self.batch_size)])

    def float_run(self, x: np.ndarray) -> np.ndarray:
        return self.run(x, floats=list(self.plan.owners) + list(self.plan.weight_specs))

    def reference_run(self, x: np.ndarray) -> np.ndarray:
        """The float model (a QAT model with every quantizer bypassed is its float model)."""
        return self.float_run(x)

    def values(self, x: np.ndarray) -> dict[str, np.ndarray]:
        from tfquant.keras.quantizers import calibration_scope

        seen: dict[str, np.ndarray] = {}

        class Recorder:
            def observe(self, quantizer, v):
                seen[quantizer.name] = np.asarray(v)

        with calibration_scope(Recorder()):
            self.model(tf.convert_to_tensor(x, tf.float32), training=False)
        return {k: v for k, v in seen.items() if k in self.plan.owners}

    def kernels(self) -> dict[str, tuple[np.ndarray, Optional[np.ndarray]]]:
        out = {}
        for name in self.plan.weight_specs:
            layer = self._convs[name.rsplit("/", 1)[0]]
            if name.endswith("/kernel"):
                k = np.asarray(layer.folded_weights()[0])
            else:
                k = np.asarray(layer.layer.depthwise_kernel)
            out[name] = (k.reshape(-1, k.shape[-2] * k.shape[-1]) if (layer.kind == "depthwise" or
                                                                     name.endswith("/depthwise_kernel"))
                         else k.reshape(-1, k.shape[-1]), None)
        return out


def subject_of(model, batch_size: int = BATCH_SIZE):
    """The debugger's view of a PTQ result or a QAT model (runs in batches of `batch_size`)."""
    import keras

    if hasattr(model, "plan") and hasattr(model, "graph") and hasattr(model, "with_plan"):
        return PTQSubject(model, batch_size)
    if isinstance(model, keras.Model):
        return QATSubject(model, batch_size)
    raise SpecError(f"The debugger takes a tfquant.ptq result or a model from tfquant.quantize_model, "
                    f"got {type(model).__name__}.")
