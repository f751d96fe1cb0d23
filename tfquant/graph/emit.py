"""IR -> TensorFlow: the float model, the weight-only and the fully quantized simulation.

    >>> plan = assign_quantizers(graph)             # which tensors share which quantizer
    >>> plan.ranges[qid] = (lo, hi); plan.weight_ranges[node.name] = (-r, r)   # set by tfquant.ptq
    >>> fn = build_function(graph, plan, mode="quant")          # tf.function with FakeQuant ops
    >>> exact = build_function(graph, plan, mode="quant", exact=True)   # bit-exact simulation

Every quantized op is built from `tfquant.core.quantized_ops` (quantized_input, quantized_linear,
quantized_add, quantized_mul, quantized_logistic, quantized_hard_swish, quantized_mean,
quantized_avg_pool, quantized_softmax, quantized_squared_difference, quantized_rsqrt), so the
fake-quant graph is what the TFLite converter lowers to int8 kernels and the "exact" one predicts
their integers.
Ops that TFLite requires to keep their input's scale (pad, pooling, reshape, concat, ...) share
their input's quantizer; ops the IR does not know are emitted untouched from their NodeDef and
their float outputs get a quantizer of their own.

Modes: "float" (no quantization), "weights" (weights on their grid, activations float: what
bias correction and AdaRound compare against), "quant" (weights and activations). In "quant"
mode an op runs int8 only if every tensor it reads and writes is int8 in the plan: an entry of
precision "float" leaves its tensors float and the ops around them float (mixed precision).

Precision "int16" (TFLite int16x8): an op whose output is int16 and whose float inputs are all
int8 or int16 runs in int16 (a same-scale op in its input's precision); those ops are the island.
Its tensors get 16-bit narrow-range symmetric FakeQuants (`QuantPlan.grid_of`), its weights stay
int8 (the converter writes the INT64 bias `tfquant.export.int16.fix_int16` needs). Where an op reads
a tensor of the other integer precision, it reads a requantized copy:
`tfquant.export.int16.requantize_boundary` between the tensor's FakeQuant and one on the reader's
grid, which the converter writes as a QUANTIZE (int8 <-> int16). `check_int16` refuses an island
op that TF 2.21 / LiteRT cannot run in int16 (`op_rules.INT16_TFLITE_OPS`). The simulation of an
int16 op is its FakeQuant graph, also with `exact=True` (no exact int16 kernels; `verify` names them).
"""
from __future__ import annotations

import itertools
from typing import Callable, Optional, Sequence

import tensorflow as tf

from tfquant.core import (
    QuantSpec,
    SOFTMAX_RANGE,
    fake_quant,
    fake_quant_kernel,
    quantized_add,
    quantized_affine,
    quantized_avg_pool,
    quantized_hard_swish,
    quantized_input,
    quantized_linear,
    quantized_logistic,
    quantized_lookup_table,
    quantized_mean,
    quantized_mul,
    quantized_rsqrt,
    quantized_softmax,
    quantized_squared_difference,
    simulation_mode,
)
from tfquant.core.op_rules import (
    ELEMENTWISE_TF_TO_TFLITE,
    FIXED_RANGE_TF_OPS,
    INT16_FUSED_ACTIVATIONS,
    INT16_TFLITE_OPS,
    SAME_SCALE_TF_OPS,
    SAME_SCALE_TF_TO_TFLITE,
    affine_parts,
    apply_fused_activation,
    constant_operand,
    hard_swish,
    linear_pre_activation,
    lookup_table_op,
    needs_own_fake_quant,
)
from tfquant.core.plan import QuantPlan
from tfquant.errors import SpecError
from tfquant.export.int16 import requantize_boundary
from tfquant.graph.ir import SAME_SCALE_TYPES, TFLITE_OP_OF_TYPE, Graph, Node, ref, split_ref

ACT_SPEC = QuantSpec.activation()
MODES = ("float", "weights", "quant")


# ---------------------------------------------------------------------------------------------
# quantizers
# ---------------------------------------------------------------------------------------------
def _float_outputs(node: Node) -> list[int]:
    return [i for i, d in enumerate(node.out_dtypes) if d is not None and d.is_floating]


