"""`quantize_model`: a Keras 3 model -> a trainable Keras 3 model that simulates TFLite int8.

    qmodel = tfquant.quantize_model(model)                     # W8A8, BN folded, ReLU fused
    qmodel.compile(...); qmodel.fit(...)                       # unchanged training
    tfquant.to_tflite(qmodel, "model.tflite")

How: the Functional graph (Sequential models through their Functional form; nested models — a
model used as a layer — are flattened into it) is walked in topological order and rebuilt:

- Conv1D / Conv2D / DepthwiseConv2D / SeparableConv2D / Conv2DTranspose / Dense, with a
  following BatchNormalization (folded) and ReLU / ReLU6 (fused), become one `QuantConv` when each
  tensor of the chain has that single consumer. Other fused `activation=`s are split off into a
  `QuantActivation`.
- Add (+ ReLU), Subtract, Multiply, Concatenate, AveragePooling1D/2D, GlobalAveragePooling1D/2D,
  bilinear UpSampling2D, standalone activations and Softmax get their tfquant layer; reshape,
  flatten, max pooling, padding, nearest upsampling, dropout stay as they are (pass-through:
  their values stay on the input's grid).
- Each model input, and each output of a layer left in float that feeds a quantized one, gets a
  `QuantizeInput`.
- Concatenations: see `layers.concat` (inputs whose producer feeds only the concat share its grid).
- Layers it cannot quantize stay float and are listed in the report, with how to quantize them;
  `tfquant.keras.register_quantize_config` teaches it a layer.

Every tensor that will be int8 on device passes through exactly one FakeQuant. Weights of the
original model are copied; the original model is not modified.
"""
from __future__ import annotations

import collections
import dataclasses
import itertools
import warnings
from typing import Callable, Optional

import keras
from keras import tree
from keras.src.models.functional import Functional

from tfquant.keras.config import QATConfig
from tfquant.keras.errors import AlreadyQuantizedError, ModelTypeError
from tfquant.keras.layers import (
    QuantActivation,
    QuantAdd,
    QuantAveragePooling,
    QuantConcatenate,
    QuantConv,
    QuantGlobalAveragePooling,
    QuantizeInput,
    QuantizeWrapper,
    QuantLayer,
    QuantMultiply,
    QuantResize,
)
from tfquant.keras.layers.activation import FIXED_RANGE, SUPPORTED as SUPPORTED_ACTIVATIONS
from tfquant.keras.layers.conv import KINDS as CONV_KINDS
from tfquant.keras.layers.resize import NearestUpSampling
from tfquant.keras.registry import custom_config, is_passthrough
from tfquant.keras.report import LayerReport, QuantizationReport

L = keras.layers

HOW_TO_REGISTER = ("register a QuantizeConfig for its class (tfquant.keras.register_quantize_config), or "
                   "tfquant.keras.register_passthrough if it only moves values")


# ---- the flattened graph ------------------------------------------------------------------------
@dataclasses.dataclass
class _Op:
    """One layer call of the original (flattened) graph."""

    layer: keras.layers.Layer
    node: object                  # keras Node (None for layers tfquant adds)
    inputs: list[int]             # canonical tensor ids
    outputs: list[int]
    path: str                     # "layer" or "submodel/layer"

    @property
    def name(self) -> str:
        return self.path.replace("/", "_")


def _is_graph_model(obj) -> bool:
    return isinstance(obj, (Functional, keras.Sequential))


def _functional_of(model) -> Functional:
    if isinstance(model, keras.Sequential):
        functional = getattr(model, "_functional", None)
        if functional is None:
            raise ModelTypeError(
                f"Sequential model {model.name!r} is not built: give it an input shape "
                "(keras.Input(shape) as its first layer) or call it on data before quantize_model.")
        return functional
    return model


