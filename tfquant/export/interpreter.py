"""Running a flatbuffer in the LiteRT interpreter on batches of float inputs.

    >>> runner = TFLiteRunner(tflite_bytes, kernels="reference")
    >>> outs = runner.run(x)                  # list of float outputs (dequantized)
    >>> q = runner.run_int(x)                 # list of integer outputs as the kernels wrote them
    >>> latencies_ms({"int8": a, "float": b})  # median batch-1 ms of each, timed side by side

`kernels`: "reference" (TFLite's reference kernels: the arithmetic the int8 spec defines),
"optimized" (optimized builtin kernels without XNNPACK) or "default" (with XNNPACK, what a
user gets by default; fastest).
"""
from __future__ import annotations

import statistics
import time


import numpy as np
from ai_edge_litert.interpreter import Interpreter, OpResolverType

from tfquant.core.integer_kernels import reference_softmax_aborts
from tfquant.core.quant_params import dequantize, quantize
from tfquant.core.spec import QuantSpec
from tfquant.errors import DataError, KernelAbortError, ModelFileError, cause_text
from tfquant.export.inspector import inspect, load_model_bytes

KERNELS = {
    "reference": OpResolverType.BUILTIN_REF,
    "optimized": OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES,
    "default": OpResolverType.AUTO,
}

_INT_SPECS = {
    np.dtype(np.int8): QuantSpec(bits=8, signed=True),
    np.dtype(np.uint8): QuantSpec(bits=8, signed=False),
    np.dtype(np.int16): QuantSpec(bits=16, signed=True),
}


def spec_of_dtype(dtype) -> QuantSpec:
    """The integer grid of an interpreter tensor dtype (int8, uint8, int16)."""
    return _INT_SPECS[np.dtype(dtype)]


class TFLiteRunner:
    """A flatbuffer in the interpreter, fed float batches, returning float or integer outputs."""

    def __init__(self, model, kernels: str = "reference", num_threads: int = 1,
                 preserve_all_tensors: bool = False):
        if kernels not in KERNELS:
            raise ValueError(f"kernels must be one of {sorted(KERNELS)}, got {kernels!r}.")
        self.model_bytes = load_model_bytes(model)
        self.report = inspect(self.model_bytes)
        self.kernels = kernels
        self.preserve_all_tensors = preserve_all_tensors
        try:
            self.interpreter = Interpreter(
                model_content=self.model_bytes, num_threads=num_threads,
                experimental_op_resolver_type=KERNELS[kernels],
                experimental_preserve_all_tensors=preserve_all_tensors)
            self.interpreter.allocate_tensors()
        except (ValueError, RuntimeError) as e:       # LiteRT's own errors on a model it cannot load
            raise ModelFileError(f"The TFLite interpreter cannot load this model ({cause_text(e, 160)}): "
                                 "it is corrupt, or uses ops this LiteRT does not have.") from None
        self.input_details = self.interpreter.get_input_details()
        self.output_details = self.interpreter.get_output_details()
        self._batch = None
        self._softmax_guard = self._guarded_softmaxes() if kernels == "reference" else []
        self._guard_runner: "TFLiteRunner | None" = None

    def _guarded_softmaxes(self) -> list:
        """The int8 SOFTMAX ops wide enough (>= 512 classes) for the reference kernel to abort on."""
        guarded = []
        for op in self.report.ops_of_type("SOFTMAX"):
            t = self.report.tensors[op.inputs[0]]
            if t.dtype == "INT8" and t.scales and (not t.shape or t.shape[-1] < 0 or t.shape[-1] >= 512):
                guarded.append(op)
        return guarded

    def _check_reference_softmax(self, arrays: list[np.ndarray]) -> None:
        """Run the batch under the optimized kernels first and refuse it if the reference SOFTMAX
        would abort on what reaches it (the same int8 inputs: the ops before it are exact in both)."""
        if self._guard_runner is None:
            self._guard_runner = TFLiteRunner(self.model_bytes, kernels="optimized", preserve_all_tensors=True)
        self._guard_runner.invoke(arrays)
        for op in self._softmax_guard:
            t = self.report.tensors[op.inputs[0]]
            rows = self._guard_runner.get_tensor(op.inputs[0])
            aborts = reference_softmax_aborts(rows, t.scales[0], op.options.get("beta", 1.0))
            if np.any(aborts):
                raise KernelAbortError(
                    f"TFLite's reference int8 SOFTMAX (op {op.index}, {t.shape[-1] if t.shape else '?'} classes) would "
                    f"abort the process on {int(np.sum(aborts))} of these {aborts.size} samples: their logits are so "
                    "nearly equal that the kernel's sum of exps reaches 512, past a LiteRT assertion. The default "
                    "and optimized kernels run them; verify with kernels=('default',), or on inputs the model "
                    "separates (an untrained or collapsed model gives such logits).")

    # ---- feeding ---------------------------------------------------------------------
    def _prepare(self, inputs) -> list[np.ndarray]:
        arrays = [inputs] if isinstance(inputs, np.ndarray) else list(inputs)
        if len(arrays) != len(self.input_details):
            raise DataError(f"The model has {len(self.input_details)} inputs, got {len(arrays)} arrays.")
        out = []
        for a, d in zip(arrays, self.input_details):
            a = np.asarray(a)
            want = list(d["shape_signature"])[1:]
            got = list(a.shape[1:])
            if len(want) != len(got) or any(w not in (-1, g) for w, g in zip(want, got)):
                raise DataError(f"Input {d['name']!r} expects samples of shape {want}, got {got}.")
            out.append(a)
        return out

    def _set_batch(self, n: int) -> None:
        if self._batch == n:
            return
        for d, in_shape in zip(self.input_details, [d["shape"] for d in self.input_details]):
            shape = list(in_shape)
            shape[0] = n
            self.interpreter.resize_tensor_input(d["index"], shape)
        self.interpreter.allocate_tensors()
        self._batch = n
        self.input_details = self.interpreter.get_input_details()
        self.output_details = self.interpreter.get_output_details()

    def _feed(self, arrays: list[np.ndarray]) -> None:
        for a, d in zip(arrays, self.input_details):
            dtype = np.dtype(d["dtype"])
            if dtype in _INT_SPECS:
                scale, zp = d["quantization"]
                a = quantize(a, scale, zp, spec_of_dtype(dtype))
            self.interpreter.set_tensor(d["index"], a.astype(dtype))

    def invoke(self, arrays: list[np.ndarray]) -> None:
        """Run one batch (resizing the interpreter to it)."""
        if self._softmax_guard:
            self._check_reference_softmax(arrays)
        self._set_batch(arrays[0].shape[0])
        self._feed(arrays)
        self.interpreter.invoke()

    # ---- reading ---------------------------------------------------------------------
    def integer_output_indices(self) -> list[int]:
        """For each output, the integer tensor holding it (the input of a final DEQUANTIZE)."""
        indices = []
        for d in self.output_details:
            idx = d["index"]
            if np.dtype(d["dtype"]) not in _INT_SPECS:
                producer = self.report.producer(idx)
                if producer is None or producer.op != "DEQUANTIZE":
                    raise DataError(f"Output {d['name']!r} is float and not produced by a DEQUANTIZE: "
                                    "the model's last op runs in float.")
                idx = producer.inputs[0]
            indices.append(idx)
        return indices

    def tensor_params(self, index: int) -> tuple[np.ndarray, np.ndarray, QuantSpec]:
        t = self.report.tensors[index]
        dtype = np.dtype({"INT8": np.int8, "UINT8": np.uint8, "INT16": np.int16}.get(t.dtype, np.float32))
        if dtype not in _INT_SPECS:
            raise DataError(f"Tensor {t.name!r} is {t.dtype}, not an integer tensor.")
        return np.asarray(t.scales), np.asarray(t.zero_points), spec_of_dtype(dtype)

    def run(self, inputs, batch_size: int = 64, integer: bool = False) -> list[np.ndarray]:
        """All outputs for all samples; float (dequantized) or, with `integer`, the integers."""
        arrays = self._prepare(inputs)
        n = arrays[0].shape[0]
        int_indices = self.integer_output_indices() if integer else None
        if integer and not self.preserve_all_tensors and \
                any(np.dtype(d["dtype"]) not in _INT_SPECS for d in self.output_details):
            raise DataError("The model's outputs are float: create the runner with "
                            "preserve_all_tensors=True to read the integers before DEQUANTIZE.")
        chunks: list[list[np.ndarray]] = []
        for start in range(0, n, batch_size):
            self.invoke([a[start:start + batch_size] for a in arrays])
            if integer:
                chunks.append([self.interpreter.get_tensor(i).copy() for i in int_indices])
            else:
                chunks.append([self._float_output(d) for d in self.output_details])
        return [np.concatenate([c[k] for c in chunks]) for k in range(len(chunks[0]))]

    def run_int(self, inputs, batch_size: int = 64) -> list[np.ndarray]:
        return self.run(inputs, batch_size=batch_size, integer=True)

    def _float_output(self, d) -> np.ndarray:
        y = self.interpreter.get_tensor(d["index"])
        dtype = np.dtype(d["dtype"])
        if dtype in _INT_SPECS:
            scale, zp = d["quantization"]
            return dequantize(y, scale, zp).astype(np.float32)
        return y.copy()

    def get_tensor(self, index: int) -> np.ndarray:
        return self.interpreter.get_tensor(index)