def assign_quantizers(graph: Graph) -> QuantPlan:
    """Give every float activation tensor a quantizer; same-scale ops share their input's."""
    parent: dict[str, str] = {}

    def find(q):
        while parent[q] != q:
            parent[q] = parent[parent[q]]
            q = parent[q]
        return q

    def union(a, b):
        ra, rb = find(a), find(b)
        if ra != rb:
            parent[rb] = ra

    tensor_q: dict[str, str] = {}
    owned: dict[str, list[str]] = {}
    fixed: dict[str, tuple[float, float]] = {}
    counter = itertools.count()
    used = {r for n in graph for r in n.inputs} | set(graph.output_refs())

    def new(tensor_ref, fixed_range=None):
        q = f"q{next(counter)}"
        parent[q] = q
        tensor_q[tensor_ref] = q
        owned.setdefault(q, []).append(tensor_ref)
        if fixed_range is not None:
            fixed[q] = fixed_range
        return q

    for node in graph:
        outs = [ref(node.name, i) for i in _float_outputs(node)]
        if node.type == "const" or not outs:
            continue
        data_in = [r for r in node.inputs if r in tensor_q]
        shares = node.type in SAME_SCALE_TYPES or (node.type == "passthrough" and node.tf_type in SAME_SCALE_TF_OPS)
        if shares and data_in:
            for o in outs:
                tensor_q[o] = tensor_q[data_in[0]]
            if node.type == "concat":
                for r in data_in[1:]:
                    union(tensor_q[data_in[0]], tensor_q[r])
            continue
        for o in outs:
            if node.type != "input" and o not in used:
                continue
            if node.type == "softmax":
                new(o, SOFTMAX_RANGE)
            elif node.type == "passthrough" and node.tf_type in FIXED_RANGE_TF_OPS:
                new(o, FIXED_RANGE_TF_OPS[node.tf_type])
            else:
                new(o)
    qid = {t: find(q) for t, q in tensor_q.items()}
    owners: dict[str, list[str]] = {}
    for q, tensors in owned.items():
        owners.setdefault(find(q), []).extend(tensors)
    fixed = {find(q): r for q, r in fixed.items()}
    plan = QuantPlan(qid=qid, owners=owners, fixed=fixed)
    for node in graph.linear_nodes():
        plan.weight_specs[node.name] = QuantSpec.weight(per_channel=node.type != "matmul")
    return plan


# ---------------------------------------------------------------------------------------------
# emission
# ---------------------------------------------------------------------------------------------
def linear_op(node: Node) -> Callable[[tf.Tensor, tf.Tensor], tf.Tensor]:
    """The float op of a linear node as f(x, kernel) (dtype-generic: exact mode runs float64)."""
    a = node.attrs
    if node.type == "conv2d":
        return lambda x, w: tf.raw_ops.Conv2D(
            input=x, filter=w, strides=a["strides"], padding=a["padding"],
            explicit_paddings=a["explicit_paddings"], data_format="NHWC", dilations=a["dilations"])
    if node.type == "depthwise":
        return lambda x, w: tf.raw_ops.DepthwiseConv2dNative(
            input=x, filter=w, strides=a["strides"], padding=a["padding"],
            explicit_paddings=a["explicit_paddings"], data_format="NHWC", dilations=a["dilations"])
    if node.type == "matmul":
        return lambda x, w: tf.matmul(x, w)
    raise ValueError(f"{node.name} is not a linear node")


def linear_runs_int8(node: Node, plan: QuantPlan) -> bool:
    """Whether a linear node is an int8 op in the flatbuffer: quantized weights, and its input and
    output int8 in the plan (otherwise the converter runs it in float: mixed precision)."""
    return plan.weights_quantized(node.name) and plan.is_quantized(node.inputs[0]) and \
        plan.is_quantized(node.output())


# ---------------------------------------------------------------------------------------------
# precision of each op (int8 / int16 / float) and the int16 island
# ---------------------------------------------------------------------------------------------
_LINEAR_TFLITE = {"conv2d": "CONV_2D", "depthwise": "DEPTHWISE_CONV_2D", "matmul": "FULLY_CONNECTED"}
_TYPE_TFLITE = {"add": "ADD", "bias_add": "ADD", "relu": "RELU", "relu6": "RELU6", "hard_swish": "HARD_SWISH",
                "mean": "MEAN", "softmax": "SOFTMAX", **TFLITE_OP_OF_TYPE}
