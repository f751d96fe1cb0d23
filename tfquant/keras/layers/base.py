"""`QuantLayer`: what every tfquant QAT layer shares — knowing the quantizer of its inputs.

A quantized op needs the grid of its input: a conv rounds its bias to input_scale * weight_scale,
an ADD rescales both inputs, the exact simulation requantizes from the input's scale. The range
lives on the layer that *produced* the tensor (its output quantizer), so each tfquant layer keeps a
reference to its inputs' producers.

Those references are found from the graph itself: when a tfquant layer is called on symbolic
Keras tensors — when `quantize_model` builds the model, and again when Keras rebuilds it from its
config on `load_model` or `clone_model` — it walks each input's `_keras_history` back through
pass-through layers (reshape, max pool, padding, ...: values stay on their grid) to the tfquant
layer that quantized it. No reference is serialized, so nothing can go stale.

Shared grids: TFLite's CONCATENATION needs one scale on its inputs and output. A producer whose
only consumer is a concat (through pass-through layers only) is built with `shared_output=True`:
it owns no range, computes its float output, and the concat — which registers itself as the
producer's owner when it is wired — quantizes the concatenation with its own range. In the exact
simulation the producer writes its integers straight onto the concat's grid, as TFLite does.
"""
from __future__ import annotations

from typing import Callable, Optional

import keras
from keras import tree

from tfquant.core import get_simulation_mode
from tfquant.keras.errors import WiringError
from tfquant.keras.quantizers import calibrating
from tfquant.keras.registry import is_passthrough


class _Ref:
    """A reference to another layer that Keras and TF tracking do not follow (no double saving)."""

    __slots__ = ("layer", "index")

    def __init__(self, layer=None, index: int = 0):
        self.layer = layer
        self.index = index


class _Refs:
    __slots__ = ("items",)

    def __init__(self, items=()):
        self.items = list(items)


def producer_of(tensor) -> Optional[_Ref]:
    """The tfquant layer whose output quantizer `tensor` sits on, looking through pass-through
    layers; None for a model input or the output of a float layer."""
    while True:
        history = getattr(tensor, "_keras_history", None)
        if history is None or history.operation is None:
            return None
        op = history.operation
        if isinstance(op, QuantLayer):
            return _Ref(op, history.tensor_index)
        if is_passthrough(op):
            node = op._inbound_nodes[history.node_index]
            tensor = node.arguments.keras_tensors[0]
            continue
        return None


def is_exact(training) -> bool:
    return get_simulation_mode() == "exact" and not training


class QuantLayer(keras.layers.Layer):
    """Base class of tfquant's QAT layers.

    Subclasses create their own output quantizer in `build` (`self.quantizer`) unless
    `shared_output` (then a downstream concat owns it), and finish `call` with
    `self._quantize_output(y, training, exact=...)`.
    """

    #: can this layer write its output directly on a downstream concat's grid?
    adoptable = False

    def __init__(self, shared_output: bool = False, **kwargs):
        super().__init__(**kwargs)
        self.shared_output = bool(shared_output)
        self.quantizer = None
        self._sources = _Refs()
        self._owner = _Ref()

    # ---- wiring -------------------------------------------------------------------------
    def __call__(self, *args, **kwargs):
        inputs = args[0] if args else kwargs.get("inputs")
        flat = tree.flatten(inputs) if inputs is not None else []
        if flat and all(isinstance(t, keras.KerasTensor) for t in flat):
            self._sources = _Refs(producer_of(t) for t in flat)
            self._on_wire(flat)
        return super().__call__(*args, **kwargs)

    def _on_wire(self, flat_inputs) -> None:
        """Hook: called with the symbolic inputs when the layer joins a graph."""

    def input_quantizer(self, i: int = 0):
        """The quantizer of input `i` (None if that input is float)."""
        items = self._sources.items
        src = items[i] if i < len(items) else None
        return None if src is None else src.layer.output_quantizer(src.index)

    def input_range(self, i: int = 0):
        q = self.input_quantizer(i)
        if q is None:
            raise WiringError(
                f"Layer {self.name!r} ({type(self).__name__}) does not know the quantizer of its input {i}: "
                "tfquant layers must be used inside the Functional model quantize_model builds (they find "
                "their input's range through the graph).")
        return q.range()

    def output_quantizer(self, index: int = 0):
        if self.shared_output:
            owner = self._owner.layer
            if owner is None:
                raise WiringError(
                    f"Layer {self.name!r} writes its output on a concatenation's shared grid "
                    "(shared_output=True) but no tfquant Concatenate consumes it.")
            return owner.output_quantizer(0)
        return self.quantizer

    # ---- the output grid ------------------------------------------------------------------
    def _quantize_output(self, y, training, exact: Optional[Callable] = None):
        """Put `y` (float, after any fused activation) on this layer's output grid.

        `exact(output_range)` computes the bit-exact result in the "exact" simulation mode.
        """
        training = bool(training)
        if calibrating():
            if not self.shared_output:
                self.quantizer(y)           # observed, passed through
            return y
        q = self.output_quantizer()
        if exact is not None and is_exact(training):
            return exact(q.range())
        if self.shared_output:
            return y                        # the concatenation quantizes it
        return q(y, training=training)

    def _build_output_quantizer(self, quantizer) -> None:
        if not self.shared_output:
            self.quantizer = quantizer
            quantizer.build(self, "output")

    def quantizers(self) -> dict:
        """Every quantizer this layer owns, by name (for calibration and inspection)."""
        return {} if self.quantizer is None or self.shared_output else {"output": self.quantizer}

    def get_config(self):
        config = super().get_config()
        config["shared_output"] = self.shared_output
        return config

    def _trackable_children(self, save_type="checkpoint", **kwargs):
        # The quantizers' variables live on plain objects, which TF's object graph does not follow:
        # name them here so that tf.train.Checkpoint saves and restores them. (Keras' own .keras
        # and .weights.h5 formats already save them as this layer's weights.)
        children = super()._trackable_children(save_type, **kwargs)
        if save_type == "checkpoint":
            for qname, q in self.quantizers().items():
                for vname, var in getattr(q, "variables", dict)().items():
                    children.setdefault(f"{qname}_{vname}", var)
        return children
