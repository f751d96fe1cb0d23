"""`calibrate`: initialize a quantized model's activation ranges from a few batches of data.

    tfquant.keras.calibrate(qmodel, x_train[:512], steps=8)            # min / max
    tfquant.keras.calibrate(qmodel, dataset, steps=16, estimator="mse")

The model runs in float (every quantizer passes its values through) while each activation
quantizer's values feed a range estimator of `tfquant.core` ("minmax", "moving_average",
"percentile", "mse", "cross_entropy"); the resulting ranges are set and marked initialized, so
training's moving averages (or learned ranges) start from them instead of the first batch.
"""
from __future__ import annotations

import warnings
from typing import Optional

import keras
import numpy as np
import tensorflow as tf

from tfquant.core import QuantSpec, make_estimator
from tfquant.errors import DataError
from tfquant.keras.layers import QuantLayer
from tfquant.keras.quantizers import ActivationQuantizer, calibration_scope

ACT = QuantSpec.activation()


class _Calibrator:
    def __init__(self, estimator: str, kwargs: dict):
        self.estimator, self.kwargs = estimator, kwargs
        self.observed: dict[int, tuple] = {}

    def observe(self, quantizer, values) -> None:
        entry = self.observed.get(id(quantizer))
        if entry is None:
            entry = self.observed[id(quantizer)] = (quantizer, make_estimator(self.estimator, ACT, **self.kwargs))
        entry[1].update(np.asarray(values))


def _batches(data, steps: Optional[int], batch_size: int, num_inputs: int):
    if isinstance(data, (np.ndarray, tf.Tensor)) or (
            isinstance(data, (list, tuple)) and num_inputs > 1 and len(data) == num_inputs
            and all(isinstance(a, (np.ndarray, tf.Tensor)) for a in data)):
        arrays = [np.asarray(data)] if isinstance(data, (np.ndarray, tf.Tensor)) else [np.asarray(a) for a in data]
        n = arrays[0].shape[0]
        if n == 0:
            raise DataError("calibrate got an empty array.")
        count = 0
        for start in range(0, n, batch_size):
            if steps is not None and count >= steps:
                return
            batch = [a[start:start + batch_size] for a in arrays]
            yield batch[0] if len(batch) == 1 else batch
            count += 1
        return
    iterator = iter(data)
    count = 0
    while steps is None or count < steps:
        try:
            element = next(iterator)
        except StopIteration:
            return
        if isinstance(element, tuple) and len(element) in (2, 3) and num_inputs == 1:
            element = element[0]             # (x, y) or (x, y, sample_weight)
        yield element
        count += 1


def _check_batch(qmodel: keras.Model, batch) -> None:
    """The first batch against the model's inputs: float, and the right sample shape (the
    message PTQ gives, instead of an error from deep inside the model)."""
    arrays = batch if isinstance(batch, (list, tuple)) else [batch]
    for a, spec in zip(arrays, qmodel.inputs):
        dtype = tf.as_dtype(a.dtype) if isinstance(a, tf.Tensor) else np.asarray(a).dtype
        if not np.issubdtype(np.dtype(getattr(dtype, "as_numpy_dtype", dtype)), np.floating):
            raise DataError(f"calibrate: the data for input {spec.name!r} must be floating point, got "
                            f"{np.dtype(getattr(dtype, 'as_numpy_dtype', dtype)).name} (preprocess images to float first).")
        want, got = list(spec.shape[1:]), list(np.shape(a)[1:])
        if len(want) != len(got) or any(w is not None and w != g for w, g in zip(want, got)):
            raise DataError(f"calibrate: samples of shape {got} but the model's input {spec.name!r} expects {want}.")


def calibrate(qmodel: keras.Model, data, steps: Optional[int] = None, *, batch_size: int = 32,
              estimator: str = "minmax", **estimator_kwargs) -> dict[str, tuple[float, float]]:
    """Set every activation range of `qmodel` from `data` (array, list of arrays for several
    inputs, tf.data.Dataset or iterable of batches; (x, y) elements use x), over at most `steps`
    batches. Returns {"layer/quantizer": (min, max)}."""
    layers = [layer for layer in qmodel._flatten_layers(include_self=False) if isinstance(layer, QuantLayer)]
    if not layers:
        raise DataError(f"calibrate: model {qmodel.name!r} has no tfquant layers; quantize it first "
                        "(tfquant.quantize_model).")
    calibrator = _Calibrator(estimator, estimator_kwargs)
    seen = 0
    with calibration_scope(calibrator):
        for batch in _batches(data, steps, batch_size, len(qmodel.inputs)):
            if seen == 0:
                _check_batch(qmodel, batch)
            qmodel(batch, training=False)
            seen += 1
    if seen == 0:
        raise DataError("calibrate got no batches (empty data set, or steps=0).")
    ranges = {}
    missed = []
    for layer in layers:
        for name, q in layer.quantizers().items():
            if not isinstance(q, ActivationQuantizer):
                continue
            entry = calibrator.observed.get(id(q))
            if entry is None:
                missed.append(f"{layer.name}/{name}")
                continue
            lo, hi = (float(v) for v in entry[1].range())
            q.set_range(lo, hi)
            ranges[f"{layer.name}/{name}"] = (lo, hi)
    if missed:
        warnings.warn(f"calibrate: these quantizers saw no data and keep their ranges: {missed}", stacklevel=2)
    return ranges
