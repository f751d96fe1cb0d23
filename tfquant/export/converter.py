"""`to_tflite`: a FakeQuant graph (Keras model or concrete function) to an int8 flatbuffer.

    >>> tflite_bytes = to_tflite(qat_model)                      # float I/O, int8 inside
    >>> to_tflite(qat_model, "model.tflite", int8_io=True)       # int8 I/O, written atomically

The converter runs in QAT mode: every scale comes from a FakeQuant op's constant range, so the
graph must carry FakeQuant ops (tfquant's QAT and PTQ both produce them). A graph without any
is refused: converting it would silently produce a float model.
"""
from __future__ import annotations

import contextlib
import dataclasses
import os
import re
import types
from typing import Iterator, Optional, Union

import tensorflow as tf
from tensorflow.python.framework import convert_to_constants as _convert_to_constants
from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2

from tfquant.core.integer_kernels import has_emulation_ops, simulation_mode
from tfquant.errors import ExportError, cause_text
from tfquant.export.int16 import fix_int16
from tfquant.io_utils import write_bytes_atomic

FAKE_QUANT_OPS = frozenset({
    "FakeQuantWithMinMaxVars",
    "FakeQuantWithMinMaxVarsPerChannel",
    "FakeQuantWithMinMaxArgs",
    "QuantizeAndDequantizeV2",
    "QuantizeAndDequantizeV3",
    "QuantizeAndDequantizeV4",
})

Exportable = Union[tf.keras.Model, "tf.types.experimental.ConcreteFunction", "tf.types.experimental.PolymorphicFunction"]


def _keras_concrete_function(model) -> tf.types.experimental.ConcreteFunction:
    try:
        inputs = model.inputs
    except AttributeError:          # a subclassed model has no symbolic inputs
        inputs = None
    if not inputs:
        raise ExportError(
            f"Keras model {model.name!r} has no defined inputs (a subclassed model?): build it "
            "with keras.Input (Functional or Sequential with an input shape) before exporting.")
    specs = [tf.TensorSpec(t.shape, t.dtype, name=t.name.split(":")[0]) for t in inputs]

    if len(specs) == 1:
        @tf.function(input_signature=specs, autograph=False)
        def serve(x):
            return model(x, training=False)
    else:
        @tf.function(input_signature=specs, autograph=False)
        def serve(*xs):
            return model(list(xs), training=False)
    return serve.get_concrete_function()


def concrete_function_of(graph: Exportable) -> tf.types.experimental.ConcreteFunction:
    """The concrete function to convert for a Keras model, tf.function or concrete function."""
    import keras  # local: export knows Keras only as an input type

    if isinstance(graph, keras.Model):
        return _keras_concrete_function(graph)
    if isinstance(graph, tf.types.experimental.ConcreteFunction):
        return graph
    if isinstance(graph, tf.types.experimental.PolymorphicFunction):
        if graph.input_signature is None:
            raise ExportError(
                "to_tflite got a tf.function without an input_signature: give one "
                "(@tf.function(input_signature=[tf.TensorSpec(...)])) or pass a concrete function.")
        return graph.get_concrete_function()
    raise ExportError(
        f"to_tflite cannot export a {type(graph).__name__}: pass a Keras model, a tf.function "
        "with an input_signature, or a concrete function.")


def is_ptq_result(obj) -> bool:
    """A `tfquant.ptq` result (duck-typed: export knows no algorithm)."""
    return hasattr(obj, "with_plan") and hasattr(obj, "fake_quant") and hasattr(obj, "exact")


@contextlib.contextmanager
def with_plan(model, plan) -> Iterator:
    """`model` with `plan`'s ranges for the duration of the block: a PTQ result rebuilt from the
    plan, or a QAT Keras model whose quantizers hold the plan's ranges (restored afterwards)."""
    if plan is None:
        yield model
    elif is_ptq_result(model):
        yield model.with_plan(plan)
    else:
        import keras

        if not isinstance(model, keras.Model):
            raise ExportError(f"plan= needs a tfquant.ptq result or a QAT Keras model, got {type(model).__name__}.")
        from tfquant.keras.plan import plan_applied

        with plan_applied(model, plan):
            yield model


