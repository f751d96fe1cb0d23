"""Building the quantized Keras model from a `Planner`'s plan: one tfquant layer per planned op,
weights copied from the float model.

    qmodel = Builder(graph, planner, config).build(model.name)
"""
from __future__ import annotations

import collections
from typing import Optional

import keras
from keras import tree

from tfquant.core.op_rules import needs_own_fake_quant
from tfquant.keras.config import QATConfig
from tfquant.keras.layer_graph import LayerGraph
from tfquant.keras.layers import (
    QuantActivation,
    QuantAdd,
    QuantAffine,
    QuantAveragePooling,
    QuantSharedGrid,
    QuantConcatenate,
    QuantConv,
    QuantGlobalAveragePooling,
    QuantizeInput,
    QuantizeWrapper,
    QuantLayerNorm,
    QuantMultiply,
    QuantResize,
    QuantScaledAdd,
)
from tfquant.keras.planner import Planner, PlannedOp
from tfquant.keras.registry import custom_config


# Planned kinds that become a `core.op_rules.GRID_SETTING_READERS` op.
_GRID_SETTING_KINDS = {"avgpool": "AVERAGE_POOL_2D", "concat": "CONCATENATION"}


class _Resolver(dict):
    """Maps an original KerasTensor id to its new tensor (through aliases and input quantizers)."""

    def __init__(self, graph: LayerGraph, values: dict, redirect: dict):
        super().__init__()
        self.graph, self.values, self.redirect = graph, values, redirect

    def _key(self, key):
        key = self.graph.canon(key)
        return self.redirect.get(key, key)

    def __getitem__(self, key):
        return self.values[self._key(key)]

    def get(self, key, default=None):
        return self.values.get(self._key(key), default)


def _clone(layer, name: Optional[str] = None):
    config = layer.get_config()
    if name is not None:
        config["name"] = name
    try:
        return type(layer).from_config(config)
    except Exception:  # noqa: BLE001 - a custom layer without a faithful get_config: reuse it
        return layer


def _copy_weights(target, source) -> None:
    # `source` may be a Keras op rather than a layer (`x + 3.0` in a Functional graph): no weights
    if target is not source and getattr(source, "weights", None):
        target.set_weights(source.get_weights())


