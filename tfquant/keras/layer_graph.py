"""The layer calls of a Keras 3 Functional / Sequential model in topological order, nested graph
models inlined: what `quantize_model` plans and rebuilds.

    graph = LayerGraph(model)
    for call in graph.ops: call.layer, call.inputs, call.outputs     # canonical tensor ids
"""
from __future__ import annotations

import collections
import dataclasses

import keras
# Keras 3 exposes no public class for Functional models (keras.Model(...) returns one).
from keras.src.models.functional import Functional

from tfquant.keras.errors import ModelTypeError

@dataclasses.dataclass
class LayerCall:
    """One layer call of the original (flattened) graph."""

    layer: keras.layers.Layer
    node: object                  # keras Node (None for layers tfquant adds)
    inputs: list[int]             # canonical tensor ids
    outputs: list[int]
    path: str                     # "layer" or "submodel/layer"

    @property
    def name(self) -> str:
        return self.path.replace("/", "_")


def is_graph_model(obj) -> bool:
    return isinstance(obj, (Functional, keras.Sequential))


def functional_of(model) -> Functional:
    if isinstance(model, keras.Sequential):
        # Keras-private: a built Sequential keeps its Functional form here, with no public accessor.
        functional = getattr(model, "_functional", None)
        if functional is None:
            raise ModelTypeError(
                f"Sequential model {model.name!r} is not built: give it an input shape "
                "(keras.Input(shape) as its first layer) or call it on data before quantize_model.")
        return functional
    return model


class LayerGraph:
    """The model's layer calls in topological order, nested graph models inlined."""

    def __init__(self, model):
        self.alias: dict[int, int] = {}
        self.ops: list[LayerCall] = []
        self.flattened: list[str] = []
        functional = functional_of(model)
        self.input_tensors = list(functional.inputs)
        self.inputs = [id(t) for t in functional.inputs]
        # Keras-private: the nesting of inputs / outputs (dicts, lists), which keras.Model has no getter for.
        self.inputs_struct = functional._inputs_struct
        self.outputs_struct = functional._outputs_struct
        self.outputs = self._walk(functional, self.inputs, "")

    def canon(self, key: int) -> int:
        while key in self.alias:
            key = self.alias[key]
        return key

    def _walk(self, functional, input_ids, prefix) -> list[int]:
        for tensor, key in zip(functional.inputs, input_ids):
            if id(tensor) != key:
                self.alias[id(tensor)] = key
        # Keras-private: _nodes_by_depth is the only topological listing of a Functional's layer calls.
        calls = collections.Counter(id(n.operation) for nodes in functional._nodes_by_depth.values()
                                    for n in nodes)
        for depth in sorted(functional._nodes_by_depth, reverse=True):
            for node in functional._nodes_by_depth[depth]:
                op = node.operation
                if op is None or node.is_input:
                    continue
                ins = [self.canon(id(t)) for t in node.input_tensors]
                if is_graph_model(op) and calls[id(op)] == 1:
                    outs = self._walk(functional_of(op), ins, f"{prefix}{op.name}/")
                    for tensor, key in zip(node.outputs, outs):
                        self.alias[id(tensor)] = key
                    self.flattened.append(prefix + op.name)
                else:
                    self.ops.append(LayerCall(op, node, ins, [id(t) for t in node.outputs], prefix + op.name))
        return [self.canon(id(t)) for t in functional.outputs]
