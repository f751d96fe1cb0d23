"""harness.latencies_ms / fill_latencies: side-by-side batch-1 timing of flatbuffers."""
import math

import numpy as np

from benchmarks.harness import Row, fill_latencies, latencies_ms
from tests.helpers import one_conv, one_fake_quant_activation
from tfquant.core import QuantSpec


def _models():
    kernel = np.random.default_rng(0).normal(size=(1, 1, 3, 4)).astype(np.float32)
    return {"activation": one_fake_quant_activation(-1.0, 1.0, QuantSpec.activation()),
            "conv": one_conv(kernel, -3.0 * np.ones(4), 3.0 * np.ones(4), QuantSpec.weight())}


def test_latencies_for_every_model():
    ms = latencies_ms(_models(), rounds=2, runs=3, warmup=1)
    assert set(ms) == {"activation", "conv"}
    assert all(math.isfinite(v) and 0.0 < v < 1000.0 for v in ms.values())


def test_fill_latencies_sets_rows_by_route():
    rows = [Row("conv"), Row("activation"), Row("not timed")]
    fill_latencies(rows, _models())
    assert rows[0].latency_ms > 0.0 and rows[1].latency_ms > 0.0
    assert rows[2].latency_ms is None
