"""A model as a frozen concrete function: what `load_graph` imports.

    >>> owner, fn = concrete_function("exported_model/", "serving_default")   # or a Keras model
    >>> frozen = freeze(fn)                                  # variables as constants, calls inlined
    >>> inputs, outputs, structure = io_structure(fn, frozen)
"""
from __future__ import annotations

import os

import tensorflow as tf

from tfquant.errors import ModelFileError, cause_text
from tfquant.graph.ir import InputSpec


def _saved_model_function(path: str, signature: str):
    if not os.path.exists(path):
        raise ModelFileError(f"SavedModel directory {path!r} does not exist.")
    if not os.path.isdir(path):
        raise ModelFileError(f"{path!r} is a file, not a SavedModel directory (a SavedModel is a "
                             "folder holding saved_model.pb and variables/).")
    if not any(os.path.isfile(os.path.join(path, f)) for f in ("saved_model.pb", "saved_model.pbtxt")):
        raise ModelFileError(f"{path!r} is not a SavedModel: it has no saved_model.pb. Export the model "
                             "with keras_model.export(dir) or tf.saved_model.save(module, dir).")
    try:
        loaded = tf.saved_model.load(path)
    except Exception as e:  # noqa: BLE001 - the loader raises many types on corrupt files
        raise ModelFileError(f"The SavedModel at {path!r} could not be loaded: {cause_text(e)}") from e
    signatures = dict(getattr(loaded, "signatures", {}) or {})
    if signature not in signatures:
        available = ", ".join(sorted(signatures)) or "none"
        raise ModelFileError(f"The SavedModel at {path!r} has no signature {signature!r} "
                             f"(available: {available}).")
    return loaded, signatures[signature]


def _keras_function(model):
    try:
        inputs = model.inputs
    except AttributeError:          # a subclassed model has no symbolic inputs
        inputs = None
    if not inputs:
        raise ModelFileError(f"Keras model {model.name!r} has no defined inputs (a subclassed model?): build it "
                             "with keras.Input (Functional, or Sequential with an input shape), or export it "
                             "as a SavedModel (model.export(dir)) and quantize the directory.")
    specs = [tf.TensorSpec(t.shape, t.dtype, name=t.name.split(":")[0]) for t in inputs]
    if len(specs) == 1:
        fn = tf.function(lambda x: model(x, training=False), input_signature=specs, autograph=False)
    else:
        fn = tf.function(lambda *xs: model(list(xs), training=False), input_signature=specs,
                         autograph=False)
    return fn.get_concrete_function()


def concrete_function(model, signature: str = "serving_default"):
    """(owner to keep alive, concrete function) for a SavedModel path, Keras model or tf.function."""
    if isinstance(model, (str, os.PathLike)):
        return _saved_model_function(os.fspath(model), signature)
    try:
        import keras
        if isinstance(model, keras.Model):
            return model, _keras_function(model)
    except ImportError:  # pragma: no cover
        pass
    if isinstance(model, tf.types.experimental.ConcreteFunction):
        return model, model
    if isinstance(model, tf.types.experimental.PolymorphicFunction):
        if model.input_signature is None:
            raise ModelFileError("A tf.function needs an input_signature to be imported.")
        return model, model.get_concrete_function()
    if hasattr(model, "signatures") and signature in getattr(model, "signatures", {}):
        return model, model.signatures[signature]
    raise ModelFileError(f"Cannot import a {type(model).__name__}: pass a SavedModel directory, a "
                         "Keras model, or a tf.function with an input_signature.")

def freeze(fn):
    from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2

    try:
        return convert_variables_to_constants_v2(fn)
    except Exception as e:  # noqa: BLE001
        raise ModelFileError(f"The model's graph could not be frozen to constants: {cause_text(e)}") from e


def io_structure(fn, frozen):
    """Input specs and (key, tensor name) outputs of the function, in frozen-graph order."""
    args, kwargs = fn.structured_input_signature
    flat_specs = tf.nest.flatten((args, kwargs))
    keys: list[str] = []
    if kwargs:
        keys = sorted(kwargs)  # nest flattens dicts by sorted key
    keys = [str(a.name) if isinstance(a, tf.TensorSpec) and a.name else f"input_{i}"
            for i, a in enumerate(tf.nest.flatten(args))] + keys
    placeholders = [t for t in frozen.inputs if t.dtype != tf.resource]
    if len(placeholders) != len(flat_specs):
        raise ModelFileError(f"The function has {len(flat_specs)} inputs but its frozen graph "
                             f"{len(placeholders)} placeholders: unsupported signature.")
    inputs = []
    for key, spec, t in zip(keys, flat_specs, placeholders):
        inputs.append(InputSpec(key=key, ref=t.name, shape=spec.shape.as_list() if spec.shape.rank is not None
                                else None, dtype=spec.dtype))
    out_struct = fn.structured_outputs
    flat_out = frozen.outputs
    if isinstance(out_struct, dict):
        outputs = list(zip(sorted(out_struct), [t.name for t in flat_out]))
        structure = "dict"
    elif isinstance(out_struct, (list, tuple)):
        outputs = [(str(i), t.name) for i, t in enumerate(flat_out)]
        structure = "list"
    else:
        outputs = [("output_0", flat_out[0].name)]
        structure = "single"
    return inputs, outputs, structure
