"""Quantizers of tfquant's QAT: small Keras-serializable objects that say how a tensor is quantized.

    WeightQuantizer(bits=8, per_channel=True)     # symmetric, narrow range, last-value range
    ActivationQuantizer(momentum=0.99)            # asymmetric int8, moving-average range
    ActivationQuantizer(learned=True)             # trainable range (LSQ+-style gradient)
    FixedQuantizer(0.0, 255 / 256)                # TFLite's fixed softmax / logistic output grid

A quantizer holds no math of its own: ranges become grids through `tfquant.core` (`fake_quant`,
`quant_params`), the one place where a scale or zero point is computed. An `ActivationQuantizer`
keeps its state — `min`, `max` and an `initialized` flag — as variables of the layer that owns it
(`build(layer, name)`), so Keras saves, restores and distributes them with the layer.
"""
from __future__ import annotations

import contextlib
import contextvars
import warnings
from typing import Any, Iterator, Optional

import keras
from keras.src.backend.common.symbolic_scope import in_symbolic_scope
import tensorflow as tf

from tfquant.core import QuantSpec, fake_quant, moving_average
from tfquant.errors import SpecError
from tfquant.keras.distribute import global_min_max

ACTIVATION_SPEC = QuantSpec.activation()
MAX_WEIGHT_BITS = 8
MIN_EXPORT_WEIGHT_BITS = 4

# ---- calibration context ---------------------------------------------------------------------
# While `tfquant.keras.calibrate` runs, every quantizer passes values through unchanged and hands
# them to the calibrator (an object with `observe(quantizer, values)`).
_CALIBRATION: contextvars.ContextVar[Optional[Any]] = contextvars.ContextVar("tfquant_calibration",
                                                                            default=None)


@contextlib.contextmanager
def calibration_scope(calibrator) -> Iterator[Any]:
    token = _CALIBRATION.set(calibrator)
    try:
        yield calibrator
    finally:
        _CALIBRATION.reset(token)


def calibrating() -> bool:
    return _CALIBRATION.get() is not None


# While `bypass(names)` is active, the quantizers (and weight grids) of those names pass values
# through in float: how the debugger quantizes one layer at a time. Names as in
# `tfquant.keras.plan_of`: "<layer>/output", "<layer>/mid", "<layer>/kernel".
_BYPASS: contextvars.ContextVar[frozenset] = contextvars.ContextVar("tfquant_bypass", default=frozenset())


@contextlib.contextmanager
def bypass(names) -> Iterator[None]:
    """Run the enclosed (eager) calls with the named quantizers in float."""
    token = _BYPASS.set(frozenset(names))
    try:
        yield
    finally:
        _BYPASS.reset(token)


def bypassed(name: Optional[str]) -> bool:
    return name is not None and name in _BYPASS.get()


def _tensor(v) -> tf.Tensor:
    """A Keras variable (or anything tensor-like) as a tf.Tensor that tfquant.core accepts."""
    return tf.convert_to_tensor(v)


# ---- weights ------------------------------------------------------------------------------------
@keras.saving.register_keras_serializable(package="tfquant")
class WeightQuantizer:
    """Symmetric (zero point 0), narrow-range weights; range = max |w| of the current weights.

    Args:
      bits: 2..8 (TFLite stores weights as int8, or int4 for 4 bits or fewer; the converter writes
        a wrong zero point under 4 bits, so `tfquant.to_tflite` refuses them — 4..8 for export).
      per_channel: one scale per output channel (conv axis 0, depthwise axis 3 in the
        flatbuffer). FULLY_CONNECTED weights are always per-tensor (the converter cannot carry a
        per-channel FakeQuant through the transpose it inserts), and so are Conv2DTranspose's.
    """

    def __init__(self, bits: int = 8, per_channel: bool = True):
        QuantSpec.weight(bits=bits)            # raises SpecError for 0, 17, "8", ...
        if bits > MAX_WEIGHT_BITS:
            raise SpecError(f"WeightQuantizer(bits={bits}): TFLite's int8 kernels take weights of at most "
                            f"{MAX_WEIGHT_BITS} bits. Use 4..8.")
        if bits < MIN_EXPORT_WEIGHT_BITS:
            warnings.warn(f"WeightQuantizer(bits={bits}) can be trained, but tfquant.to_tflite refuses weights "
                          f"under {MIN_EXPORT_WEIGHT_BITS} bits (the converter writes a wrong zero point).",
                          stacklevel=2)
        self.bits = int(bits)
        self.per_channel = bool(per_channel)

    def spec(self, per_channel: Optional[bool] = None) -> QuantSpec:
        pc = self.per_channel if per_channel is None else (per_channel and self.per_channel)
        return QuantSpec.weight(bits=self.bits, per_channel=pc)

    def get_config(self) -> dict[str, Any]:
        return {"bits": self.bits, "per_channel": self.per_channel}

    @classmethod
    def from_config(cls, config):
        return cls(**config)

    def __eq__(self, other):
        return isinstance(other, WeightQuantizer) and self.get_config() == other.get_config()

    def __repr__(self):
        return f"WeightQuantizer(bits={self.bits}, per_channel={self.per_channel})"