def _ready_interpreter(tflite: bytes):
    """A one-thread interpreter (default XNNPACK kernels) at batch 1, its inputs filled."""
    interp = Interpreter(model_content=tflite, num_threads=1)
    interp.allocate_tensors()
    for d in interp.get_input_details():
        shape = [1 if s == -1 else s for s in d["shape"]]
        shape[0] = 1
        if list(d["shape"]) != shape:
            interp.resize_tensor_input(d["index"], shape)
    interp.allocate_tensors()
    rng = np.random.default_rng(0)
    for d in interp.get_input_details():
        data = rng.uniform(-1, 1, d["shape"])
        if np.dtype(d["dtype"]) == np.int8:
            data = rng.integers(-128, 128, d["shape"])
        interp.set_tensor(d["index"], data.astype(d["dtype"]))
    return interp


def latencies_ms(models: dict[str, bytes], rounds: int = 5, runs: int = 5,
                 warmup: int = 5) -> dict[str, float]:
    """Median wall time of one batch-1 inference of each model (one thread, default kernels),
    measured side by side.

    Every round times `runs` invocations of each model in turn, so a slow spell of a shared
    machine falls on all of them alike; the figure is the median over all `rounds * runs`.

        >>> ms = latencies_ms({"float": float_tflite, "int8": int8_tflite})   # {name: ms}
    """
    interps = {name: _ready_interpreter(tfl) for name, tfl in models.items()}
    for interp in interps.values():
        for _ in range(warmup):
            interp.invoke()
    times: dict[str, list[float]] = {name: [] for name in models}
    for _ in range(rounds):
        for name, interp in interps.items():
            for _ in range(runs):
                start = time.perf_counter()
                interp.invoke()
                times[name].append(time.perf_counter() - start)
    return {name: 1000.0 * statistics.median(t) for name, t in times.items()}
