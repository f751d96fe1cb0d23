"""The QAT plan: which tfquant op each layer call of a `LayerGraph` becomes.

    planner = Planner(LayerGraph(model), QATConfig()); planner.plan()
    planner.qops      # PlannedOp per tfquant op: conv (+ folded BN, fused ReLU), add, concat, ...
    planner.reports   # what became of each layer (quantized, folded, fused, pass-through, float)
"""
from __future__ import annotations

import collections
import dataclasses
import itertools
import warnings
from typing import Callable, Optional

import keras

from tfquant.core.op_rules import FUSED_ACTIVATIONS, merged_readers
from tfquant.keras.config import QATConfig
from tfquant.keras.layer_graph import LayerCall, LayerGraph
from tfquant.keras.layers.activation import FIXED_RANGE, supported_activations
from tfquant.keras.layers.affine import AFFINE_LAYERS, affine_problem, scalar_affine, scaled_add_scale
from tfquant.keras.layers.conv import KINDS as CONV_KINDS
from tfquant.keras.layers.layer_norm import layer_norm_problem
from tfquant.keras.layers.resize import NearestUpSampling
from tfquant.keras.registry import custom_config, is_passthrough
from tfquant.keras.report import LayerReport

L = keras.layers

HOW_TO_REGISTER = ("register a QuantizeConfig for its class (tfquant.keras.register_quantize_config), or "
                   "tfquant.keras.register_passthrough if it only moves values")


@dataclasses.dataclass
class PlannedOp:
    kind: str        # input conv add sub mul affine scaled_add layer_norm concat avgpool gap resize act custom passthrough float
    op: Optional[LayerCall]
    inputs: list[int]
    outputs: list[int]
    name: str
    bn: Optional[LayerCall] = None
    act_op: Optional[LayerCall] = None
    activation: Optional[str] = None
    params: dict = dataclasses.field(default_factory=dict)
    shared_output: bool = False
    shared_inputs: list = dataclasses.field(default_factory=list)
    synthetic_layer: Optional[Callable] = None   # name -> a layer tfquant adds (no node to copy)

    def adoptable(self) -> bool:
        if self.kind in ("input", "conv", "add", "sub", "mul", "concat", "gap", "affine", "scaled_add"):
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
        return name if name is not None and name in FUSED_ACTIVATIONS else None
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
        return (name, {}) if name in supported_activations() else None
    return None


# Keras' arithmetic ops on two tensors (`a + b` in a Functional graph: ConvNeXt's residual) ->
# the kind of the layer they equal (Add, Subtract, Multiply: TFLite's ADD, SUB, MUL).
_TENSOR_OPS = {"Add": "add", "Subtract": "sub", "Multiply": "mul"}


def _tensor_op_kind(call: LayerCall) -> Optional[str]:
    """"add" / "sub" / "mul" for a Keras op call a + b, a - b or a * b of two tensors, else None."""
    node = call.node
    kind = _TENSOR_OPS.get(type(call.layer).__name__) if node is not None else None
    if kind is None or not type(call.layer).__module__.startswith("keras.src.ops"):
        return None
    args = node.arguments.args
    if node.arguments.kwargs or len(args) != 2 or not all(isinstance(a, keras.KerasTensor) for a in args):
        return None
    return kind


def _conv_problem(layer) -> Optional[str]:
    if getattr(layer, "data_format", "channels_last") != "channels_last":
        return "channels_first data format (TFLite convolutions are channels-last)."
    if getattr(layer, "groups", 1) != 1 and type(layer) is not L.Conv2D:
        return "grouped convolution other than Conv2D's (the converter's grouped CONV_2D)."
    if getattr(layer, "quantization_mode", None):
        return f"already quantized by Keras ({layer.quantization_mode})."
    return None


