"""SavedModel directory | Keras model | tf.function -> frozen GraphDef -> `Graph` (the small IR).

    >>> graph = load_graph("exported_model/")                       # signature serving_default
    >>> graph = load_graph("exported_model/", signature="serve")
    >>> graph = load_graph(keras_model)
    >>> print(graph.summary())                                      # node types, unknown ops

Variables are frozen into constants (`convert_variables_to_constants_v2`, which also inlines the
function calls), Identity nodes are bypassed, every subgraph computed from constants only is
evaluated once (so a Keras 3 batch norm, written as Rsqrt/Mul/Sub on its variables, becomes a
per-channel multiply and add whose batch-norm parameters are recorded), and the remaining nodes
get a canonical type (see `tfquant.graph.ir`). Ops the IR does not know pass through untouched
and are listed by `Graph.unknown_ops`.
"""
from __future__ import annotations

import os
from typing import Optional

import numpy as np
import tensorflow as tf

from tfquant.errors import ModelFileError
from tfquant.graph.ir import BNStats, Graph, InputSpec, Node, ref, split_ref
from tfquant.graph.loading import concrete_function, freeze, io_structure

_NOT_FOLDABLE = frozenset({"Placeholder", "PlaceholderWithDefault", "NoOp", "VarHandleOp",
                           "ReadVariableOp", "RandomUniform", "RandomStandardNormal",
                           "TruncatedNormal", "StatelessRandomUniformV2", "RandomUniformInt"})


# ---------------------------------------------------------------------------------------------
# frozen graph -> IR
# ---------------------------------------------------------------------------------------------
def _const_value(node_def) -> np.ndarray:
    return tf.make_ndarray(node_def.attr["value"].tensor)


def _evaluate(graph_def, refs: list[str]) -> dict[str, np.ndarray]:
    """Values of constant-only tensors of `graph_def`, computed in one run."""
    if not refs:
        return {}

    def _import():
        tf.graph_util.import_graph_def(graph_def, name="")

    wrapped = tf.compat.v1.wrap_function(_import, [])
    fetches = [wrapped.graph.get_tensor_by_name(r) for r in refs]
    values = wrapped.prune([], fetches)()
    return {r: np.asarray(v) for r, v in zip(refs, values)}