class _Graph:
    """The model's layer calls in topological order, nested graph models inlined."""

    def __init__(self, model):
        self.alias: dict[int, int] = {}
        self.ops: list[_Op] = []
        self.flattened: list[str] = []
        functional = _functional_of(model)
        self.input_tensors = list(functional.inputs)
        self.inputs = [id(t) for t in functional.inputs]
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
        calls = collections.Counter(id(n.operation) for nodes in functional._nodes_by_depth.values()
                                    for n in nodes)
        for depth in sorted(functional._nodes_by_depth, reverse=True):
            for node in functional._nodes_by_depth[depth]:
                op = node.operation
                if op is None or node.is_input:
                    continue
                ins = [self.canon(id(t)) for t in node.input_tensors]
                if _is_graph_model(op) and calls[id(op)] == 1:
                    outs = self._walk(_functional_of(op), ins, f"{prefix}{op.name}/")
                    for tensor, key in zip(node.outputs, outs):
                        self.alias[id(tensor)] = key
                    self.flattened.append(prefix + op.name)
                else:
                    self.ops.append(_Op(op, node, ins, [id(t) for t in node.outputs], prefix + op.name))
        return [self.canon(id(t)) for t in functional.outputs]


# ---- the plan: which tfquant op each layer call becomes -------------------------------------
@dataclasses.dataclass
class _QOp:
    kind: str        # input conv add sub mul concat avgpool gap resize act custom passthrough float
    op: Optional[_Op]
    inputs: list[int]
    outputs: list[int]
    name: str
    bn: Optional[_Op] = None
    act_op: Optional[_Op] = None
    activation: Optional[str] = None
    params: dict = dataclasses.field(default_factory=dict)
    shared_output: bool = False
    shared_inputs: list = dataclasses.field(default_factory=list)
    synthetic_layer: Optional[Callable] = None   # name -> a layer tfquant adds (no node to copy)

    def adoptable(self) -> bool:
        if self.kind in ("input", "conv", "add", "sub", "mul", "concat", "gap"):
            return True
        if self.kind == "act":
            return self.activation not in FIXED_RANGE
        if self.kind == "custom":
            return custom_config(self.op.layer).quantize_output
        return False


def _activation_name(fn) -> Optional[str]:
    name = keras.activations.serialize(fn)
    return name if isinstance(name, str) else None


def _fusable_activation(layer) -> Optional[str]:
    """"relu" / "relu6" if `layer` is a ReLU the converter fuses into the op before it."""
    if type(layer) is L.ReLU:
        if float(layer.negative_slope or 0.0) == 0.0 and float(layer.threshold or 0.0) == 0.0:
            if layer.max_value is None:
                return "relu"
            if float(layer.max_value) == 6.0:
                return "relu6"
        return None
    if type(layer) is L.Activation:
        name = _activation_name(layer.activation)
        return name if name in ("relu", "relu6") else None
    return None


def _standalone_activation(layer) -> Optional[tuple[str, dict]]:
    """(activation, params) for a standalone activation layer tfquant can quantize."""
    t = type(layer)
    if t is L.ReLU:
        fused = _fusable_activation(layer)
        if fused:
            return fused, {}
        slope, threshold = float(layer.negative_slope or 0.0), float(layer.threshold or 0.0)
        if layer.max_value is None and threshold == 0.0 and slope > 0.0:
            return "leaky_relu", {"negative_slope": slope}
        return None     # other clips become float RELU + MINIMUM in the converter
    if t is L.LeakyReLU:
        return "leaky_relu", {"negative_slope": float(layer.negative_slope)}
    if t is L.Softmax:
        axis = layer.axis if isinstance(layer.axis, int) else (layer.axis[0] if len(layer.axis) == 1 else None)
        return ("softmax", {}) if axis == -1 else None
    if t is L.Activation:
        name = _activation_name(layer.activation)
        name = {"swish": "silu", "hard_swish": "hard_silu"}.get(name, name)
        return (name, {}) if name in SUPPORTED_ACTIVATIONS else None
    return None


def _conv_problem(layer) -> Optional[str]:
    if getattr(layer, "data_format", "channels_last") != "channels_last":
        return "channels_first data format (TFLite convolutions are channels-last)."
    if getattr(layer, "groups", 1) != 1:
        return "grouped convolution (no int8 grouped CONV_2D that the converter emits from it)."
    if getattr(layer, "quantization_mode", None):
        return f"already quantized by Keras ({layer.quantization_mode})."
    return None