_TF_TFLITE = {"Mul": "MUL", "Sigmoid": "LOGISTIC", "Tanh": "TANH", "Sub": "SUB", "AddV2": "ADD", "Add": "ADD",
              "ResizeBilinear": "RESIZE_BILINEAR", **ELEMENTWISE_TF_TO_TFLITE, **SAME_SCALE_TF_TO_TFLITE}


def node_tflite_ops(node: Node) -> list[tuple]:
    """(TFLite op, fused activation) of the ops a node becomes; an unknown TF op by its TF name.
    A MUL by a constant (affine) is named "MUL by a constant": its int8 constant operand would
    be an int8 input of an int16 op."""
    if node.is_linear:
        return [(_LINEAR_TFLITE[node.type], node.activation)]
    if node.type == "affine":
        has_mul, has_add = affine_parts(node.weights["scale"], node.weights["offset"])
        ops = [("MUL by a constant", None)] if has_mul else []
        return ops + [("ADD", node.activation)] if has_add or not ops else ops[:-1] + [("MUL by a constant", node.activation)]
    if node.type == "passthrough":
        return [(_TF_TFLITE.get(node.tf_type, node.tf_type), None)]
    return [(_TYPE_TFLITE.get(node.type, node.type), node.activation if node.type == "add" else None)]


def _shares_grid(node: Node) -> bool:
    return node.type in SAME_SCALE_TYPES or (node.type == "passthrough" and node.tf_type in SAME_SCALE_TF_OPS)


def _float_data_inputs(graph: Graph, node: Node) -> list[str]:
    """The float tensors a node computes on (a linear node's input; no shapes, axes, indices)."""
    refs = [node.inputs[0]] if node.is_linear else list(dict.fromkeys(node.inputs))
    out = []
    for r in refs:
        name, i = split_ref(r)
        dtypes = graph[name].out_dtypes
        if i < len(dtypes) and dtypes[i] is not None and dtypes[i].is_floating:
            out.append(r)
    return out


def node_precision(graph: Graph, plan: QuantPlan, node: Node) -> str:
    """The precision a node runs in (quant mode): "int8" or "int16" when its output is and every
    float tensor it reads is int8 or int16 (the other one requantized); otherwise "float". A
    same-scale op runs in its shared grid's precision."""
    if not node.out_dtypes or node.out_dtypes[0] is None or not node.out_dtypes[0].is_floating:
        return "float"
    p = plan.precision_of(node.output())
    if p == "float" or node.type in ("input", "const") or _shares_grid(node):
        return p
    if any(plan.precision_of(r) == "float" for r in _float_data_inputs(graph, node)):
        return "float"
    return p


def check_int16(graph: Graph, plan: QuantPlan) -> list[str]:
    """The nodes that run in int16 (the island), after refusing (SpecError, naming the op) one that
    TF 2.21 / LiteRT cannot run in int16: an op outside `op_rules.INT16_TFLITE_OPS`, a fused
    activation outside `INT16_FUSED_ACTIVATIONS`, float weights."""
    island = []
    if "int16" not in plan.precision.values():
        return island
    allowed = ", ".join(sorted(op for op in INT16_TFLITE_OPS if op))
    for node in graph:
        if node.type in ("input", "const") or node_precision(graph, plan, node) != "int16":
            continue
        q = plan.qid.get(node.output())
        for op, act in node_tflite_ops(node):
            if op not in INT16_TFLITE_OPS:
                raise SpecError(
                    f"{node.name} ({op}) would run in int16 (its output {node.output()!r}, quantizer {q!r}, is "
                    f"int16), but TF 2.21 / LiteRT cannot run {op} in int16 from a FakeQuant graph (ops "
                    f"allowed: {allowed}): keep {q!r} int8 or float.")
            if act not in INT16_FUSED_ACTIVATIONS:
                raise SpecError(f"{node.name} ({op}) would run in int16 with the fused activation {act!r}, which "
                                f"is not measured in int16 (allowed: None, relu, relu6): keep {q!r} int8 or float.")
        if node.is_linear and not plan.weights_quantized(node.name):
            raise SpecError(f"{node.name} ({node_tflite_ops(node)[0][0]}) would run in int16 with float weights: "
                            "int16x8 needs int8 weights; set its weights back to int8 or its output to float.")
        island.append(node.name)
    return island


