"""Peer: the TFLite converter's own routes (float, and post-training int8 quantization).

This module deliberately uses nothing from tfquant: it is what a user would write with the
converter alone, so that the benchmarks compare tfquant with the converter's own behaviour.

- `float_tflite(model)`: the float flatbuffer.
- `converter_ptq(model, representative, per_channel=True, int8_io=False)`: full-integer PTQ
  (`optimizations=[DEFAULT]`, `representative_dataset`, `TFLITE_BUILTINS_INT8`); per-tensor
  weights through `_experimental_disable_per_channel = True`. Float input/output by default (the
  converter adds QUANTIZE / DEQUANTIZE ops), int8 input/output with `int8_io=True`.
- `run_tflite(model_bytes, inputs, ...)`: the outputs in `ai_edge_litert`'s interpreter, in
  batches, with the default (XNNPACK) or the reference kernels.
"""
from __future__ import annotations

import contextlib
import io
from typing import Iterable, List, Optional, Union

import numpy as np


def _converter(model):
    import tensorflow as tf

    return tf.lite.TFLiteConverter.from_keras_model(model)


def _convert(converter) -> bytes:
    # from_keras_model exports a Keras 3 model to a temporary SavedModel inside convert(), and
    # Keras prints the artifact's signature and every captured variable to stdout: keep it quiet.
    with contextlib.redirect_stdout(io.StringIO()):
        return converter.convert()


def float_tflite(model) -> bytes:
    """The float flatbuffer of a Keras 3 model (no optimizations)."""
    return _convert(_converter(model))


def converter_ptq(model, representative: np.ndarray, per_channel: bool = True,
                  int8_io: bool = False, calibration_batch: int = 1) -> bytes:
    """The converter's full-integer post-training quantization of a Keras 3 model.

    `representative`: float32 inputs [N, ...] already preprocessed, fed `calibration_batch` at a
    time as the representative data set. Per-channel weights (the converter's default) or
    per-tensor (`per_channel=False`). Inputs and outputs stay float unless `int8_io`."""
    import tensorflow as tf

    representative = np.asarray(representative, dtype=np.float32)
    if representative.ndim < 2 or len(representative) == 0:
        raise ValueError("representative: an array [N, ...] of at least one sample is needed")

    def dataset() -> Iterable[List[np.ndarray]]:
        for i in range(0, len(representative), calibration_batch):
            yield [representative[i:i + calibration_batch]]

    converter = _converter(model)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = dataset
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    if not per_channel:
        converter._experimental_disable_per_channel = True
    if int8_io:
        converter.inference_input_type = tf.int8
        converter.inference_output_type = tf.int8
    return _convert(converter)


def _round_half_away(x: np.ndarray) -> np.ndarray:
    """TFLite's rounding (TfLiteRound / std::round): half away from zero, unlike np.round."""
    return np.sign(x) * np.floor(np.abs(x) + 0.5)


def quantize(x: np.ndarray, scale: float, zero_point: int, dtype=np.int8) -> np.ndarray:
    """Float -> integer as TFLite's QUANTIZE op does: round(x / scale) + zero_point, clamped."""
    info = np.iinfo(dtype)
    q = _round_half_away(np.asarray(x, np.float64) / scale) + zero_point
    return np.clip(q, info.min, info.max).astype(dtype)


def make_interpreter(model_bytes: bytes, reference: bool = False, num_threads: Optional[int] = None,
                     preserve_all_tensors: bool = False):
    """An ai_edge_litert Interpreter: reference kernels (OpResolverType.BUILTIN_REF) or the
    default ones (XNNPACK applied)."""
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    resolver = OpResolverType.BUILTIN_REF if reference else OpResolverType.AUTO
    return Interpreter(model_content=bytes(model_bytes), num_threads=num_threads,
                       experimental_op_resolver_type=resolver,
                       experimental_preserve_all_tensors=preserve_all_tensors)


def _qparams(detail) -> tuple:
    scale, zero_point = detail["quantization"]
    if not scale:
        qp = detail.get("quantization_parameters") or {}
        scales, zps = qp.get("scales", []), qp.get("zero_points", [])
        if len(scales) == 1:
            scale, zero_point = float(scales[0]), int(zps[0])
    return float(scale), int(zero_point)


def run_tflite(model_bytes: bytes, inputs: np.ndarray, batch_size: int = 256, reference: bool = False,
               num_threads: Optional[int] = None, dequantize: bool = True
               ) -> Union[np.ndarray, List[np.ndarray]]:
    """Run a single-input flatbuffer on `inputs` [N, ...] (float, as for the float model) in
    batches of `batch_size` (the input is resized to the batch) and return its output [N, ...]
    (a list if the model has several outputs).

    An int8/uint8 input is quantized with the input tensor's (scale, zero point) the way TFLite's
    QUANTIZE op does (unless `inputs` already has that dtype). An integer output is dequantized
    with its (scale, zero point) unless `dequantize=False`. `reference=True` uses the reference
    kernels (BUILTIN_REF); `num_threads` is passed to the interpreter."""
    inputs = np.asarray(inputs)
    interp = make_interpreter(model_bytes, reference=reference, num_threads=num_threads)
    in_detail = interp.get_input_details()
    if len(in_detail) != 1:
        raise ValueError(f"run_tflite handles single-input models; this one has {len(in_detail)}")
    in_detail = in_detail[0]
    in_dtype = np.dtype(in_detail["dtype"])
    if np.issubdtype(in_dtype, np.integer) and inputs.dtype != in_dtype:
        scale, zp = _qparams(in_detail)
        if not scale:
            raise ValueError(f"integer input {in_detail['name']} has no quantization parameters")
        inputs = quantize(inputs, scale, zp, in_dtype)
    else:
        inputs = inputs.astype(in_dtype, copy=False)

    n = len(inputs)
    batch_size = max(1, min(batch_size, n))
    current = None
    results: List[List[np.ndarray]] = []
    out_details = None
    for start in range(0, n, batch_size):
        chunk = inputs[start:start + batch_size]
        if current != len(chunk):
            interp.resize_tensor_input(in_detail["index"], [len(chunk), *inputs.shape[1:]])
            interp.allocate_tensors()
            current = len(chunk)
            out_details = interp.get_output_details()
        interp.set_tensor(in_detail["index"], chunk)
        interp.invoke()
        outs = [interp.get_tensor(d["index"]).copy() for d in out_details]
        if not results:
            results = [[] for _ in outs]
        for acc, o in zip(results, outs):
            acc.append(o)

    outputs = []
    for d, parts in zip(out_details, results):
        y = np.concatenate(parts, axis=0)
        if dequantize and np.issubdtype(y.dtype, np.integer):
            scale, zp = _qparams(d)
            if scale:
                y = ((y.astype(np.float32) - zp) * np.float32(scale)).astype(np.float32)
        outputs.append(y)
    return outputs[0] if len(outputs) == 1 else outputs