class _Planner:
    def __init__(self, graph: _Graph, config: QATConfig):
        self.g = graph
        self.config = config
        self.consumers: dict[int, list[int]] = collections.defaultdict(list)
        for k, op in enumerate(graph.ops):
            for t in op.inputs:
                self.consumers[t].append(k)
        self.model_outputs = set(graph.outputs)
        self.index = {id(op): k for k, op in enumerate(graph.ops)}
        self.calls = collections.Counter(id(op.layer) for op in graph.ops)
        self.absorbed: set[int] = set()
        self.reports: dict[float, LayerReport] = {}
        self.qops: list[_QOp] = []
        self._ids = itertools.count(-1, -1)   # synthetic tensor ids (negative: never an id())

    # -- helpers --
    def sole_consumer(self, t: int) -> Optional[int]:
        c = self.consumers.get(t, [])
        if len(c) == 1 and t not in self.model_outputs and c[0] not in self.absorbed:
            return c[0]
        return None

    def listed_float(self, op: _Op) -> bool:
        names = set(self.config.float_layers)
        return op.path in names or op.layer.name in names or op.name in names

    def free(self, k: int) -> bool:
        """Can op k be absorbed into the op before it (plain, single-call, not user-configured)?"""
        op = self.g.ops[k]
        return not (self.listed_float(op) or custom_config(op.layer) or self.calls[id(op.layer)] > 1)

    def report(self, op: _Op, status: str, into: Optional[str] = None, reason: str = "", how_to: str = ""):
        self.reports[self.index[id(op)]] = LayerReport(op.path, type(op.layer).__name__, status, into,
                                                          reason, how_to)

    def float_op(self, op: _Op, reason: str, how_to: str = HOW_TO_REGISTER):
        self.qops.append(_QOp("float", op, op.inputs, op.outputs, op.name))
        self.report(op, "float", reason=reason, how_to=how_to)

    # -- classification --
    def plan(self) -> list[_QOp]:
        for k, op in enumerate(self.g.ops):
            if k in self.absorbed:
                continue
            self.classify(k, op)
        self.insert_input_quantizers()
        self.share_concat_grids()
        return self.qops

    def classify(self, k: int, op: _Op) -> None:
        layer, cls = op.layer, type(op.layer)
        if self.listed_float(op):
            return self.float_op(op, "Listed in QATConfig.float_layers.", "remove it from float_layers.")
        config = custom_config(layer)
        if config is not None:
            self.qops.append(_QOp("custom", op, op.inputs, op.outputs, op.name))
            return self.report(op, "quantized", op.name)
        if self.calls[id(layer)] > 1 and not is_passthrough(layer):
            return self.float_op(op, f"The layer is called {self.calls[id(layer)]} times (shared weights); "
                                     "each call would need its own input grid.",
                                 "give each call its own layer (weights can be copied).")
        if cls in CONV_KINDS:
            return self.conv(k, op)
        if cls in (L.Add, L.Subtract, L.Multiply):
            if len(op.inputs) != 2:
                return self.float_op(op, f"{cls.__name__} of {len(op.inputs)} inputs (TFLite's int8 kernels "
                                         "take two).", "chain two-input layers instead.")
            kind = {L.Add: "add", L.Subtract: "sub", L.Multiply: "mul"}[cls]
            q = _QOp(kind, op, op.inputs, op.outputs, op.name)
            if kind == "add":
                self.fuse_activation(q)
            self.qops.append(q)
            return self.report(op, "quantized", op.name)
        if cls is L.Concatenate:
            self.qops.append(_QOp("concat", op, op.inputs, op.outputs, op.name))
            return self.report(op, "quantized", op.name)
        if cls in (L.AveragePooling1D, L.AveragePooling2D):
            if layer.data_format != "channels_last":
                return self.float_op(op, "channels_first data format.", "use channels_last.")
            self.qops.append(_QOp("avgpool", op, op.inputs, op.outputs, op.name))
            return self.report(op, "quantized", op.name)
        if cls in (L.GlobalAveragePooling1D, L.GlobalAveragePooling2D):
            if layer.data_format != "channels_last":
                return self.float_op(op, "channels_first data format.", "use channels_last.")
            axes = [1] if cls is L.GlobalAveragePooling1D else [1, 2]
            self.qops.append(_QOp("gap", op, op.inputs, op.outputs, op.name, params={"axes": axes}))
            return self.report(op, "quantized", op.name)
        if cls is L.UpSampling2D and layer.interpolation == "bilinear":
            if layer.data_format != "channels_last":
                return self.float_op(op, "channels_first data format.", "use channels_last.")
            self.qops.append(_QOp("resize", op, op.inputs, op.outputs, op.name))
            return self.report(op, "quantized", op.name)
        if (cls is L.UpSampling1D or (cls is L.UpSampling2D and layer.interpolation == "nearest")) and \
                getattr(layer, "data_format", "channels_last") == "channels_last":
            size = [layer.size] if cls is L.UpSampling1D else list(layer.size)
            self.qops.append(_QOp("passthrough", op, op.inputs, op.outputs, op.name,
                                  synthetic_layer=lambda name, size=size: NearestUpSampling(size, name=name)))
            return self.report(op, "pass-through", op.name)
        if is_passthrough(layer):
            self.qops.append(_QOp("passthrough", op, op.inputs, op.outputs, op.name))
            return self.report(op, "pass-through")
        act = _standalone_activation(layer)
        if act is not None:
            self.qops.append(_QOp("act", op, op.inputs, op.outputs, op.name, activation=act[0], params=act[1]))
            return self.report(op, "quantized", op.name)
        if cls is L.BatchNormalization:
            return self.float_op(op, "BatchNormalization that does not directly follow a Conv/Dense (or whose "
                                     "input has other consumers) cannot be folded.",
                                 "place it right after a Conv/Dense whose output feeds only it.")
        if isinstance(layer, keras.Model):
            return self.float_op(op, "A subclassed (or shared) model used as a layer has no graph to rewrite.",
                                 "build it with the Functional API and use it once, or quantize it separately.")
        return self.float_op(op, f"tfquant has no quantized TFLite lowering for {cls.__name__}.", HOW_TO_REGISTER)

    def conv(self, k: int, op: _Op) -> None:
        layer = op.layer
        problem = _conv_problem(layer)
        if problem:
            return self.float_op(op, problem, "use a channels-last, ungrouped layer.")
        if type(layer) is L.Conv2DTranspose and self.config.weight_bits < 8:
            warnings.warn(f"{op.path}: Conv2DTranspose keeps 8-bit weights, and a model with "
                          f"{self.config.weight_bits}-bit weights that holds a TRANSPOSE_CONV cannot be exported: "
                          "the TFLite converter's low-bit QAT mode rejects TRANSPOSE_CONV (even in float). Use "
                          "8-bit weights for this model, or UpSampling2D + Conv2D.", stacklevel=4)
        q = _QOp("conv", op, op.inputs, op.outputs, op.name)
        act = _activation_name(layer.activation) or "custom"     # a Python function: kept, in float
        out = op.outputs[0]
        if act == "linear":
            j = self.sole_consumer(out)
            if j is not None and type(self.g.ops[j].layer) is L.BatchNormalization and self.free(j):
                bn_op = self.g.ops[j]
                bn = bn_op.layer
                rank = len(op.node.outputs[0].shape)
                axis = bn.axis if isinstance(bn.axis, int) else (bn.axis[0] if len(bn.axis) == 1 else None)
                if axis is not None and axis % rank == rank - 1 and not getattr(bn, "renorm", False):
                    q.bn = bn_op
                    q.outputs = bn_op.outputs
                    self.absorbed.add(j)
                    self.report(bn_op, "folded", op.name)
            self.fuse_activation(q)
        elif act in ("relu", "relu6"):
            q.activation = act
        else:
            # Split the activation off: the conv's output is int8 on device, then the activation op.
            mid = next(self._ids)
            q.outputs = [mid]
            self.qops.append(q)
            self.report(op, "quantized", op.name)
            name = f"{op.name}_{act}"
            if act in SUPPORTED_ACTIVATIONS or act in ("swish", "hard_swish"):
                act = {"swish": "silu", "hard_swish": "hard_silu"}.get(act, act)
                params = {"negative_slope": 0.2} if act == "leaky_relu" else {}   # keras.activations' default
                self.qops.append(_QOp("act", None, [mid], op.outputs, name, activation=act, params=params))
            else:
                self.qops.append(_QOp("float", None, [mid], op.outputs, name,
                                      synthetic_layer=lambda name, fn=layer.activation: L.Activation(fn, name=name)))
                self.reports[k + 0.5] = LayerReport(
                    name, "Activation", "float", reason=f"The activation {keras.activations.serialize(layer.activation)!r} "
                    f"of {op.path} has no quantized TFLite lowering known to tfquant.",
                    how_to="use relu / relu6 / sigmoid / tanh / silu / softmax, or a registered layer.")
            return
        self.qops.append(q)
        self.report(op, "quantized", op.name)

    def fuse_activation(self, q: _QOp) -> None:
        j = self.sole_consumer(q.outputs[0])
        if j is None or not self.free(j):
            return
        fused = _fusable_activation(self.g.ops[j].layer)
        if fused:
            q.activation = fused
            q.act_op = self.g.ops[j]
            q.outputs = self.g.ops[j].outputs
            self.absorbed.add(j)
            self.report(self.g.ops[j], "fused", q.name)

    # -- input quantizers --
    def insert_input_quantizers(self) -> None:
        """A QuantizeInput after each model input and each float output that quantized ops read."""
        consumers = collections.defaultdict(list)
        for q in self.qops:
            for t in q.inputs:
                consumers[t].append(q)
        self.redirect: dict[int, int] = {}
        result: list[_QOp] = []

        def maybe_quantize(t: int, name: str):
            if any(c.kind != "float" for c in consumers.get(t, [])):
                qt = next(self._ids)
                self.redirect[t] = qt
                result.append(_QOp("input", None, [t], [qt], name))

        for tensor, t in zip(self.g.input_tensors, self.g.inputs):
            maybe_quantize(t, f"{tensor._keras_history.operation.name}_quantize")
        for q in self.qops:
            result.append(q)
            if q.kind == "float" or (q.kind == "custom" and not custom_config(q.op.layer).quantize_output):
                for t in q.outputs:
                    maybe_quantize(t, f"{q.name}_quantize")
        for q in result:
            if q.kind != "input":
                q.inputs = [self.redirect.get(t, t) for t in q.inputs]
        self.qops = result

    # -- concatenations --
    def share_concat_grids(self) -> None:
        producer = {t: q for q in self.qops for t in q.outputs}
        consumers = collections.Counter(t for q in self.qops for t in q.inputs)
        outputs = {self.redirect.get(t, t) for t in self.model_outputs} | self.model_outputs
        for q in self.qops:
            if q.kind != "concat":
                continue
            flags = []
            for t in q.inputs:
                shared, cur = False, t
                while consumers[cur] == 1 and cur not in outputs:
                    p = producer.get(cur)
                    if p is None:
                        break
                    if p.kind == "passthrough":
                        cur = p.inputs[0]
                        continue
                    if p.adoptable() and not p.shared_output:
                        p.shared_output = shared = True
                    break
                flags.append(shared)
            q.shared_inputs = flags