def node_kernel_on_grid(node: Node, kernel, lo, hi, spec: QuantSpec):
    """The kernel of a linear node on its integer grid (per-channel axis handled for depthwise)."""
    return fake_quant_kernel(kernel, lo, hi, spec, depthwise=node.type == "depthwise")


class _Generic:
    """Emit a NodeDef untouched: imported into the graph being traced, or (eagerly) through a
    cached wrapped function."""

    def __init__(self, graph: Graph):
        self.graph = graph
        self._eager: dict[str, Callable] = {}
        self._count = itertools.count()

    def _graph_def(self, node: Node, dtypes: list) -> tf.compat.v1.GraphDef:
        gd = tf.compat.v1.GraphDef()
        if self.graph.library is not None:
            gd.library.CopyFrom(self.graph.library)
        for i, dt in enumerate(dtypes):
            ph = gd.node.add()
            ph.name, ph.op = f"in{i}", "Placeholder"
            ph.attr["dtype"].type = dt.as_datatype_enum
        nd = gd.node.add()
        nd.CopyFrom(node.node_def)
        nd.name = "op"
        nd.device = ""
        del nd.input[:]
        nd.input.extend(f"in{i}" for i in range(len(dtypes)))
        for key in [k for k in nd.attr if k.startswith("_")]:
            del nd.attr[key]
        return gd

    def __call__(self, node: Node, values: list) -> list:
        n_out = len(node.out_dtypes)
        dtypes = [v.dtype for v in values]
        returns = [f"op:{i}" for i in range(n_out)]
        if not tf.executing_eagerly():
            gd = self._graph_def(node, dtypes)
            outs = tf.graph_util.import_graph_def(
                gd, input_map={f"in{i}:0": v for i, v in enumerate(values)}, return_elements=returns,
                name=f"passthrough_{next(self._count)}")
            return list(outs)
        key = node.name + "|" + ",".join(d.name for d in dtypes)
        if key not in self._eager:
            gd = self._graph_def(node, dtypes)

            def _fn(*xs):
                return tf.graph_util.import_graph_def(
                    gd, input_map={f"in{i}:0": x for i, x in enumerate(xs)}, return_elements=returns, name="")

            self._eager[key] = tf.compat.v1.wrap_function(
                _fn, [tf.TensorSpec(None, d) for d in dtypes])
        return list(self._eager[key](*values))


