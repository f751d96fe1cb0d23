"""`inspect`: what a TFLite flatbuffer really holds.

    >>> report = inspect("model.tflite")
    >>> print(report.table())                 # every op and tensor, with scales
    >>> report.float_ops                       # ops still computing in float
    >>> report.to_json()

Read with the flatbuffer schema that ships in `ai_edge_litert`, not with the interpreter, so
constant tensors (weights, biases) are seen as stored.
"""
from __future__ import annotations

import dataclasses
import json
import os
from typing import Optional, Union

import numpy as np
from ai_edge_litert import schema_py_generated as schema
from ai_edge_litert.tools import flatbuffer_utils

from tfquant.errors import ModelFileError, cause_text

_OP_NAMES = {v: k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_")}
_TYPE_NAMES = {v: k for k, v in vars(schema.TensorType).items() if not k.startswith("_")}
_NUMPY_TYPES = {
    "FLOAT32": np.float32, "FLOAT16": np.float16, "INT32": np.int32, "UINT8": np.uint8,
    "INT64": np.int64, "INT16": np.int16, "INT8": np.int8, "FLOAT64": np.float64,
    "BOOL": np.bool_, "UINT16": np.uint16, "UINT32": np.uint32, "INT4": np.int8,
}
FLOAT_TYPES = frozenset({"FLOAT32", "FLOAT16", "FLOAT64", "BFLOAT16"})
BOUNDARY_OPS = frozenset({"QUANTIZE", "DEQUANTIZE"})


@dataclasses.dataclass
class TensorInfo:
    index: int
    name: str
    dtype: str                      # TFLite type name: INT8, INT32, FLOAT32, ...
    shape: list[int]
    is_constant: bool
    num_bytes: int                  # bytes of constant data (0 for activations)
    scales: list[float]
    zero_points: list[int]
    quantized_dimension: int
    data: Optional[np.ndarray] = dataclasses.field(default=None, repr=False, compare=False)

    @property
    def per_channel(self) -> bool:
        return len(self.scales) > 1

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d.pop("data")
        d["per_channel"] = self.per_channel
        return d


@dataclasses.dataclass
class OpInfo:
    index: int
    op: str
    inputs: list[int]
    outputs: list[int]
    is_float: bool
    options: dict = dataclasses.field(default_factory=dict)   # scalar builtin options, e.g. {"beta": 1.0}

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


@dataclasses.dataclass
class ModelReport:
    """Ops and tensors of the first subgraph of a flatbuffer, and what they add up to."""

    ops: list[OpInfo]
    tensors: list[TensorInfo]
    inputs: list[int]
    outputs: list[int]
    size_bytes: int

    @property
    def float_ops(self) -> list[OpInfo]:
        """Ops computing in float (QUANTIZE/DEQUANTIZE at the edges are not counted)."""
        return [op for op in self.ops if op.is_float]

    @property
    def activation_tensors(self) -> list[TensorInfo]:
        """Activation (non-constant) tensors, the model's float inputs and outputs and the
        tensors between them and their QUANTIZE / DEQUANTIZE left out: the ones a fully
        quantized model holds in int8."""
        edges = set(self.inputs) | set(self.outputs)
        return [t for t in self.tensors if not t.is_constant and t.index not in edges
                and not self._edge_of_io(t.index)]

    @property
    def non_int8_tensors(self) -> list[TensorInfo]:
        """Activation tensors that are not int8, the model's float inputs and outputs left out:
        what mixed precision kept in float (or in int16)."""
        return [t for t in self.activation_tensors if t.dtype not in ("INT8", "INT32")]

    @property
    def int16_tensors(self) -> list[TensorInfo]:
        """Activation tensors held in int16 (TFLite int16x8: 16-bit activations, int8 weights)."""
        return [t for t in self.tensors if not t.is_constant and t.dtype == "INT16"]

    def _edge_of_io(self, index: int) -> bool:
        """A float tensor between a model input / output and its QUANTIZE / DEQUANTIZE."""
        producer = self.producer(index)
        return producer is not None and producer.op == "DEQUANTIZE" and any(o in self.outputs for o in producer.outputs)

    @property
    def weight_bytes(self) -> dict[str, int]:
        """Bytes of constant data per TFLite type."""
        out: dict[str, int] = {}
        for t in self.tensors:
            if t.is_constant:
                out[t.dtype] = out.get(t.dtype, 0) + t.num_bytes
        return out

    def op_counts(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for op in self.ops:
            counts[op.op] = counts.get(op.op, 0) + 1
        return counts

    def ops_of_type(self, name: str) -> list[OpInfo]:
        return [op for op in self.ops if op.op == name]

    def producer(self, tensor_index: int) -> Optional[OpInfo]:
        for op in self.ops:
            if tensor_index in op.outputs:
                return op
        return None

    def tensor(self, name_or_index: Union[str, int]) -> TensorInfo:
        if isinstance(name_or_index, int):
            return self.tensors[name_or_index]
        for t in self.tensors:
            if t.name == name_or_index:
                return t
        raise KeyError(f"No tensor named {name_or_index!r}.")

    def to_dict(self) -> dict:
        return {
            "size_bytes": self.size_bytes,
            "inputs": self.inputs,
            "outputs": self.outputs,
            "op_counts": self.op_counts(),
            "float_ops": [op.index for op in self.float_ops],
            "non_int8_tensors": [t.index for t in self.non_int8_tensors],
            "int16_tensors": [t.index for t in self.int16_tensors],
            "weight_bytes": self.weight_bytes,
            "ops": [op.to_dict() for op in self.ops],
            "tensors": [t.to_dict() for t in self.tensors],
        }

    def to_json(self, indent: int = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent)

    def table(self) -> str:
        """Human-readable summary: one line per op with its tensors' types and scales."""
        lines = [f"size {self.size_bytes} bytes; weights " +
                 ", ".join(f"{k} {v}" for k, v in sorted(self.weight_bytes.items())),
                 f"float ops: {len(self.float_ops)}" +
                 (" (" + ", ".join(f"#{o.index} {o.op}" for o in self.float_ops) + ")" if self.float_ops else ""),
                 f"non-int8 activation tensors: {len(self.non_int8_tensors)}" +
                 (" (" + ", ".join(f"{_short(t.name, 40)} {t.dtype}" for t in self.non_int8_tensors) + ")"
                  if self.non_int8_tensors else "")]
        if self.int16_tensors:
            lines.append(f"int16 activation tensors: {len(self.int16_tensors)} (" +
                         ", ".join(_short(t.name, 40) for t in self.int16_tensors) + ")")
        lines.append(f"{'#':>3} {'op':<22} {'tensor':<44} {'type':<7} {'shape':<18} quantization")
        for op in self.ops:
            first = True
            for role, idxs in (("in", op.inputs), ("out", op.outputs)):
                for i in idxs:
                    if i < 0:
                        continue
                    t = self.tensors[i]
                    head = f"{op.index:>3} {op.op + (' *float*' if op.is_float else ''):<22}" if first else " " * 26
                    first = False
                    lines.append(f"{head} {role:<3} {_short(t.name, 40):<40} {t.dtype:<7} "
                                 f"{str(t.shape):<18} {_quant_text(t)}")
        return "\n".join(lines)


def _short(name: str, width: int) -> str:
    return name if len(name) <= width else "..." + name[-(width - 3):]


def _quant_text(t: TensorInfo) -> str:
    if not t.scales:
        return "-"
    if len(t.scales) == 1:
        return f"scale {t.scales[0]:.6g} zp {t.zero_points[0]}"
    return (f"per-channel axis {t.quantized_dimension}: {len(t.scales)} scales "
            f"[{min(t.scales):.3g}..{max(t.scales):.3g}], zp {sorted(set(t.zero_points))[:3]}")


def _unpack_int4(raw: np.ndarray, shape: list[int]) -> np.ndarray:
    """TFLite packs int4 two per byte, low nibble first."""
    nibbles = np.stack([raw & 0x0F, raw >> 4], axis=-1).reshape(-1).astype(np.int8)
    nibbles = np.where(nibbles > 7, nibbles - 16, nibbles).astype(np.int8)
    return nibbles[: int(np.prod(shape))].reshape(shape)


def _load_bytes(model: Union[str, os.PathLike, bytes, bytearray]) -> bytes:
    if isinstance(model, (bytes, bytearray, memoryview)):
        data = bytes(model)
        where = "the given bytes"
    else:
        path = os.fspath(model)
        if not os.path.exists(path):
            raise ModelFileError(f"TFLite model {path!r} does not exist.")
        if os.path.isdir(path):
            raise ModelFileError(f"{path!r} is a directory, not a .tflite file.")
        with open(path, "rb") as f:
            data = f.read()
        where = repr(path)
    if len(data) < 8 or data[4:8] != b"TFL3":
        raise ModelFileError(
            f"{where} is not a TFLite flatbuffer (no 'TFL3' identifier; {len(data)} bytes): "
            "the file is corrupt or of another format. Re-export it with tfquant.to_tflite.")
    return data


def load_model_bytes(model: Union[str, os.PathLike, bytes, bytearray]) -> bytes:
    """The bytes of a flatbuffer given as a path or bytes, checked to be a TFLite model."""
    return _load_bytes(model)


def inspect(model: Union[str, os.PathLike, bytes, bytearray]) -> ModelReport:
    """Parse a flatbuffer (path or bytes) into a `ModelReport`. Raises `ModelFileError`."""
    data = _load_bytes(model)
    try:
        m = flatbuffer_utils.read_model_from_bytearray(bytearray(data))
        subgraph = m.subgraphs[0]
        report = _report(m, subgraph, len(data))
    except ModelFileError:
        raise
    except Exception as e:  # noqa: BLE001 - flatbuffers raises assorted errors on bad data
        raise ModelFileError(f"The TFLite flatbuffer could not be parsed ({type(e).__name__}: {cause_text(e, 120)}): "
                             "it is corrupt (truncated or damaged). Re-export it with tfquant.to_tflite.") from None
    return report


def _options(op) -> dict:
    """The op's builtin options that are plain numbers or flags (fused activation, beta, strides...)."""
    opts = getattr(op, "builtinOptions", None)
    if opts is None:
        return {}
    return {k: v for k, v in vars(opts).items() if isinstance(v, (bool, int, float))}


def _report(m, subgraph, size: int) -> ModelReport:

    tensors = []
    for i, t in enumerate(subgraph.tensors):
        dtype = _TYPE_NAMES.get(t.type, str(t.type))
        buf = m.buffers[t.buffer] if t.buffer is not None and t.buffer < len(m.buffers) else None
        raw = None if buf is None or buf.data is None else np.asarray(buf.data, np.uint8)
        is_const = raw is not None and raw.size > 0
        data_arr = None
        if is_const and dtype == "INT4":
            data_arr = _unpack_int4(raw, [int(s) for s in t.shape])
        elif is_const and dtype in _NUMPY_TYPES:
            data_arr = raw.view(_NUMPY_TYPES[dtype]).reshape(list(t.shape) if t.shape is not None else [-1])
        q = t.quantization
        scales = [] if q is None or q.scale is None else [float(s) for s in q.scale]
        zps = [] if q is None or q.zeroPoint is None else [int(z) for z in q.zeroPoint]
        if scales and len(zps) != len(scales):    # one zero point per scale in a sound file
            raise ModelFileError(f"Tensor {i} of the TFLite flatbuffer has {len(scales)} scale(s) but "
                                 f"{len(zps)} zero point(s): the file is damaged.")
        tensors.append(TensorInfo(
            index=i, name=(t.name.decode() if isinstance(t.name, bytes) else str(t.name)),
            dtype=dtype, shape=[int(s) for s in (t.shape if t.shape is not None else [])],
            is_constant=is_const, num_bytes=int(raw.size) if is_const else 0,
            scales=scales, zero_points=zps,
            quantized_dimension=int(q.quantizedDimension) if q is not None else 0,
            data=data_arr))

    ops = []
    for i, op in enumerate(subgraph.operators):
        code = flatbuffer_utils.get_builtin_code_from_operator_code(m.operatorCodes[op.opcodeIndex])
        name = _OP_NAMES.get(code, f"OP_{code}")
        if name == "CUSTOM":
            custom = m.operatorCodes[op.opcodeIndex].customCode
            name = "CUSTOM:" + (custom.decode() if isinstance(custom, bytes) else str(custom))
        ins = [int(x) for x in (op.inputs if op.inputs is not None else [])]
        outs = [int(x) for x in (op.outputs if op.outputs is not None else [])]
        if any(x >= len(tensors) or x < -1 for x in ins + outs):
            raise ModelFileError(f"Op {i} ({name}) refers to a tensor that does not exist: the flatbuffer "
                                 "is corrupt. Re-export it with tfquant.to_tflite.")
        touches_float = any(tensors[x].dtype in FLOAT_TYPES for x in ins + outs if x >= 0)
        ops.append(OpInfo(index=i, op=name, inputs=ins, outputs=outs,
                          is_float=touches_float and name not in BOUNDARY_OPS, options=_options(op)))
    io = [int(x) for x in subgraph.inputs], [int(x) for x in subgraph.outputs]
    if any(not 0 <= x < len(tensors) for x in io[0] + io[1]):
        raise ModelFileError("The model's inputs or outputs refer to tensors that do not exist: the flatbuffer is corrupt.")
    return ModelReport(ops=ops, tensors=tensors, inputs=io[0], outputs=io[1], size_bytes=size)