class Planner:
    def __init__(self, graph: LayerGraph, config: QATConfig):
        self.g = graph
        self.config = config
        self.index = {id(op): k for k, op in enumerate(graph.ops)}
        self.calls = collections.Counter(id(op.layer) for op in graph.ops)
        self.absorbed: set[int] = set()
        self.reports: dict[float, LayerReport] = {}
        self.merge_activations()
        self.consumers: dict[int, list[int]] = collections.defaultdict(list)
        for k, op in enumerate(graph.ops):
            if k not in self.absorbed:
                for t in op.inputs:
                    self.consumers[t].append(k)
        self.model_outputs = set(graph.outputs)
        self.qops: list[PlannedOp] = []
        self._ids = itertools.count(-1, -1)   # synthetic tensor ids (negative: never an id())

    # -- helpers --
    def sole_consumer(self, t: int) -> Optional[int]:
        c = self.consumers.get(t, [])
        if len(c) == 1 and t not in self.model_outputs and c[0] not in self.absorbed:
            return c[0]
        return None

    def listed_float(self, op: LayerCall) -> bool:
        names = set(self.config.float_layers)
        return op.path in names or op.layer.name in names or op.name in names

    def free(self, k: int) -> bool:
        """Can op k be absorbed into the op before it (plain, single-call, not user-configured)?"""
        op = self.g.ops[k]
        return not (self.listed_float(op) or custom_config(op.layer) or self.calls[id(op.layer)] > 1)

    def report(self, op: LayerCall, status: str, into: Optional[str] = None, reason: str = "", how_to: str = ""):
        self.reports[self.index[id(op)]] = LayerReport(op.path, type(op.layer).__name__, status, into,
                                                          reason, how_to)

    def float_op(self, op: LayerCall, reason: str, how_to: str = HOW_TO_REGISTER):
        self.qops.append(PlannedOp("float", op, op.inputs, op.outputs, op.name))
        self.report(op, "float", reason=reason, how_to=how_to)

    def merge_activations(self) -> None:
        """The ReLU / ReLU6 layers that read one tensor become the first of each kind
        (`core.op_rules.merged_readers`: one op on the device): the others are absorbed, their
        readers read its output."""
        readers: dict[int, list[int]] = collections.defaultdict(list)
        for k, op in enumerate(self.g.ops):
            if len(op.inputs) == 1 and len(op.outputs) == 1:
                readers[op.inputs[0]].append(k)
        alias: dict[int, int] = {}
        for ks in readers.values():
            kinds = [_fusable_activation(self.g.ops[k].layer) if self.free(k) else None for k in ks]
            for dup, kept in merged_readers(kinds).items():
                j, i = ks[dup], ks[kept]
                alias[self.g.ops[j].outputs[0]] = self.g.ops[i].outputs[0]
                self.absorbed.add(j)
                self.report(self.g.ops[j], "fused", self.g.ops[i].name)
        if not alias:
            return
        self.g.alias.update(alias)
        for op in self.g.ops:
            op.inputs = [self.g.canon(t) for t in op.inputs]
        self.g.outputs = [self.g.canon(t) for t in self.g.outputs]

    # -- classification --
    def plan(self) -> list[PlannedOp]:
        for k, op in enumerate(self.g.ops):
            if k in self.absorbed:
                continue
            self.classify(k, op)
        self.insert_input_quantizers()
        self.share_concat_grids()
        return self.qops

    def classify(self, k: int, op: LayerCall) -> None:
        layer, cls = op.layer, type(op.layer)
        if self.listed_float(op):
            return self.float_op(op, "Listed in QATConfig.float_layers.", "remove it from float_layers.")
        config = custom_config(layer)
        if config is not None:
            self.qops.append(PlannedOp("custom", op, op.inputs, op.outputs, op.name))
            return self.report(op, "quantized", op.name)
        if self.calls[id(layer)] > 1 and not is_passthrough(layer):
            return self.float_op(op, f"The layer is called {self.calls[id(layer)]} times (shared weights); "
                                     "each call would need its own input grid.",
                                 "give each call its own layer (weights can be copied).")
        if cls in CONV_KINDS:
            return self.conv(k, op)
        tensor_op = _tensor_op_kind(op)
        if cls in (L.Add, L.Subtract, L.Multiply) or tensor_op is not None:
            if len(op.inputs) != 2:
                return self.float_op(op, f"{cls.__name__} of {len(op.inputs)} inputs (TFLite's int8 kernels "
                                         "take two).", "chain two-input layers instead.")
            kind = tensor_op or {L.Add: "add", L.Subtract: "sub", L.Multiply: "mul"}[cls]
            q = PlannedOp(kind, op, op.inputs, op.outputs, op.name)
            if kind == "add":
                self.fuse_activation(q)
            self.qops.append(q)
            return self.report(op, "quantized", op.name)
        if cls is L.Concatenate:
            self.qops.append(PlannedOp("concat", op, op.inputs, op.outputs, op.name))
            return self.report(op, "quantized", op.name)
        if cls in (L.AveragePooling1D, L.AveragePooling2D):
            if layer.data_format != "channels_last":
                return self.float_op(op, "channels_first data format.", "use channels_last.")
            self.qops.append(PlannedOp("avgpool", op, op.inputs, op.outputs, op.name))
            return self.report(op, "quantized", op.name)
        if cls in (L.GlobalAveragePooling1D, L.GlobalAveragePooling2D):
            if layer.data_format != "channels_last":
                return self.float_op(op, "channels_first data format.", "use channels_last.")
            axes = [1] if cls is L.GlobalAveragePooling1D else [1, 2]
            self.qops.append(PlannedOp("gap", op, op.inputs, op.outputs, op.name, params={"axes": axes}))
            return self.report(op, "quantized", op.name)
        if cls is L.UpSampling2D and layer.interpolation == "bilinear":
            if layer.data_format != "channels_last":
                return self.float_op(op, "channels_first data format.", "use channels_last.")
            self.qops.append(PlannedOp("resize", op, op.inputs, op.outputs, op.name))
            return self.report(op, "quantized", op.name)
        if (cls is L.UpSampling1D or (cls is L.UpSampling2D and layer.interpolation == "nearest")) and \
                getattr(layer, "data_format", "channels_last") == "channels_last":
            size = [layer.size] if cls is L.UpSampling1D else list(layer.size)
            self.qops.append(PlannedOp("passthrough", op, op.inputs, op.outputs, op.name,
                                  synthetic_layer=lambda name, size=size: NearestUpSampling(size, name=name)))
            return self.report(op, "pass-through", op.name)
        if is_passthrough(layer):
            self.qops.append(PlannedOp("passthrough", op, op.inputs, op.outputs, op.name))
            return self.report(op, "pass-through")
        act = _standalone_activation(layer)
        if act is not None:
            self.qops.append(PlannedOp("act", op, op.inputs, op.outputs, op.name, activation=act[0], params=act[1]))
            return self.report(op, "quantized", op.name)
        if cls in AFFINE_LAYERS:       # not folded into a Conv/Dense: int8 MUL + ADD with constants
            problem = affine_problem(layer)
            if problem:
                return self.float_op(op, problem, "use a per-channel affine over the last axis.")
            q = PlannedOp("affine", op, op.inputs, op.outputs, op.name)
            self.fuse_activation(q)
            self.qops.append(q)
            return self.report(op, "quantized", op.name)
        if cls is L.LayerNormalization:   # the converter's MEAN, SQUARED_DIFFERENCE, ... RSQRT, MUL, ADD
            problem = layer_norm_problem(layer)
            if problem:
                return self.float_op(op, problem, f"normalize over the last axis only, or {HOW_TO_REGISTER}.")
            self.qops.append(PlannedOp("layer_norm", op, op.inputs, op.outputs, op.name))
            return self.report(op, "quantized", op.name)
        rescaling = scalar_affine(op)
        if rescaling is not None:      # x + 3.0, x * (1 / 6): an int8 ADD of / MUL by a constant
            q = PlannedOp("affine", op, op.inputs, op.outputs, op.name, params={"rescaling": rescaling})
            self.fuse_activation(q)
            self.qops.append(q)
            return self.report(op, "quantized", op.name)
        scale = scaled_add_scale(layer)
        if scale is not None and len(op.inputs) == 2:    # InceptionResNetV2's a + b * scale
            q = PlannedOp("scaled_add", op, op.inputs, op.outputs, op.name, params={"scale": scale})
            self.fuse_activation(q)
            self.qops.append(q)
            return self.report(op, "quantized", op.name)
        if isinstance(layer, keras.Model):
            return self.float_op(op, "A subclassed (or shared) model used as a layer has no graph to rewrite.",
                                 "build it with the Functional API and use it once, or quantize it separately.")
        return self.float_op(op, f"tfquant has no quantized TFLite lowering for {cls.__name__}.", HOW_TO_REGISTER)

    def conv(self, k: int, op: LayerCall) -> None:
        layer = op.layer
        problem = _conv_problem(layer)
        if problem:
            return self.float_op(op, problem, "use a channels-last, ungrouped layer.")
        if type(layer) is L.Conv2DTranspose and self.config.weight_bits < 8:
            warnings.warn(f"{op.path}: Conv2DTranspose keeps 8-bit weights, and a model with "
                          f"{self.config.weight_bits}-bit weights that holds a TRANSPOSE_CONV cannot be exported: "
                          "the TFLite converter's low-bit QAT mode rejects TRANSPOSE_CONV (even in float). Use "
                          "8-bit weights for this model, or UpSampling2D + Conv2D.", stacklevel=4)
        q = PlannedOp("conv", op, op.inputs, op.outputs, op.name)
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
        elif act is not None and act in FUSED_ACTIVATIONS:
            q.activation = act
        else:
            # Split the activation off: the conv's output is int8 on device, then the activation op.
            mid = next(self._ids)
            q.outputs = [mid]
            self.qops.append(q)
            self.report(op, "quantized", op.name)
            name = f"{op.name}_{act}"
            if act in supported_activations() or act in ("swish", "hard_swish"):
                act = {"swish": "silu", "hard_swish": "hard_silu"}.get(act, act)
                params = {"negative_slope": 0.2} if act == "leaky_relu" else {}   # keras.activations' default
                self.qops.append(PlannedOp("act", None, [mid], op.outputs, name, activation=act, params=params))
            else:
                self.qops.append(PlannedOp("float", None, [mid], op.outputs, name,
                                      synthetic_layer=lambda name, fn=layer.activation: L.Activation(fn, name=name)))
                self.reports[k + 0.5] = LayerReport(
                    name, "Activation", "float", reason=f"The activation {keras.activations.serialize(layer.activation)!r} "
                    f"of {op.path} has no quantized TFLite lowering known to tfquant.",
                    how_to="use relu / relu6 / sigmoid / tanh / silu / softmax, or a registered layer.")
            return
        self.qops.append(q)
        self.report(op, "quantized", op.name)

    def fuse_activation(self, q: PlannedOp) -> None:
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
        result: list[PlannedOp] = []

        def maybe_quantize(t: int, name: str):
            if any(c.kind != "float" for c in consumers.get(t, [])):
                qt = next(self._ids)
                self.redirect[t] = qt
                result.append(PlannedOp("input", None, [t], [qt], name))

        for tensor, t in zip(self.g.input_tensors, self.g.inputs):
            # Keras-private: the InputLayer behind a model input is known only through _keras_history.
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