def fake_quant_nodes(graph_def: tf.compat.v1.GraphDef) -> list:
    """Every FakeQuant / QuantizeAndDequantize node in a GraphDef and its function library."""
    nodes = [n for n in graph_def.node if n.op in FAKE_QUANT_OPS]
    for fn in graph_def.library.function:
        nodes.extend(n for n in fn.node_def if n.op in FAKE_QUANT_OPS)
    return nodes


def _uncalibrated(model) -> list[str]:
    """A QAT Keras model's activation quantizers that never saw data (they would export a grid
    collapsed on 0: a flatbuffer that outputs constants)."""
    import keras

    if not isinstance(model, keras.Model):
        return []
    from tfquant.keras import quantizer_state

    missing = [name for name, (_, _, initialized) in quantizer_state(model).items() if not initialized]
    if not missing:
        return []
    return [f"{len(missing)} activation quantizer(s) have no range ({', '.join(missing[:3])}"
            f"{', ...' if len(missing) > 3 else ''}): run tfquant.calibrate(qmodel, data) or train the model first"]


def _checked_frozen_function(graph: Exportable):
    """The concrete function to convert, checked and frozen, and whether it has low-bit weights."""
    with simulation_mode("fake_quant"):   # the converter must see FakeQuant ops, not emulation
        fn = concrete_function_of(graph.fake_quant if is_ptq_result(graph) else graph)
    nodes = fake_quant_nodes(fn.graph.as_graph_def())
    if has_emulation_ops(fn.graph.as_graph_def()):
        raise ExportError(
            "The graph holds exact-simulation ops (it was traced under simulation_mode('exact')): "
            "export a tf.function traced in 'fake_quant' mode (see tfquant.core.integer_kernels).")
    if not nodes:
        raise ExportError(
            "The graph has no FakeQuant ops, so it would convert to a float model. Quantize it "
            "first: tfquant.quantize_model(model) for QAT, or tfquant.ptq(...) for "
            "post-training quantization.")
    _check_activation_bits(fn)
    _check_no_loops(fn)
    low_bit = any(n.attr["num_bits"].i and n.attr["num_bits"].i < 8 for n in nodes)
    return _frozen(fn), low_bit


@dataclasses.dataclass(frozen=True)
class FrozenGraph:
    """A traced function frozen for the converter: its GraphDef with every variable as a constant
    (functions inlined, control flow lowered), the inputs left to feed (as specs named after the
    GraphDef's placeholders) and the output tensor names. `fn` is the function it was traced as
    (the converter reads its ops' source locations for debug info)."""

    graph_def: tf.compat.v1.GraphDef
    inputs: list
    outputs: list
    fn: "tf.types.experimental.ConcreteFunction"


def _frozen(fn) -> FrozenGraph:
    """Every variable (weights, FakeQuant ranges, learned or not) as a constant. Handing the
    converter a live model instead lets it keep variables an optimizer made reachable (trainable
    ranges after fit) and fail on them. Only the GraphDef is built: no ConcreteFunction is
    rebuilt around it (`convert_variables_to_constants_v2`'s import and prune of the whole
    graph, 20-40 s of a QAT export of MobileNetV3Small)."""
    try:
        graph_def, feeds = frozen_graph_def(fn)
    except Exception as e:  # noqa: BLE001 - freezing raises many types
        raise ExportError(f"Could not freeze the graph's variables into constants: {cause_text(e)}") from e
    by_name = {t.name: t for t in fn.inputs}
    inputs = [tf.TensorSpec(by_name[n].shape, by_name[n].dtype, name=n.split(":")[0]) for n in feeds
              if by_name[n].dtype != tf.resource]
    return FrozenGraph(graph_def, inputs, [t.name for t in fn.outputs], fn)