class Emitter:
    """Builds the TF ops of a `Graph` node by node, in one of `MODES`.

    `run_node(node, values)` returns the node's outputs for input values (eager or traced);
    `pre_activation[name]` holds the last pre-activation output of each linear node when
    `keep_pre_activation` is set.
    """

    def __init__(self, graph: Graph, plan: Optional[QuantPlan] = None, mode: str = "float",
                 keep_pre_activation: bool = False):
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        if mode != "float" and plan is None:
            raise ValueError(f"mode {mode!r} needs a QuantPlan")
        self.graph, self.plan, self.mode = graph, plan, mode
        self.keep_pre_activation = keep_pre_activation
        self.pre_activation: dict[str, tf.Tensor] = {}
        self._generic = _Generic(graph)
        self._refake = self._shared_grids_read_by_avg_pool() if plan is not None else frozenset()
        self._island = frozenset(check_int16(graph, plan)) if mode == "quant" else frozenset()
        self._view: dict[str, str] = {}     # tensor -> the precision the current node reads it in

    # ---- helpers ----------------------------------------------------------------------
    def _q(self, tensor_ref: str) -> bool:
        """Whether `tensor_ref` is int8 here: quant mode, and the plan keeps it int8 (or the node
        being emitted reads an int8 copy of an int16 tensor)."""
        return self.mode == "quant" and self._view.get(tensor_ref, self.plan.precision_of(tensor_ref)) == "int8"

    def _int16(self, tensor_ref: str) -> bool:
        return self.mode == "quant" and self.plan.precision_of(tensor_ref) == "int16"

    def _on_grid(self, tensor_ref: str, value, precision: Optional[str] = None):
        """FakeQuant of a tensor's value on its grid in `precision` (default: its own)."""
        rng, spec = self.plan.grid_of(tensor_ref, precision)
        return fake_quant(value, *rng, spec)

    def _requantized(self, node: Node, values: Sequence) -> tuple[list, dict]:
        """The inputs of a node running int8 (int16) with int16 (int8) tensors among them, each
        read through `requantize_boundary` onto its grid in the node's precision (a QUANTIZE on the
        device); and which tensors it so reads."""
        values, view = list(values), {}
        if self.mode != "quant" or "int16" not in self.plan.precision.values() or node.type in ("input", "const"):
            return values, view
        p = node_precision(self.graph, self.plan, node)
        if p == "float" or _shares_grid(node):
            return values, view
        data = set(_float_data_inputs(self.graph, node))
        for i, r in enumerate(node.inputs):
            have = self.plan.precision_of(r)
            if r in data and have != p and have in ("int8", "int16"):
                values[i] = self._on_grid(r, requantize_boundary(values[i]), p)
                view[r] = p
        return values, view

    def _int8(self, node: Node, *tensor_refs: str) -> bool:
        """Whether `node` runs as an int8 op: its inputs and output are int8 tensors."""
        return all(self._q(r) for r in (*tensor_refs, node.output()))

    def _fq_out(self, node: Node, value, index: int = 0):
        """FakeQuant a node's output onto its quantizer when the node owns it (quant mode). In the
        exact simulation its value is TFLite's QUANTIZE of the float value (half away from zero
        of float32 x / scale): what the device runs where a float op feeds an int8 tensor."""
        r = ref(node.name, index)
        if self._int16(r) and self.plan.is_owner(r):
            return self._on_grid(r, value)
        if not self._q(r) or not self.plan.is_owner(r):
            return value
        return quantized_input(value, input_range=self.plan.range_of(r))

    def weight_range(self, node: Node):
        return self.plan.weight_ranges[node.name]

    def _shared_grids_read_by_avg_pool(self) -> frozenset:
        """Outputs of same-scale ops (max pool, concat, pad, ...: no FakeQuant of their own) read by
        an average pool (or a concat on another grid: never in PTQ, whose concats share their
        inputs' grid) and by other ops (`op_rules.needs_own_fake_quant`). A FakeQuant on the
        shared grid right at such an output (a no-op on values already on it) gives every reader
        the int8 tensor on its grid."""
        readers: dict[str, list] = {}
        for node in self.graph:
            out_q = self.plan.qid.get(node.output()) if node.out_dtypes else None
            for r in dict.fromkeys(node.inputs):      # one reader per op
                readers.setdefault(r, []).append((TFLITE_OP_OF_TYPE.get(node.type), self.plan.qid.get(r) == out_q))
        return frozenset(r for r, rs in readers.items()
                         if r in self.plan.qid and not self.plan.is_owner(r) and needs_own_fake_quant(rs))

    # ---- the ops ----------------------------------------------------------------------
    def run_node(self, node: Node, values: Sequence) -> list:
        values, self._view = self._requantized(node, values)
        try:
            outs = self._run_node(node, values)
        finally:
            self._view = {}
        if self.mode == "quant" and self._refake and node.type != "const":
            outs = [fake_quant(o, *self.plan.range_of(ref(node.name, i)), ACT_SPEC)
                    if ref(node.name, i) in self._refake and self._q(ref(node.name, i)) else o
                    for i, o in enumerate(outs)]
        if node.name in self._island and _shares_grid(node):    # an int16 same-scale op: on its grid
            outs = [self._on_grid(node.output(), outs[0])] + list(outs[1:])
        return outs

    def _run_node(self, node: Node, values: Sequence) -> list:
        t = node.type
        if t == "input":
            x = values[0]
            if self._q(node.output()) and self.plan.is_owner(node.output()):
                return [quantized_input(x, input_range=self.plan.range_of(node.output()))]
            return [self._fq_out(node, x)]
        if t == "const":
            return [tf.constant(node.weights["value"])]
        if node.is_linear:
            return [self._linear(node, values[0])]
        if t == "add":
            a, b = values
            if self._int8(node, *node.inputs):
                return [quantized_add(a, b, a_range=self.plan.range_of(node.inputs[0]),
                                      b_range=self.plan.range_of(node.inputs[1]),
                                      output_range=self.plan.range_of(node.output()),
                                      activation=node.activation)]
            return [self._fq_out(node, apply_fused_activation(node.activation, a + b))]
        if t in ("affine", "bias_add"):      # MUL by / ADD of an int8 constant (op_rules.AFFINE_TFLITE_OPS)
            scale = node.weights["scale"] if t == "affine" else None
            offset = node.weights["bias"] if t == "bias_add" else node.weights["offset"]
            if t == "affine" and not affine_parts(None, offset)[1]:
                offset = None
            scale, offset = constant_operand(scale), constant_operand(offset)
            if self._int8(node, node.inputs[0]) and (scale is None or offset is None):
                return [quantized_affine(values[0], scale, offset, input_range=self.plan.range_of(node.inputs[0]),
                                         output_range=self.plan.range_of(node.output()), activation=node.activation)]
            y = values[0] if scale is None else values[0] * scale
            y = y if offset is None else y + offset
            return [self._fq_out(node, apply_fused_activation(node.activation, y))]
        if t in ("relu", "relu6"):
            return [self._fq_out(node, apply_fused_activation(t, values[0]))]
        if t == "hard_swish":
            if self._int8(node, node.inputs[0]) and self.plan.is_owner(node.output()):
                return [quantized_hard_swish(values[0], input_range=self.plan.range_of(node.inputs[0]),
                                             output_range=self.plan.range_of(node.output()))]
            return [self._fq_out(node, hard_swish(values[0]))]
        if t == "pad":
            return [tf.pad(values[0], node.attrs["paddings"])]
        if t == "max_pool":
            a = node.attrs
            return [tf.nn.max_pool2d(values[0], a["ksize"][1:3], a["strides"][1:3], a["padding"])]
        if t == "avg_pool":
            a = node.attrs
            if self._q(node.inputs[0]):
                return [quantized_avg_pool(values[0], tuple(a["ksize"][1:3]), tuple(a["strides"][1:3]),
                                           a["padding"], input_range=self.plan.range_of(node.inputs[0]))]
            return [tf.nn.avg_pool2d(values[0], a["ksize"][1:3], a["strides"][1:3], a["padding"])]
        if t == "mean":
            a = node.attrs
            if self._int8(node, node.inputs[0]):
                return [quantized_mean(values[0], a["axes"], input_range=self.plan.range_of(node.inputs[0]),
                                       output_range=self.plan.range_of(node.output()),
                                       keepdims=a["keep_dims"])]
            return [self._fq_out(node, tf.reduce_mean(values[0], axis=a["axes"], keepdims=a["keep_dims"]))]
        if t == "concat":
            return [tf.concat(list(values), axis=node.attrs["axis"])]
        if t == "reshape":
            return [tf.reshape(values[0], values[1])]
        if t == "identity":
            return [tf.identity(values[0])]
        if t == "softmax":
            if self._int8(node, node.inputs[0]):
                return [quantized_softmax(values[0], input_range=self.plan.range_of(node.inputs[0]))]
            return [tf.nn.softmax(values[0])]
        if t == "passthrough" and node.tf_type == "Mul" and len(values) == 2 and self._int8(node, *node.inputs) \
                and self.plan.is_owner(node.output()):
            return [quantized_mul(values[0], values[1], a_range=self.plan.range_of(node.inputs[0]),
                                  b_range=self.plan.range_of(node.inputs[1]),
                                  output_range=self.plan.range_of(node.output()))]
        if t == "passthrough" and ELEMENTWISE_TF_TO_TFLITE.get(node.tf_type) and self._int8(node, *node.inputs) \
                and self.plan.is_owner(node.output()):
            ranges = dict(output_range=self.plan.range_of(node.output()))
            if node.tf_type == "SquaredDifference":
                return [quantized_squared_difference(values[0], values[1], a_range=self.plan.range_of(node.inputs[0]),
                                                     b_range=self.plan.range_of(node.inputs[1]), **ranges)]
            return [quantized_rsqrt(values[0], input_range=self.plan.range_of(node.inputs[0]), **ranges)]
        if t == "passthrough" and node.tf_type == "Sigmoid" and self._int8(node, node.inputs[0]):
            return [quantized_logistic(values[0], input_range=self.plan.range_of(node.inputs[0]))]
        table_op = lookup_table_op(tf_op=node.tf_type) if t == "passthrough" else None
        if table_op is not None and self._int8(node, node.inputs[0]) and self.plan.is_owner(node.output()):
            return [quantized_lookup_table(values[0], table_op, input_range=self.plan.range_of(node.inputs[0]),
                                           output_range=self.plan.range_of(node.output()))]
        outs = [table_op.tf_fn(values[0])] if table_op is not None and node.node_def is None else \
            self._generic(node, list(values))                 # a node the importer fused has no NodeDef
        return [self._fq_out(node, o, i) if o.dtype.is_floating else o for i, o in enumerate(outs)]

    def _linear(self, node: Node, x):
        op = linear_op(node)
        kernel = tf.constant(node.kernel)
        bias = node.bias
        weights_q = self.mode != "float" and self.plan.weights_quantized(node.name)
        if self.mode == "quant" and linear_runs_int8(node, self.plan):
            lo, hi = self.weight_range(node)
            return quantized_linear(
                op, x, kernel, None if bias is None else tf.constant(bias),
                input_range=self.plan.range_of(node.inputs[0]),
                output_range=self.plan.range_of(node.output()),
                kernel_spec=self.plan.weight_specs[node.name], activation=node.activation,
                depthwise=node.type == "depthwise", fully_connected=node.type == "matmul",
                kernel_range_=(lo, hi))
        if (self.mode == "weights" and weights_q) or node.name in self._island:   # int16: int8 weights
            lo, hi = self.weight_range(node)
            kernel = node_kernel_on_grid(node, kernel, lo, hi, self.plan.weight_specs[node.name])
        y = linear_pre_activation(op, x, kernel, bias)
        if self.keep_pre_activation:
            self.pre_activation[node.name] = y
        return self._fq_out(node, apply_fused_activation(node.activation, y))   # a float op in quant mode

    # ---- whole graph ------------------------------------------------------------------
    def run(self, inputs: Sequence, fetch: Optional[Sequence[str]] = None) -> dict:
        """Evaluate the graph; returns {tensor ref: value} for every computed tensor, or with
        `fetch` only for those: each other tensor is dropped once its last reader has run, so
        that an eager run holds the live tensors only (memory independent of the depth)."""
        env: dict[str, tf.Tensor] = {}
        for spec, x in zip(self.graph.inputs, inputs):
            env["__feed__" + spec.ref] = x
        last: dict[str, int] = {}
        keep = frozenset(fetch or ())
        nodes = list(self.graph)
        if fetch is not None:
            for k, node in enumerate(nodes):
                last.update((r, k) for r in node.inputs)
        for k, node in enumerate(nodes):
            if node.type == "input":
                values = [env.pop("__feed__" + node.output()) if fetch is not None else env["__feed__" + node.output()]]
            else:
                values = [env[r] for r in node.inputs]
            for i, v in enumerate(self.run_node(node, values)):
                r = ref(node.name, i)
                if fetch is None or r in keep or r in last:
                    env[r] = v
            if fetch is not None:
                for r in set(node.inputs):
                    if last.get(r) == k and r not in keep:
                        del env[r]
            del values
        return env if fetch is None else {r: env[r] for r in fetch}