# ---- activations ----------------------------------------------------------------------------
@keras.saving.register_keras_serializable(package="tfquant")
class ActivationQuantizer:
    """Asymmetric per-tensor int8 activations.

    Training: the range is an exponential moving average of the global batch min / max (the first
    batch initializes it; under `tf.distribute` the batch is the global batch), then the tensor is
    fake-quantized with the updated range. Inference: the range is frozen.

    `learned=True`: `min` / `max` are trainable (initialized from the first batch or from
    `tfquant.keras.calibrate`) and receive, besides TF FakeQuant's clipping gradient, the
    LSQ/LSQ+ gradient of the rounding error inside the range (Esser et al. 2020; Bhalgat et al.
    2020), scaled by 1 / sqrt(numel * 255).
    """

    def __init__(self, momentum: float = 0.99, learned: bool = False, bits: int = 8):
        QuantSpec.activation(bits=bits)        # SpecError for 0, 17, ...
        if bits != 8:
            raise SpecError(f"ActivationQuantizer(bits={bits}): TFLite's int8 kernels run 8-bit activations "
                            "only (the converter would silently give a narrower FakeQuant an 8-bit scale).")
        if not 0.0 <= float(momentum) < 1.0:
            raise SpecError(f"ActivationQuantizer(momentum={momentum}) must be in [0, 1).")
        self.momentum = float(momentum)
        self.learned = bool(learned)
        self.bits = 8
        self.spec = ACTIVATION_SPEC
        self.min = self.max = self.initialized = None
        self.name = None

    # -- state --
    def build(self, layer: keras.layers.Layer, name: str) -> None:
        """Create this quantizer's variables on `layer` (which saves and restores them)."""
        self.name = f"{layer.name}/{name}"
        self.min = layer.add_weight(name=f"{name}_min", shape=(), initializer="zeros",
                                    trainable=self.learned, aggregation="only_first_replica")
        self.max = layer.add_weight(name=f"{name}_max", shape=(), initializer="zeros",
                                    trainable=self.learned, aggregation="only_first_replica")
        self.initialized = layer.add_weight(name=f"{name}_initialized", shape=(), initializer="zeros",
                                            trainable=False, aggregation="only_first_replica")

    @property
    def built(self) -> bool:
        return self.min is not None

    def variables(self) -> dict:
        """{"min": ..., "max": ..., "initialized": ...} (the layer lists them for tf.train.Checkpoint)."""
        return {"min": self.min, "max": self.max, "initialized": self.initialized} if self.built else {}

    def range(self) -> tuple[tf.Tensor, tf.Tensor]:
        """The current (raw, unsnapped) range as tensors."""
        return _tensor(self.min), _tensor(self.max)

    def set_range(self, rmin: float, rmax: float) -> None:
        """Set the range (e.g. from calibration) and mark it initialized."""
        self.min.assign(float(rmin))
        self.max.assign(float(rmax))
        self.initialized.assign(1.0)

    def is_initialized(self) -> bool:
        return bool(_tensor(self.initialized).numpy() > 0)

    # -- the op --
    def __call__(self, x: tf.Tensor, training: bool = False) -> tf.Tensor:
        if not self.built:
            raise RuntimeError("ActivationQuantizer used before build(layer, name).")
        calibrator = _CALIBRATION.get()
        if calibrator is not None:
            calibrator.observe(self, x)
            return x
        if bypassed(self.name):
            return x
        if training:
            lo, hi = self._update(x)
        else:
            self._warn_if_uninitialized()
            lo, hi = self.range()
        y = fake_quant(x, lo, hi, self.spec)
        if self.learned and training:
            y = _lsq_range_gradient(y, x, lo, hi, self.spec)
        return y

    def _warn_if_uninitialized(self) -> None:
        if getattr(self, "_warned", False) or in_symbolic_scope():   # Keras inferring shapes
            return
        with tf.init_scope():          # eager, even while a tf.function is being traced
            ready = self.is_initialized()
        if not ready:
            self._warned = True
            warnings.warn(f"Activation quantizer {self.name!r} has no range yet (it collapses its tensor to "
                          "~0): train the model (the first batch initializes it) or run "
                          "tfquant.keras.calibrate(qmodel, data) before evaluating or exporting it.", stacklevel=3)

    def _update(self, x: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        bmin, bmax = global_min_max(x)
        ready = _tensor(self.initialized) > 0
        if self.learned:
            self.min.assign(tf.where(ready, _tensor(self.min), bmin))
            self.max.assign(tf.where(ready, _tensor(self.max), bmax))
            self.initialized.assign(1.0)
            return _tensor(self.min), _tensor(self.max)
        new_min = tf.where(ready, moving_average(_tensor(self.min), bmin, self.momentum), bmin)
        new_max = tf.where(ready, moving_average(_tensor(self.max), bmax, self.momentum), bmax)
        self.min.assign(new_min)
        self.max.assign(new_max)
        self.initialized.assign(1.0)
        return tf.stop_gradient(new_min), tf.stop_gradient(new_max)

    def get_config(self) -> dict[str, Any]:
        return {"momentum": self.momentum, "learned": self.learned, "bits": self.bits}

    @classmethod
    def from_config(cls, config):
        return cls(**config)

    def __repr__(self):
        return f"ActivationQuantizer(momentum={self.momentum}, learned={self.learned})"


def _lsq_range_gradient(y, x, lo, hi, spec: QuantSpec):
    """Add the LSQ rounding-error gradient for a trainable [lo, hi] range; forward value unchanged.

    With s = (hi - lo) / levels and the rounding error e = fq(x) - x inside the range,
    d fq / d hi = e / (hi - lo) and d fq / d lo = -e / (hi - lo); the gradient is scaled by
    1 / sqrt(numel * qmax) as in LSQ.
    """
    x = tf.cast(x, y.dtype)
    inside = tf.logical_and(x >= lo, x <= hi)
    width = tf.maximum(hi - lo, 1e-8)
    err = tf.stop_gradient(tf.where(inside, (y - x) / width, tf.zeros_like(y)))
    numel = tf.cast(tf.size(x), tf.float32)
    g = 1.0 / tf.sqrt(numel * float(spec.levels))
    term = g * err * (hi - lo)
    return y + (term - tf.stop_gradient(term))


@keras.saving.register_keras_serializable(package="tfquant")
class FixedQuantizer:
    """A constant range TFLite imposes on an op's output (softmax / logistic (1/256, -128), tanh
    (1/128, 0)). No state; nothing to calibrate."""

    learned = False

    def __init__(self, min: float, max: float):
        self.lo = float(min)
        self.hi = float(max)
        self.spec = ACTIVATION_SPEC
        self.name = None

    def build(self, layer, name) -> None:
        self.name = f"{layer.name}/{name}"

    @property
    def built(self) -> bool:
        return True

    def range(self) -> tuple[float, float]:
        return self.lo, self.hi

    def is_initialized(self) -> bool:
        return True

    def __call__(self, x, training: bool = False):
        if calibrating() or bypassed(self.name):
            return x
        return fake_quant(x, self.lo, self.hi, self.spec)

    def get_config(self):
        return {"min": self.lo, "max": self.hi}

    @classmethod
    def from_config(cls, config):
        return cls(**config)

    def __repr__(self):
        return f"FixedQuantizer({self.lo}, {self.hi})"


def serialize(obj) -> Optional[dict]:
    return None if obj is None else keras.saving.serialize_keras_object(obj)


def deserialize(config):
    if config is None or isinstance(config, (WeightQuantizer, ActivationQuantizer, FixedQuantizer)):
        return config
    return keras.saving.deserialize_keras_object(config)


__all__ = ["WeightQuantizer", "ActivationQuantizer", "FixedQuantizer", "calibrating", "calibration_scope",
           "bypass", "bypassed"]