def frozen_graph_def(fn, lower_control_flow: bool = True) -> tuple[tf.compat.v1.GraphDef, list[str]]:
    """The GraphDef `convert_variables_to_constants_v2(fn)` builds (functions inlined, variables
    as constants) without the ConcreteFunction it then wraps around it, and the names of the
    inputs left to feed. That wrapping (an import and a prune that copies the graph op by op in
    Python) is most of a freeze's time, about 30 s for a 40k-op graph such as MobileNetV3Small's."""
    try:   # TF's private helpers behind convert_variables_to_constants_v2 (TF 2.21)
        data = _convert_to_constants._FunctionConverterDataInEager(
            func=fn, lower_control_flow=lower_control_flow, aggressive_inlining=False)
        graph_def, converted = _convert_to_constants._replace_variables_by_constants(converter_data=data)
    except AttributeError:   # another TF: the public (slower) freeze, same GraphDef
        frozen = convert_variables_to_constants_v2(fn, lower_control_flow=lower_control_flow)
        return frozen.graph.as_graph_def(), [t.name for t in frozen.inputs]
    constants = {fn.graph.internal_captures[i].ref() for i in converted}   # as _construct_concrete_function
    return graph_def, [t.name for t in fn.inputs if t.ref() not in constants]


def _converter_of_frozen(frozen: FrozenGraph) -> tf.lite.TFLiteConverter:
    """`TFLiteConverter.from_concrete_functions` for an already frozen graph: the converter's own
    freeze (`_freeze_concrete_function`) is handed the GraphDef and the feed and fetch tensors
    (placeholders of the same names, dtypes and shapes in a graph of their own, which the
    converter sets to batch 1) instead of freezing the function again."""
    converter = tf.lite.TFLiteConverter.from_concrete_functions([frozen.fn])
    with tf.Graph().as_default():
        inputs = [tf.compat.v1.placeholder(s.dtype, s.shape, name=s.name) for s in frozen.inputs]
    outputs = [types.SimpleNamespace(name=n) for n in frozen.outputs]   # the converter reads .name only
    converter._freeze_concrete_function = lambda: (frozen.graph_def, inputs, outputs, frozen.fn)
    return converter


def _check_activation_bits(fn) -> None:
    """Refuse activation FakeQuants the int8 kernels cannot honour.

    The converter stores activations as int8 (or int4, which few kernels run) whatever a
    FakeQuant's num_bits says: a 5-bit activation FakeQuant would silently get an 8-bit scale
    on the device. 16-bit activations (int16x8) must be narrow-range (zero point 0; the rest is
    checked on the flatbuffer, `int16.fix_int16`). Weights (FakeQuants fed only by constants and
    variables) may use 4..8 bits.
    """
    graph = fn.graph
    inputs = {t.op.name for t in fn.inputs if t.dtype != tf.resource}

    def fed_by_data(tensor, seen) -> bool:
        op = tensor.op
        if op.name in inputs:
            return True
        if op.name in seen:
            return False
        seen.add(op.name)
        return any(fed_by_data(t, seen) for t in op.inputs if t.dtype != tf.resource)

    for op in graph.get_operations():
        if op.type not in FAKE_QUANT_OPS or "num_bits" not in op.node_def.attr:
            continue
        bits = op.get_attr("num_bits")
        if bits < 4:
            raise ExportError(
                f"FakeQuant {op.name!r} uses {bits} bits: the TFLite converter writes a wrong zero "
                "point for weights under 4 bits (int4 storage). Use 4..8-bit weights.")
        if bits == 16 and not op.get_attr("narrow_range") and fed_by_data(op.inputs[0], set()):
            raise ExportError(
                f"FakeQuant {op.name!r} quantizes an activation to 16 bits without narrow_range: LiteRT's "
                "int16 kernels need zero point 0, i.e. a narrow-range symmetric grid "
                "(tfquant.export.int16.INT16_ACTIVATION, range [-m, m]).")
        if bits not in (8, 16) and fed_by_data(op.inputs[0], set()):
            raise ExportError(
                f"FakeQuant {op.name!r} quantizes an activation to {bits} bits, but TFLite runs 8-bit "
                "(int8) or 16-bit (int16x8) activations only (the converter would silently use an "
                "8-bit scale). Use 8-bit activations (16-bit: see tfquant.export.int16); weights may "
                "use 4..8 bits.")


LOOP_OPS = frozenset({"While", "StatelessWhile"})