# ---- building the quantized model ------------------------------------------------------------------
class _Resolver(dict):
    """Maps an original KerasTensor id to its new tensor (through aliases and input quantizers)."""

    def __init__(self, graph: _Graph, values: dict, redirect: dict):
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
    if target is not source and source.weights:
        target.set_weights(source.get_weights())


class _Builder:
    def __init__(self, graph: _Graph, planner: _Planner, config: QATConfig):
        self.g, self.p, self.config = graph, planner, config
        self.values: dict[int, object] = {}
        self.names: set[str] = set()
        self.resolver = _Resolver(graph, self.values, planner.redirect)

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

    def _in(self, q: _QOp):
        xs = [self.values[t] for t in q.inputs]
        return xs[0] if len(xs) == 1 else xs

    def build_op(self, q: _QOp) -> None:
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
            y = QuantActivation(activation=q.activation, params=q.params, activation_quantizer=aq,
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
            self.values[t] = v


# ---- entry points -----------------------------------------------------------------------------------
def _check_model(model) -> None:
    module = type(model).__module__
    if module.startswith(("tf_keras", "keras.src.engine", "tensorflow.python.keras")):
        raise ModelTypeError(
            f"{type(model).__name__} {getattr(model, 'name', '')!r} is a Keras 2 (tf_keras) model; "
            "tfquant.quantize_model takes Keras 3 models. Rebuild it with `import keras` (Keras 3).")
    if not isinstance(model, keras.Model):
        if isinstance(model, keras.layers.Layer):
            raise ModelTypeError(
                f"quantize_model takes a Keras Model, got the layer {model.name!r} "
                f"({type(model).__name__}): wrap it in a Functional model "
                "(keras.Model(inputs, layer(inputs))).")
        raise ModelTypeError(
            f"quantize_model takes a Keras 3 Functional or Sequential model, got {type(model).__name__}. "
            "(A SavedModel or tf.function goes through tfquant's PTQ instead.)")
    if not _is_graph_model(model):
        raise ModelTypeError(
            f"Model {model.name!r} ({type(model).__name__}) is a subclassed model: it defines `call` in "
            "Python, so there is no layer graph to rewrite. Build it with the Functional API "
            "(keras.Model(inputs, outputs)) or as a keras.Sequential, then quantize that; you can "
            "copy the weights over with set_weights.")


def quantize_model(model, config=None) -> keras.Model:
    """A trainable Keras 3 model simulating `model`'s TFLite int8 form (see the module docstring).

    Args:
      model: a Keras 3 Functional or Sequential model (nested graph models are flattened).
      config: a `QATConfig` (or a dict of its fields): bits, BN folding, learned ranges, ...

    Returns a new Functional model; `tfquant.keras.quantization_report(qmodel)` says what became of
    each layer. Activation ranges start uninitialized: train it (the first batch initializes
    them) or run `tfquant.keras.calibrate(qmodel, data)` first.

    Raises `ModelTypeError` (subclassed / unbuilt / non-Keras-3 models), `AlreadyQuantizedError`
    and `tfquant.errors.SpecError` (bits outside what TFLite runs, e.g. 0 or 17).
    """
    config = QATConfig.coerce(config)
    _check_model(model)
    graph = _Graph(model)
    quantized = [op.path for op in graph.ops if isinstance(op.layer, QuantLayer)]
    if quantized:
        raise AlreadyQuantizedError(
            f"Model {model.name!r} is already quantized (it holds tfquant layers: {', '.join(quantized[:5])}"
            f"{', ...' if len(quantized) > 5 else ''}). Quantize the float model, or keep training this one.")
    planner = _Planner(graph, config)
    planner.plan()
    qmodel = _Builder(graph, planner, config).build(model.name)
    report = QuantizationReport([planner.reports[k] for k in sorted(planner.reports)])
    qmodel._tfquant_report = report
    if report.float_layers:
        warnings.warn("tfquant.quantize_model left these layers in float (see "
                      "tfquant.keras.quantization_report(qmodel)):\n" +
                      "\n".join(f"  {r.name} ({r.class_name}): {r.reason} To quantize it: {r.how_to}"
                                for r in report.float_layers), stacklevel=2)
    return qmodel


def quantization_report(qmodel: keras.Model) -> QuantizationReport:
    """What `quantize_model` did to each layer. For a model loaded from a file (the report is not
    saved), a report is rebuilt from the model's layers: tfquant layers are "quantized", the
    others "pass-through" or "float"."""
    report = getattr(qmodel, "_tfquant_report", None)
    if report is not None:
        return report
    rows = []
    for layer in qmodel.layers:
        if isinstance(layer, L.InputLayer):
            continue
        if isinstance(layer, QuantLayer):
            rows.append(LayerReport(layer.name, type(layer).__name__, "quantized", layer.name))
        elif is_passthrough(layer):
            rows.append(LayerReport(layer.name, type(layer).__name__, "pass-through"))
        else:
            rows.append(LayerReport(layer.name, type(layer).__name__, "float", reason="Not a tfquant layer.",
                                    how_to=HOW_TO_REGISTER))
    return QuantizationReport(rows)