class _Importer:
    def __init__(self, frozen, source: str):
        self.frozen = frozen
        self.graph_def = frozen.graph.as_graph_def()
        self.tf_graph = frozen.graph
        self.source = source
        self.defs = {n.name: n for n in self.graph_def.node}
        self.order = [n.name for n in self.graph_def.node]
        self._identity_target: dict[str, str] = {}
        self.values: dict[str, np.ndarray] = {}     # tensor ref -> constant value
        self.bn_of_mul: dict[str, BNStats] = {}      # Keras 3 batch norm: data Mul -> stats
        self.nodes: list[Node] = []
        self.const_nodes: dict[str, str] = {}        # constant ref -> IR const node name

    # ---- identities and constants -----------------------------------------------------
    def resolve(self, r: str) -> str:
        """Follow Identity nodes back to the tensor they forward."""
        name, idx = split_ref(r if ":" in r else r + ":0")
        seen = 0
        while name in self.defs and self.defs[name].op in ("Identity", "StopGradient", "Snapshot") and seen < 10000:
            inp = [i for i in self.defs[name].input if not i.startswith("^")][0]
            name, idx = split_ref(inp if ":" in inp else inp + ":0")
            seen += 1
        return ref(name, idx)

    def data_inputs(self, nd) -> list[str]:
        return [self.resolve(i) for i in nd.input if not i.startswith("^")]

    def _topological(self) -> list[str]:
        """GraphDef order is not guaranteed to be topological: sort it."""
        deps = {n: [split_ref(self.resolve(i))[0] for i in self.defs[n].input if not i.startswith("^")]
                for n in self.order}
        done: set[str] = set()
        active: set[str] = set()          # on the current path: meeting one again is a cycle
        out: list[str] = []
        for start in self.order:
            stack = [(start, False)]
            while stack:
                name, expanded = stack.pop()
                if expanded:
                    active.discard(name)
                    done.add(name)
                    out.append(name)
                    continue
                if name in done or name not in self.defs:
                    continue
                if name in active:
                    raise self._loop_error(name)
                active.add(name)
                stack.append((name, True))
                stack.extend((d, False) for d in deps[name] if d not in done)
        return out

    def _loop_error(self, name: str) -> ModelFileError:
        ops = sorted({self.defs[n].op for n in self.defs if self.defs[n].op in
                      ("Enter", "Exit", "Merge", "Switch", "NextIteration", "LoopCond")}) or [self.defs[name].op]
        return ModelFileError(
            f"The model's graph has a loop (at {name!r}; ops {', '.join(ops)}): a While loop such as a "
            "Keras LSTM / GRU or tf.while_loop. tfquant.ptq quantizes feed-forward graphs only; quantize "
            "the model without its recurrent part, or keep it in float with the TFLite converter.")

    def fold_constants(self) -> None:
        from tensorflow.python.framework import op_def_registry

        const_names: set[str] = set()
        to_eval: list[str] = []
        for name in self.topo:
            nd = self.defs[name]
            if nd.op in ("Identity", "StopGradient", "Snapshot"):
                continue
            if nd.op == "Const":
                const_names.add(name)
                self.values[ref(name)] = _const_value(nd)
                continue
            ins = self.data_inputs(nd)
            if not ins or nd.op in _NOT_FOLDABLE:
                continue
            op_def = op_def_registry.get(nd.op)
            if op_def is None or op_def.is_stateful:
                continue
            if all(split_ref(i)[0] in const_names for i in ins):
                const_names.add(name)
                for k in range(len(self.tf_graph.get_operation_by_name(name).outputs)):
                    to_eval.append(ref(name, k))
        self.const_names = const_names
        self.values.update(_evaluate(self.graph_def, to_eval))

    def is_const(self, r: str) -> bool:
        return split_ref(r)[0] in self.const_names

    def value(self, r: str) -> np.ndarray:
        return self.values[r]

    # ---- Keras 3 batch norm: x * (rsqrt(var + eps) * gamma) + (beta - mean * m) --------------
    def match_keras_batch_norm(self) -> None:
        for name in self.topo:
            nd = self.defs[name]
            if nd.op != "Rsqrt" or name not in self.const_names:
                continue
            add = self.defs.get(split_ref(self.data_inputs(nd)[0])[0])
            if add is None or add.op not in ("AddV2", "Add"):
                continue
            a, b = self.data_inputs(add)
            va, vb = self.values.get(a), self.values.get(b)
            if va is None or vb is None:
                continue
            var, eps = (va, vb) if vb.size == 1 else (vb, va)
            if eps.size != 1:
                continue
            m_ref, gamma = ref(name), np.ones_like(var)
            for cons in self._consumers(ref(name)):
                if cons.op == "Mul" and cons.name in self.const_names:
                    other = [i for i in self.data_inputs(cons) if i != ref(name)]
                    if other and self.values[other[0]].shape == var.shape:
                        m_ref, gamma = ref(cons.name), self.values[other[0]]
                        break
            mean, beta, data_muls = None, np.zeros_like(var), []
            for cons in self._consumers(m_ref):
                if cons.op != "Mul":
                    continue
                other = [i for i in self.data_inputs(cons) if i != m_ref]
                if not other:
                    continue
                if cons.name in self.const_names:
                    mean = self.values[other[0]]
                    for sub in self._consumers(ref(cons.name)):
                        if sub.op == "Sub" and self.data_inputs(sub)[1] == ref(cons.name):
                            beta = self.values[self.data_inputs(sub)[0]]
                else:
                    data_muls.append(cons.name)
            if mean is None or mean.shape != var.shape:
                continue
            stats = BNStats(gamma=np.asarray(gamma, np.float32).reshape(-1),
                            beta=np.asarray(beta, np.float32).reshape(-1),
                            mean=np.asarray(mean, np.float32).reshape(-1),
                            var=np.asarray(var, np.float32).reshape(-1), eps=float(eps.reshape(())))
            for mul in data_muls:
                self.bn_of_mul[mul] = stats

    def _consumers(self, r: str):
        if not hasattr(self, "_consumer_index"):
            index: dict[str, list] = {}
            for nd in self.graph_def.node:
                for i in nd.input:
                    if not i.startswith("^"):
                        index.setdefault(self.resolve(i), []).append(nd)
            self._consumer_index = index
        return self._consumer_index.get(r, [])

    # ---- typing ------------------------------------------------------------------------
    def const_input(self, r: str) -> str:
        """An IR const node for constant tensor `r` (for pass-through ops)."""
        if r not in self.const_nodes:
            name = "const/" + r.replace(":", "_")
            value = self.values[r]
            self.nodes.append(Node(name=name, type="const", inputs=[], weights={"value": value},
                                   tf_type="Const", out_dtypes=[tf.as_dtype(value.dtype)],
                                   out_shapes=[tf.TensorShape(value.shape)]))
            self.const_nodes[r] = name
        return ref(self.const_nodes[r])

    def build(self) -> list[Node]:
        for name in self.topo:
            nd = self.defs[name]
            if nd.op in ("Identity", "StopGradient", "Snapshot", "NoOp") or name in self.const_names:
                continue
            op = self.tf_graph.get_operation_by_name(name)
            nd = self.single_op_call(nd) or nd
            node = self.typed(nd)
            node.tf_type = nd.op
            node.node_def = nd
            node.origin = [name]
            node.out_dtypes = [t.dtype for t in op.outputs]
            node.out_shapes = [t.shape for t in op.outputs]
            if node.type == "passthrough":
                node.inputs = [self.const_input(i) if self.is_const(i) else i for i in node.inputs]
            self.nodes.append(node)
        return self.nodes

    def _per_channel(self, value: np.ndarray, channels: Optional[int]) -> Optional[np.ndarray]:
        """A constant that broadcasts as a per-channel (last axis) vector, as [C], else None."""
        v = np.asarray(value)
        if not np.issubdtype(v.dtype, np.floating):
            return None
        if v.size == 1 and channels:
            return np.full([channels], v.reshape(()), np.float32)
        if v.ndim >= 1 and all(s == 1 for s in v.shape[:-1]) and (channels is None or v.shape[-1] == channels):
            return v.reshape(-1).astype(np.float32)
        return None

    def _channels(self, r: str) -> Optional[int]:
        shape = self.tf_graph.get_tensor_by_name(r).shape
        if shape.rank is None or shape[-1] is None:
            return None
        return int(shape[-1])

    def single_op_call(self, nd):
        """The one Conv2D / DepthwiseConv2dNative a function call wraps, as a NodeDef named like the
        call and reading the call's inputs; None otherwise. Keras 3 runs a grouped convolution
        (`Conv2D(groups=...)`, ConvNeXt's 7x7 depthwise) inside a `tf.function(jit_compile=True)`,
        which freezing keeps as a call: imported as the convolution it is, its weights get their
        FakeQuant like any other conv (left as a call, the converter quantized them unsimulated)."""
        if nd.op not in ("StatefulPartitionedCall", "PartitionedCall") or "f" not in nd.attr:
            return None
        fdef = next((f for f in self.graph_def.library.function
                     if f.signature.name == nd.attr["f"].func.name), None)
        if fdef is None:
            return None
        body = [n for n in fdef.node_def if n.op not in ("Identity", "NoOp")]
        if len(body) != 1 or body[0].op not in ("Conv2D", "DepthwiseConv2dNative"):
            return None
        args = [a.name for a in fdef.signature.input_arg]
        call_inputs = [i for i in nd.input if not i.startswith("^")]
        identities = {n.name: n for n in fdef.node_def if n.op == "Identity"}

        def source(i: str) -> Optional[str]:     # a body input -> the call input it reads
            name = i.split(":")[0]
            while name in identities:
                name = next(x for x in identities[name].input if not x.startswith("^")).split(":")[0]
            return call_inputs[args.index(name)] if name in args else None

        inner = tf.compat.v1.NodeDef()
        inner.CopyFrom(body[0])
        inner.name = nd.name
        del inner.input[:]
        for i in body[0].input:
            if not i.startswith("^"):
                src = source(i)
                if src is None:
                    return None
                inner.input.append(src)
        return inner

    def typed(self, nd) -> Node:
        ins = self.data_inputs(nd)
        data = [i for i in ins if not self.is_const(i)]
        attr = nd.attr
        name = nd.name

        def generic():
            return Node(name=name, type="passthrough", inputs=list(ins))

        def nhwc() -> bool:
            return "data_format" not in attr or attr["data_format"].s in (b"NHWC", b"")

        if nd.op == "Placeholder":
            return Node(name=name, type="input", inputs=[])
        if nd.op in ("Conv2D", "DepthwiseConv2dNative") and len(ins) == 2 and self.is_const(ins[1]) \
                and not self.is_const(ins[0]) and nhwc():
            kernel = self.value(ins[1]).astype(np.float32)
            channels = self._channels(ins[0])
            groups = channels // kernel.shape[2] if nd.op == "Conv2D" and channels else 1
            return Node(name=name, type="conv2d" if nd.op == "Conv2D" else "depthwise", inputs=[ins[0]],
                        weights={"kernel": kernel, "bias": None},
                        attrs={"groups": groups, "strides": list(attr["strides"].list.i),
                               "padding": attr["padding"].s.decode(),
                               "explicit_paddings": list(attr["explicit_paddings"].list.i),
                               "dilations": list(attr["dilations"].list.i) or [1, 1, 1, 1]})
        if nd.op == "MatMul" and len(ins) == 2 and self.is_const(ins[1]) and not self.is_const(ins[0]) \
                and not attr["transpose_a"].b:
            kernel = self.value(ins[1]).astype(np.float32)
            if attr["transpose_b"].b:
                kernel = kernel.T.copy()
            return Node(name=name, type="matmul", inputs=[ins[0]], weights={"kernel": kernel, "bias": None})
        if nd.op in ("BiasAdd", "Add", "AddV2", "Sub") and len(ins) == 2 and len(data) == 1 and nhwc():
            const = [i for i in ins if self.is_const(i)][0]
            if nd.op == "Sub" and ins[0] == const:
                return generic()
            vec = self._per_channel(self.value(const), self._channels(ref(name)))
            if vec is not None:
                return Node(name=name, type="bias_add", inputs=data,
                            weights={"bias": -vec if nd.op == "Sub" else vec})
            return generic()
        if nd.op in ("Add", "AddV2") and len(data) == 2:
            return Node(name=name, type="add", inputs=data)
        if nd.op in ("Mul", "RealDiv") and len(ins) == 2 and len(data) == 1:
            const = [i for i in ins if self.is_const(i)][0]
            if nd.op == "RealDiv" and ins[0] == const:
                return generic()
            vec = self._per_channel(self.value(const), self._channels(ref(name)))
            if vec is not None and nd.op == "RealDiv":      # x / c: MUL by 1 / c (as the converter makes it)
                vec = (np.float32(1.0) / vec).astype(np.float32) if np.all(vec != 0) else None
            if vec is not None:
                return Node(name=name, type="affine", inputs=data,
                            weights={"scale": vec, "offset": np.zeros_like(vec)},
                            bn=self.bn_of_mul.get(name))
            return generic()
        if nd.op in ("FusedBatchNorm", "FusedBatchNormV2", "FusedBatchNormV3") and not attr["is_training"].b \
                and nhwc() and all(self.is_const(i) for i in ins[1:5]):
            gamma, beta, mean, var = (self.value(i).astype(np.float32) for i in ins[1:5])
            stats = BNStats(gamma=gamma, beta=beta, mean=mean, var=var, eps=float(attr["epsilon"].f))
            scale, offset = stats.affine()
            return Node(name=name, type="affine", inputs=[ins[0]],
                        weights={"scale": scale, "offset": offset}, bn=stats)
        if nd.op in ("Relu", "Relu6") and len(data) == 1:
            return Node(name=name, type=nd.op.lower(), inputs=data)
        if nd.op in ("Pad", "PadV2") and len(data) == 1 and self.is_const(ins[1]):
            if nd.op == "PadV2" and float(self.value(ins[2]).reshape(())) != 0.0:
                return generic()
            return Node(name=name, type="pad", inputs=[ins[0]],
                        attrs={"paddings": self.value(ins[1]).astype(np.int64).tolist()})
        if nd.op in ("AvgPool", "MaxPool") and nhwc():
            return Node(name=name, type="avg_pool" if nd.op == "AvgPool" else "max_pool", inputs=data,
                        attrs={"ksize": list(attr["ksize"].list.i), "strides": list(attr["strides"].list.i),
                               "padding": attr["padding"].s.decode()})
        if nd.op == "Mean" and len(data) == 1 and self.is_const(ins[1]):
            axes = np.asarray(self.value(ins[1])).reshape(-1).astype(np.int64).tolist()
            return Node(name=name, type="mean", inputs=data,
                        attrs={"axes": axes, "keep_dims": bool(attr["keep_dims"].b)})
        if nd.op == "ConcatV2" and self.is_const(ins[-1]) and all(not self.is_const(i) for i in ins[:-1]):
            return Node(name=name, type="concat", inputs=ins[:-1],
                        attrs={"axis": int(self.value(ins[-1]).reshape(()))})
        if nd.op == "Reshape" and len(ins) == 2 and not self.is_const(ins[0]):
            node = generic()
            node.type = "reshape"
            node.inputs = [ins[0], self.const_input(ins[1]) if self.is_const(ins[1]) else ins[1]]
            return node
        if nd.op == "Softmax" and len(data) == 1:
            return Node(name=name, type="softmax", inputs=data)
        return generic()