def _check_no_loops(fn) -> None:
    """Refuse a graph that runs a loop (a recurrent layer or tf.while_loop): the converter cannot
    lower its tensor lists among int8 kernels and would answer with flags tfquant does not use."""
    loops = [op.name for op in fn.graph.get_operations() if op.type in LOOP_OPS]
    if loops:
        raise ExportError(
            f"The model runs a loop (TF op {loops[0]!r}{f' and {len(loops) - 1} more' if len(loops) > 1 else ''}: "
            "a recurrent layer such as LSTM / GRU, or a tf.while_loop), which tfquant cannot export "
            "into an int8 flatbuffer. Quantize the feed-forward part as its own model and run the "
            "recurrent part as a float TFLite model beside it.")


def check_allocates(data: bytes) -> None:
    """Raise ExportError when LiteRT cannot prepare the flatbuffer at batch 1 (a converter
    lowering that writes inconsistent shapes, e.g. for an op TFLite has no kernel for)."""
    from ai_edge_litert.interpreter import Interpreter

    try:
        Interpreter(model_content=data).allocate_tensors()
    except (ValueError, RuntimeError) as e:
        detail = " ".join(str(e).split())[:240]
        node = re.search(r"Node number (\d+)", str(e))
        where = ""
        if node:
            from tfquant.export.inspector import inspect

            report = inspect(data)
            index = int(node.group(1))
            if index < len(report.ops):
                op = report.ops[index]
                names = [report.tensors[i].name for i in op.outputs]
                where = f" The failing op is {op.op} (node {index}) writing {names[0]!r}."
        raise ExportError(
            f"The TFLite converter wrote a flatbuffer that LiteRT cannot run ({detail}).{where} An op "
            "of the model has no working TFLite lowering (e.g. tf.signal.fft in a Lambda layer): "
            "remove it from the quantized model or compute it outside. Nothing was written.") from None


def _int16_hint(e: Exception) -> str:
    """Why the converter refuses a graph mixing int8 and int16 around an op."""
    text = str(e)
    if "i16" not in text and "same element type" not in text and "element type needs to match" not in text:
        return ""
    return (" (an op reads int8 and writes int16 or the reverse: every LiteRT int16 kernel reads and "
            "writes int16; put tfquant.export.int16.requantize_boundary between the 8-bit and the "
            "16-bit FakeQuant)")


def to_tflite(graph: Exportable, path: Optional[Union[str, os.PathLike]] = None, *,
              int8_io: bool = False, plan=None) -> bytes:
    """Convert a FakeQuant graph to a TFLite flatbuffer with int8 kernels.

    Args:
      graph: a Keras model, a tf.function with an input_signature, a concrete function, or a
        `tfquant.ptq` result.
      path: if given, the flatbuffer is also written there atomically.
      int8_io: make the model's inputs and outputs int8 (otherwise float, with QUANTIZE /
        DEQUANTIZE at the edges).
      plan: a `tfquant.QuantPlan` to export with instead of the model's own ranges (a QAT
        model is left as it was).

    Returns the flatbuffer bytes. Raises `ExportError` for a graph without FakeQuant ops or
    one the converter rejects.
    """
    with with_plan(graph, plan) as graph:   # the plan's ranges are read when the graph is frozen
        problems = graph.export_problems() if is_ptq_result(graph) else _uncalibrated(graph)
        if problems:
            raise ExportError("The plan cannot be exported as asked: " + "; ".join(problems))
        fn, low_bit = _checked_frozen_function(graph)
    converter = _converter_of_frozen(fn)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    if low_bit:
        converter._experimental_low_bit_qat = True  # honour num_bits < 8 (int4-in-int8 weights)
    if int8_io:
        converter.inference_input_type = tf.int8
        converter.inference_output_type = tf.int8
    try:
        data = converter.convert()
    except Exception as e:  # noqa: BLE001 - the converter raises many types
        raise ExportError(f"The TFLite converter rejected the graph: {cause_text(e, 300)}{_int16_hint(e)}") from None
    data = fix_int16(data)       # the same bytes unless the graph has 16-bit activations
    check_allocates(data)
    if path is not None:
        write_bytes_atomic(path, data)
    return data
