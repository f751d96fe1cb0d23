"""Shared measurement code for the benchmarks: rows, metrics, latency, machine facts."""
from __future__ import annotations

import dataclasses
import os
import platform
import time
from typing import Callable, Optional

import numpy as np


class NotBuilt(Exception):
    """A route whose tfquant feature does not exist yet: its row says so."""


@dataclasses.dataclass
class Row:
    """One route's figures; None prints as '-'."""

    route: str
    agreement: Optional[float] = None        # top-1 agreement with the float model
    agreement_ci: Optional[tuple[float, float]] = None   # its 95% interval (see agreement_interval)
    accuracy: Optional[float] = None         # test accuracy in TFLite (labelled data)
    sqnr_db: Optional[float] = None          # logit SQNR vs float
    sqnr_ci: Optional[tuple[float, float]] = None        # its 95% interval (photos resampled)
    exact: Optional[float] = None            # simulation-vs-TFLite fidelity (reference kernels)
    within_one: Optional[float] = None
    latency_ms: Optional[float] = None       # one thread, default kernels, median
    size_kb: Optional[float] = None
    quant_seconds: Optional[float] = None    # wall time of the quantization itself
    total_seconds: Optional[float] = None    # end to end: model import to verified flatbuffer
    step_time_ratio: Optional[float] = None  # QAT training step time / float step time
    note: str = ""


def announce(row: Row) -> Row:
    """Print a finished row at once (a full run takes most of an hour)."""
    figures = {k: v for k, v in dataclasses.asdict(row).items() if v not in (None, "") and k != "route"}
    def fmt(v) -> str:
        if isinstance(v, tuple):
            return "(" + ", ".join(fmt(x) for x in v) + ")"
        return f"{v:.4g}" if isinstance(v, float) else str(v)

    print(f"[benchmarks] {row.route}: " + ", ".join(f"{k}={fmt(v)}" for k, v in figures.items()), flush=True)
    return row


def top1_hits(reference: np.ndarray, test: np.ndarray) -> np.ndarray:
    """Per sample: whether `test`'s top-1 class is `reference`'s (ties: the first index)."""
    return np.argmax(reference, -1) == np.argmax(test, -1)


def top1_agreement(reference: np.ndarray, test: np.ndarray) -> float:
    return float(np.mean(top1_hits(reference, test)))


def agreement_interval(reference: np.ndarray, test: np.ndarray, groups, level: float = 0.95,
                       resamples: int = 4000, seed: int = 0) -> tuple[float, float]:
    """Percentile-bootstrap interval of `top1_agreement`, resampling whole groups (e.g. the photo
    each crop was cut from: crops of one photo are not independent, so resampling crops would
    give too narrow an interval).

        >>> lo, hi = agreement_interval(float_logits, int8_logits, evaluation_sources(64, 320))
    """
    groups = np.asarray(groups)
    if groups.shape != (len(reference),) or len(reference) != len(test):
        raise ValueError(f"need one group per sample: {len(reference)} reference, {len(test)} test "
                         f"samples, groups of shape {groups.shape}")
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must be in (0, 1), got {level}")
    hits = top1_hits(reference, test)
    names, index = np.unique(groups, return_inverse=True)
    agree = np.bincount(index, weights=hits, minlength=len(names))
    count = np.bincount(index, minlength=len(names))
    draws = np.random.default_rng(seed).integers(0, len(names), size=(resamples, len(names)))
    rates = agree[draws].sum(1) / count[draws].sum(1)
    tail = 100.0 * (1.0 - level) / 2.0
    lo, hi = np.percentile(rates, [tail, 100.0 - tail])
    return float(lo), float(hi)


def sqnr_db(reference: np.ndarray, test: np.ndarray) -> float:
    from tfquant.export import sqnr_db as _sqnr

    return _sqnr(reference, test)


def latencies_ms(models: dict[str, bytes], rounds: int = 10, runs: int = 10,
                 warmup: int = 10) -> dict[str, float]:
    """`tfquant.export.latencies_ms` with the benchmarks' longer default rounds."""
    from tfquant.export.interpreter import latencies_ms as measure

    return measure(models, rounds=rounds, runs=runs, warmup=warmup)


def fill_latencies(rows: list[Row], models: dict[str, bytes]) -> None:
    """Sets each row's `latency_ms` from `latencies_ms(models)` (rows keyed by route)."""
    measured = latencies_ms(models)
    for row in rows:
        if row.route in measured:
            row.latency_ms = measured[row.route]


def timed(fn: Callable, *args, **kwargs):
    start = time.perf_counter()
    out = fn(*args, **kwargs)
    return out, time.perf_counter() - start


def machine() -> str:
    import tensorflow as tf

    cpu = platform.processor() or "unknown CPU"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    try:
        from importlib.metadata import version

        litert = version("ai-edge-litert")
    except Exception:  # noqa: BLE001
        litert = "?"
    return (f"{cpu}; {os.cpu_count()} cores; Python {platform.python_version()}; "
            f"TensorFlow {tf.__version__}; ai-edge-litert {litert}; {platform.system()} {platform.release()}")


def _fmt(v, kind: str) -> str:
    if v is None:
        return "-"
    if kind == "pct":
        return f"{100 * v:.1f}%"
    if kind == "ci":
        return f"{100 * v[0]:.1f}-{100 * v[1]:.1f}%"
    if kind == "pct2":
        return f"{100 * v:.2f}%"
    if kind == "db":
        return f"{v:.1f}"
    if kind == "dbci":
        return f"{v[0]:.1f}-{v[1]:.1f}"
    if kind == "x":
        return f"{v:.2f}x"
    if kind == "ms":
        return f"{v:.3f}" if v < 1 else f"{v:.2f}"
    return f"{v:.1f}" if isinstance(v, float) else str(v)


COLUMNS = {
    "route": ("route", "s"),
    "agreement": ("top-1 agreement", "pct"),
    "agreement_ci": ("95% interval", "ci"),
    "accuracy": ("TFLite accuracy", "pct2"),
    "sqnr_db": ("logit SQNR dB", "db"),
    "sqnr_ci": ("SQNR 95% interval", "dbci"),
    "exact": ("sim=TFLite exact", "pct2"),
    "within_one": ("within 1 LSB", "pct2"),
    "latency_ms": ("latency ms", "ms"),
    "size_kb": ("size KB", "f"),
    "quant_seconds": ("quantize s", "f"),
    "total_seconds": ("end to end s", "f"),
    "step_time_ratio": ("QAT step / float", "x"),
    "note": ("note", "s"),
}


def markdown_table(rows: list[Row], columns: list[str], ratios: dict[str, Optional[float]] | None = None) -> str:
    """Rows as a markdown table; `ratios` adds latency ratios to named baselines."""
    header = [COLUMNS[c][0] for c in columns]
    baselines = {k: v for k, v in (ratios or {}).items() if v}
    header += [f"latency vs {k}" for k in baselines]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for r in rows:
        cells = [_fmt(getattr(r, c), COLUMNS[c][1]) for c in columns]
        cells += [_fmt(r.latency_ms / b if r.latency_ms else None, "x") for b in baselines.values()]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)