def load_graph(model, signature: str = "serving_default") -> Graph:
    """Import a SavedModel directory, Keras model or tf.function into the PTQ IR.

    Raises `ModelFileError` for a path that is not a SavedModel, a missing signature, or a
    graph that cannot be frozen.
    """
    owner, fn = concrete_function(model, signature)
    frozen = freeze(fn)
    inputs, outputs, structure = io_structure(fn, frozen)
    source = os.fspath(model) if isinstance(model, (str, os.PathLike)) else type(model).__name__
    imp = _Importer(frozen, source)
    imp.topo = imp._topological()
    imp.fold_constants()
    imp.match_keras_batch_norm()
    nodes = imp.build()
    inputs = [InputSpec(key=s.key, ref=imp.resolve(s.ref), shape=s.shape, dtype=s.dtype) for s in inputs]
    outputs = [(k, imp.resolve(r)) for k, r in outputs]
    for k, r in outputs:
        if imp.is_const(r):
            raise ModelFileError(f"Output {k!r} of the model is a constant: nothing to quantize.")
    graph = Graph(nodes, inputs, outputs, structure, imp.graph_def.library, source)
    _pointwise_tensordots(graph)
    _fuse_gelus(graph)
    _canonicalize(graph)
    graph.prune()
    graph._owner = owner  # keep a loaded SavedModel alive while the graph is used
    return graph