def input_signature(graph: Graph) -> list[tf.TensorSpec]:
    return [tf.TensorSpec(s.shape, s.dtype, name=s.key) for s in graph.inputs]


def _structured(graph: Graph, env: dict):
    outs = [env[r] for _, r in graph.outputs]
    if graph.output_structure == "dict":
        return {k: tf.identity(env[r]) for k, r in graph.outputs}
    if graph.output_structure == "list":
        return outs
    return outs[0]


def build_function(graph: Graph, plan: Optional[QuantPlan] = None, mode: str = "float",
                   exact: bool = False, structured: bool = True, extra: Sequence[str] = ()):
    """A tf.function (with input signature) computing the graph in `mode`.

    `exact`: trace under `simulation_mode("exact")` (the bit-exact simulation for `verify`);
    `structured`: return the model's outputs in their original structure (dict, list, tensor);
    otherwise a dict {tensor ref: value} of the outputs and of `extra` tensors (pre-activation
    outputs of linear nodes as "pre:<node name>").
    """
    sig = input_signature(graph)
    keep_pre = any(e.startswith("pre:") for e in extra)

    def forward(*xs):
        emitter = Emitter(graph, plan, mode, keep_pre_activation=keep_pre)
        with simulation_mode("exact" if exact else "fake_quant"):
            env = emitter.run(xs)
        if structured:
            return _structured(graph, env)
        out = {r: env[r] for _, r in graph.outputs}
        for e in extra:
            out[e] = emitter.pre_activation[e[4:]] if e.startswith("pre:") else env[e]
        return out

    return tf.function(forward, input_signature=sig, autograph=False)
