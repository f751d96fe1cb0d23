"""tfquant's own routes, measured by the suites. A route whose feature is missing raises NotBuilt."""
from __future__ import annotations

import dataclasses
from typing import Optional

import tfquant
from benchmarks.harness import NotBuilt


@dataclasses.dataclass
class RouteResult:
    tflite: bytes
    seconds: float
    exact: Optional[float] = None
    within_one: Optional[float] = None
    step_time_ratio: Optional[float] = None
    report: str = ""                    # the tool's own account of what it did


def tfquant_ptq(source, calibration, evaluation, quick: bool, fidelity_n: int = 16,
                **options) -> RouteResult:
    """`tfquant.ptq` on `source` (a SavedModel directory) with `options`; a data-free route
    (`data_free=True`) gets no calibration data at all. Fidelity: the exact simulation vs the
    flatbuffer under the reference kernels on `fidelity_n` evaluation samples."""
    from benchmarks.harness import timed

    if not hasattr(tfquant, "ptq"):
        raise NotBuilt("tfquant.ptq: issue 5")
    if quick:
        options.setdefault("adaround_iterations", 20)
    data = None if options.get("data_free") else calibration

    def quantize():
        sim = tfquant.ptq(source, data, progress=False, **options)
        return sim, sim.to_tflite()

    (sim, tflite), seconds = timed(quantize)
    result = sim.verify(evaluation[:fidelity_n], kernels=("reference",), intermediate_samples=0)
    return RouteResult(tflite=tflite, seconds=seconds, exact=result.exact_fraction,
                       within_one=result.within_one_fraction, report=sim.report.summary())


def _median_step_seconds(model, x, y, batch_size: int, steps: int, warmup: int, lr: float) -> float:
    """Median wall time of one `model.fit` training step, after `warmup` steps."""
    import statistics
    import time

    import keras
    import numpy as np

    class Timer(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.times, self.start = [], 0.0

        def on_train_batch_begin(self, batch, logs=None):
            self.start = time.perf_counter()

        def on_train_batch_end(self, batch, logs=None):
            self.times.append(time.perf_counter() - self.start)

    n = (steps + warmup) * batch_size
    reps = int(np.ceil(n / len(x)))
    xs, ys = np.concatenate([x] * reps)[:n], np.concatenate([y] * reps)[:n]
    _compile(model, lr)
    timer = Timer()
    model.fit(xs, ys, batch_size=batch_size, epochs=1, shuffle=False, verbose=0, callbacks=[timer])
    return statistics.median(timer.times[warmup:])


def _compile(model, lr: float):
    import keras

    model.compile(optimizer=keras.optimizers.Adam(lr),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"])


def tfquant_qat(model, x_train, y_train, x_test, weight_bits: int, epochs: int, quick: bool,
                lr: float = 1e-4, fidelity_n: int = 1000, from_ptq=None) -> RouteResult:
    """The same protocol as the TFMOT peer (benchmarks/peers/_tfmot_worker.py): from the float
    weights, QAT with model.fit for `epochs` (Adam at `lr`, no augmentation), converter export,
    fidelity of the Keras model vs its own flatbuffer on `fidelity_n` test images (reference
    kernels), and the median training step time against a float copy of the network.
    `from_ptq`: a tfquant.ptq result of `model` to start from (`tfquant.keras.init_from_ptq`)."""
    import keras

    from benchmarks.harness import timed
    from benchmarks.models.fmnist_net import BATCH_SIZE

    if not hasattr(tfquant, "quantize_model"):
        raise NotBuilt("tfquant.quantize_model: issue 4")
    n_train = 512 if quick else len(x_train)
    steps, warmup = (20, 5) if quick else (300, 20)
    x_fit, y_fit = x_train[:n_train], y_train[:n_train]

    def quantize_and_train():
        keras.utils.set_random_seed(0)
        qmodel = tfquant.quantize_model(model, tfquant.QATConfig(weight_bits=weight_bits))
        if from_ptq is not None:      # PTQ's transformed weights and ranges, the rest calibrated
            tfquant.keras.init_from_ptq(qmodel, from_ptq, calibration=x_train[:512], batch_size=BATCH_SIZE)
        else:
            tfquant.calibrate(qmodel, x_train[:512], batch_size=BATCH_SIZE)
        _compile(qmodel, lr)
        qmodel.fit(x_fit, y_fit, batch_size=BATCH_SIZE, epochs=epochs, shuffle=True, verbose=0)
        return qmodel, tfquant.to_tflite(qmodel)

    (qmodel, tflite), seconds = timed(quantize_and_train)
    result = tfquant.verify(tflite, qmodel, x_test[:fidelity_n], kernels=("reference",),
                            intermediate_samples=0)
    float_copy = keras.models.clone_model(model)
    float_copy.set_weights(model.get_weights())
    timing_copy = tfquant.quantize_model(model, tfquant.QATConfig(weight_bits=weight_bits))
    qat_step = _median_step_seconds(timing_copy, x_fit, y_fit, BATCH_SIZE, steps, warmup, lr)
    float_step = _median_step_seconds(float_copy, x_fit, y_fit, BATCH_SIZE, steps, warmup, lr)
    return RouteResult(tflite=tflite, seconds=seconds, exact=result.exact_fraction,
                       within_one=result.within_one_fraction, step_time_ratio=qat_step / float_step)