def _const_of(graph: Graph, r: str) -> Optional[np.ndarray]:
    node = graph.nodes.get(split_ref(r)[0])
    return None if node is None or node.type != "const" else np.asarray(node.weights["value"])


def _pointwise_tensordots(graph: Graph) -> None:
    """Dense on a 3-D or 4-D tensor (tf.tensordot over the last axis: Shape, Transpose by the
    identity, Reshape to 2-D, MatMul, Reshape back; ConvNeXt's MLP) becomes the 1x1 convolution it
    is: a linear op that keeps the batch axis first (the Reshapes' computed shapes hold for one batch
    size only, and lose the static sizes) and runs as an int8 CONV_2D with per-channel weights. A
    3-D [batch, steps, channels] input is viewed as [batch, steps, 1, channels] around it."""
    before: dict[str, list[Node]] = {}
    after: dict[str, list[Node]] = {}
    for m in list(graph):
        if m.type != "matmul" or m.name not in graph.nodes:
            continue
        r1, r2 = graph.producer(m.inputs[0]), graph.sole_consumer(m.output())
        if r1.type != "reshape" or r2 is None or r2.type != "reshape":
            continue
        concat = graph.producer(r2.inputs[1])        # the output shape: concat(shape(x)[:-1], [units])
        gather = graph.producer(concat.inputs[0]) if concat.tf_type == "ConcatV2" else None
        if gather is None or gather.tf_type != "GatherV2":
            continue
        shape_of, free = graph.producer(gather.inputs[0]), _const_of(graph, gather.inputs[1])
        rank = None if free is None else len(free) + 1
        if shape_of.tf_type != "Shape" or rank not in (3, 4) or free.tolist() != list(range(rank - 1)):
            continue
        src, transpose = r1.inputs[0], graph.producer(r1.inputs[0])
        if transpose.tf_type == "Transpose":
            perm = _const_of(graph, transpose.inputs[1])
            if perm is None or perm.tolist() != list(range(rank)):
                continue
            src = transpose.inputs[0]
        if shape_of.inputs[0] != src:
            continue
        units = m.kernel.shape[-1]
        if rank == 3:
            known = graph.producer(src).out_shapes
            steps = known[split_ref(src)[1]][1] if known and known[split_ref(src)[1]].rank == 3 else None
            if steps is None:
                continue                             # the 4-D view needs the steps static
            view_in = _reshape_node(graph, f"{m.name}/as_4d", src, [-1, steps, 1, m.kernel.shape[0]])
            before[m.name] = view_in
            graph.nodes.update((n.name, n) for n in view_in)     # placed in order at the end
            src = view_in[-1].output()
        m.type, m.inputs = "conv2d", [src]
        m.weights["kernel"] = m.kernel.reshape(1, 1, *m.kernel.shape)
        m.attrs = {"strides": [1, 1, 1, 1], "padding": "VALID", "explicit_paddings": [], "dilations": [1, 1, 1, 1]}
        m.out_shapes = [tf.TensorShape([None, None, None, units])]
        graph.replace_uses(r2.output(), m.output())
        graph.remove(r2.name)
        if rank == 3:        # the bias and activation stay on the 4-D view (they fold into the conv)
            tail = m
            while True:
                nxt = graph.sole_consumer(tail.output())
                if nxt is None or graph.is_output(tail.output()) or nxt.type not in ("bias_add", "relu", "relu6"):
                    break
                nxt.out_shapes, tail = [tf.TensorShape([None, None, None, units])], nxt
            view_out = _reshape_node(graph, f"{m.name}/as_3d", tail.output(), [-1, steps, units])
            graph.replace_uses(tail.output(), view_out[-1].output())
            view_out[-1].inputs[0] = tail.output()
            after[tail.name] = view_out
            graph.nodes.update((n.name, n) for n in view_out)
    if before:
        inserted = {n.name for nodes in (*before.values(), *after.values()) for n in nodes}
        order = []
        for n in [n for n in graph if n.name not in inserted]:
            order += before.get(n.name, []) + [n] + after.get(n.name, [])
        graph.nodes = {n.name: n for n in order}
    graph.prune()