class Builder:
    def __init__(self, graph: LayerGraph, planner: Planner, config: QATConfig):
        self.g, self.p, self.config = graph, planner, config
        self.values: dict[int, object] = {}
        self.names: set[str] = set()
        self.resolver = _Resolver(graph, self.values, planner.redirect)
        # Tensors read by an average pool, or by a concat on another grid, and by other ops
        # (`op_rules.needs_own_fake_quant`): a pass-through op writing one gets a QuantSharedGrid.
        readers: dict[int, list] = collections.defaultdict(list)
        for q in planner.qops:
            for t in dict.fromkeys(q.inputs):          # one reader per op
                i = q.inputs.index(t)
                same = q.kind == "concat" and i < len(q.shared_inputs) and q.shared_inputs[i]
                readers[t].append((_GRID_SETTING_KINDS.get(q.kind), same))
        self._own_grid = {t for t, r in readers.items() if needs_own_fake_quant(r)}

    def unique(self, name: str) -> str:
        base, n = name, 1
        while name in self.names:
            n += 1
            name = f"{base}_{n}"
        self.names.add(name)
        return name

    def build(self, model_name: str) -> keras.Model:
        inputs = []
        for tensor, t in zip(self.g.input_tensors, self.g.inputs):
            # Keras-private: a KerasTensor names its producing InputLayer only through _keras_history.
            name = self.unique(tensor._keras_history.operation.name)
            x = keras.Input(shape=tensor.shape[1:], batch_size=tensor.shape[0], dtype=tensor.dtype, name=name)
            self.values[t] = x
            inputs.append(x)
        for q in self.p.qops:
            self.build_op(q)
        outputs = [self.values[t] for t in self.g.outputs]
        return keras.Model(inputs=tree.pack_sequence_as(self.g.inputs_struct, inputs),
                           outputs=tree.pack_sequence_as(self.g.outputs_struct, outputs),
                           name=f"{model_name}_quantized")

    def _in(self, q: PlannedOp):
        xs = [self.values[t] for t in q.inputs]
        return xs[0] if len(xs) == 1 else xs

    def build_op(self, q: PlannedOp) -> None:
        c = self.config
        aq, wq = c.activation_quantizer(), c.weight_quantizer()
        name = self.unique(q.name)
        layer = q.op.layer if q.op is not None else None
        kind = q.kind
        if kind == "input":
            y = QuantizeInput(activation_quantizer=aq, shared_output=q.shared_output, name=name)(self._in(q))
        elif kind == "conv":
            bn = q.bn.layer if q.bn is not None else None
            ql = QuantConv(layer=_clone(layer), bn=None if bn is None else _clone(bn), activation=q.activation,
                           weight_quantizer=wq, activation_quantizer=aq, bn_folding=c.bn_folding,
                           bn_freeze_steps=c.bn_freeze_steps, shared_output=q.shared_output, name=name)
            y = ql(self._in(q))
            _copy_weights(ql.layer, layer)
            if bn is not None:
                _copy_weights(ql.bn, bn)
        elif kind in ("add", "sub"):
            y = QuantAdd(op="add" if kind == "add" else "subtract", activation=q.activation,
                         activation_quantizer=aq, shared_output=q.shared_output, name=name)(self._in(q))
        elif kind == "affine" and "rescaling" in q.params:     # a Keras op with a number: x + c, x * c
            scale, offset = q.params["rescaling"]
            y = QuantAffine(layer=keras.layers.Rescaling(scale, offset), activation=q.activation,
                            activation_quantizer=aq, shared_output=q.shared_output, name=name)(self._in(q))
        elif kind == "affine":
            ql = QuantAffine(layer=_clone(layer), activation=q.activation, activation_quantizer=aq,
                             shared_output=q.shared_output, name=name)
            y = ql(self._in(q))
            _copy_weights(ql.layer, layer)
        elif kind == "layer_norm":
            ql = QuantLayerNorm(layer=_clone(layer), activation_quantizer=aq, name=name)
            y = ql(self._in(q))
            _copy_weights(ql.layer, layer)
        elif kind == "scaled_add":
            y = QuantScaledAdd(scale=q.params["scale"], activation=q.activation, activation_quantizer=aq,
                               shared_output=q.shared_output, name=name)(self._in(q))
        elif kind == "mul":
            y = QuantMultiply(activation_quantizer=aq, shared_output=q.shared_output, name=name)(self._in(q))
        elif kind == "concat":
            y = QuantConcatenate(axis=layer.axis, shared_inputs=q.shared_inputs, activation_quantizer=aq,
                                 shared_output=q.shared_output, name=name)(self._in(q))
        elif kind == "avgpool":
            y = QuantAveragePooling(layer=_clone(layer), name=name)(self._in(q))
        elif kind == "gap":
            y = QuantGlobalAveragePooling(axes=q.params["axes"], keepdims=bool(getattr(layer, "keepdims", False)),
                                          activation_quantizer=aq, shared_output=q.shared_output,
                                          name=name)(self._in(q))
        elif kind == "resize":
            y = QuantResize(layer=_clone(layer), name=name)(self._in(q))
        elif kind == "act":
            params = dict(q.params, lowering=c.hard_swish) if q.activation == "hard_silu" else q.params
            y = QuantActivation(activation=q.activation, params=params, activation_quantizer=aq,
                                shared_output=q.shared_output, name=name)(self._in(q))
        elif kind == "custom":
            inner = _clone(layer)
            ql = QuantizeWrapper(layer=inner, config=custom_config(layer), weight_quantizer=wq,
                                 activation_quantizer=aq, shared_output=q.shared_output, name=name)
            y = ql(self._in(q))
            _copy_weights(ql.layer, layer)
        elif kind in ("passthrough", "float"):
            if q.synthetic_layer is not None:
                y = q.synthetic_layer(name)(self._in(q))
            else:
                clone = _clone(layer, name)
                if clone is layer:
                    self.names.discard(name)
                args, kwargs = q.op.node.arguments.fill_in(self.resolver)
                y = clone(*args, **kwargs)
                _copy_weights(clone, layer)
        else:  # pragma: no cover - the planner emits only the kinds above
            raise AssertionError(kind)
        for t, v in zip(q.outputs, tree.flatten(y)):
            if kind == "passthrough" and t in self._own_grid:
                v = QuantSharedGrid(name=self.unique(f"{q.name}_grid"))(v)
            self.values[t] = v