def _reshape_node(graph: Graph, name: str, x: str, shape: list) -> list[Node]:
    """A Reshape of `x` to the constant `shape` (batch -1): its const node and itself."""
    value = np.asarray(shape, np.int32)
    const = Node(name=name + "/shape", type="const", inputs=[], weights={"value": value}, tf_type="Const",
                 out_dtypes=[tf.int32], out_shapes=[tf.TensorShape(value.shape)])
    dtype = graph.producer(x).out_dtypes[split_ref(x)[1]] if graph.producer(x).out_dtypes else tf.float32
    node = Node(name=name, type="reshape", inputs=[x, const.output()], tf_type="Reshape",
                out_dtypes=[dtype], out_shapes=[tf.TensorShape([None] + list(shape[1:]))])
    return [const, node]


def _scale_is(node: Node, value: float) -> bool:
    return node.type == "affine" and not np.any(node.weights["offset"]) and \
        np.allclose(node.weights["scale"], value, rtol=1e-6, atol=0)


def _fuse_gelus(graph: Graph) -> None:
    """tf.nn.gelu(x, approximate=False), i.e. (x * 0.5) * erfc(-x * 1/sqrt(2)) (Keras' "gelu"),
    becomes one pass-through node of type "Gelu": the TFLite GELU op the converter makes of it,
    whose int8 kernel is a lookup table (`core.op_rules.LOOKUP_TABLE_OPS["gelu"]`)."""
    for erfc in list(graph):
        if erfc.tf_type != "Erfc" or erfc.name not in graph.nodes:
            continue
        scaled = graph.producer(erfc.inputs[0])
        neg = graph.producer(scaled.inputs[0]) if _scale_is(scaled, 1.0 / np.sqrt(2.0)) else None
        out = graph.sole_consumer(erfc.output())
        if neg is None or neg.tf_type != "Neg" or out is None or out.tf_type != "Mul" or len(out.inputs) != 2:
            continue
        x = neg.inputs[0]
        half = graph.producer([r for r in out.inputs if r != erfc.output()][0])
        if not _scale_is(half, 0.5) or half.inputs[0] != x or \
                any(graph.sole_consumer(n.output()) is not m for n, m in ((neg, scaled), (scaled, erfc), (half, out))):
            continue
        out.type, out.tf_type, out.inputs, out.node_def = "passthrough", "Gelu", [x], None
        out.origin = [n.name for n in (half, neg, scaled, erfc)] + list(out.origin or [out.name])
    graph.prune()


def _canonicalize(graph: Graph) -> None:
    """Merge constant bias adds and multiply/add pairs into the ops before them:
    linear -> bias_add becomes a linear with a bias; affine -> bias_add one affine."""
    changed = True
    while changed:
        changed = False
        for node in graph:
            if node.name not in graph.nodes or node.type != "bias_add":
                continue
            prev = graph.producer(node.inputs[0])
            if graph.sole_consumer(prev.output()) is not node:
                continue
            vec = node.weights["bias"]
            if prev.is_linear and vec.shape[0] == prev.out_channels:
                b = prev.bias
                prev.weights["bias"] = vec.copy() if b is None else (b + vec).astype(np.float32)
            elif prev.type == "affine" and vec.shape[0] == prev.weights["scale"].shape[0]:
                prev.weights["offset"] = (prev.weights["offset"] + vec).astype(np.float32)
            else:
                continue
            prev.origin += node.origin
            prev.out_shapes = node.out_shapes
            graph.bypass(node)
            changed = True
