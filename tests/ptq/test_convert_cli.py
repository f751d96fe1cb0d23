"""tfquant-convert from a TFRecord, and the summary table it ends with (checked against inspect
of the written file and against the verify table it printed)."""
import os
import re
import subprocess
import sys

import numpy as np
import pytest

import tfquant
from test_tfrecord_calibration import png_records, write_records

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def convert(*args, progress: bool = False, timeout=300) -> subprocess.CompletedProcess:
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONPATH=ROOT)
    return subprocess.run([sys.executable, "-m", "tools.convert", *args, "--progress" if progress else "--noprogress"],
                          capture_output=True, text=True, cwd=ROOT, env=env, timeout=timeout)


def summary_of(stdout: str) -> dict:
    """The final 'summary' block as {key: value}."""
    block = stdout[stdout.rindex("\nsummary\n") + len("\nsummary\n"):].splitlines()
    return dict(re.match(r"^  (\S.*?)\s{2,}(\S.*)$", line).groups() for line in block if line.strip())


def check_summary(summary: dict, path) -> tfquant.export.ModelReport:
    """Every figure of the summary against tfquant.inspect of the written file."""
    report = tfquant.inspect(str(path))
    assert summary["output"] == f"{path}, {os.path.getsize(path)} bytes"
    total, listed = re.match(r"(\d+) \((.*)\)", summary["ops"]).groups()
    assert int(total) == len(report.ops)
    assert {k: int(v) for k, v in (item.rsplit(" ", 1) for item in listed.split(", "))} == report.op_counts()
    floats = [f"#{op.index} {op.op}" for op in report.float_ops]
    assert summary["float ops left"] == (f"{len(floats)} ({', '.join(floats)})" if floats else "0")
    int8, total = map(int, re.match(r"(\d+)/(\d+) \(", summary["int8 activations"]).groups())
    assert int8 == sum(1 for t in report.tensors if not t.is_constant and t.dtype == "INT8")
    assert total == int8 + len(report.non_int8_tensors)
    return report


def test_convert_from_a_tfrecord_of_png_images_prints_a_summary(keras3_dir, tmp_path):
    images = np.random.default_rng(3).integers(0, 256, (24, 20, 20, 3)).astype(np.uint8)
    path = png_records(tmp_path / "cal.tfrecord", images)          # features image/encoded and label
    out = tmp_path / "model.tflite"
    proc = convert("--saved_model", keras3_dir, "--output", str(out), "--calibration", path,
                   "--tfrecord_feature", "image/encoded", "--max_calibration_samples", "20", "--verify")
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = summary_of(proc.stdout)
    report = check_summary(summary, out)
    assert summary["float ops left"] == "0" and summary["int8 activations"] == "12/12 (100.0%)"
    weighted = [op for op in report.ops if op.op in ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED")]
    per_channel = [op for op in weighted if report.tensors[op.inputs[1]].per_channel]
    assert {op.op for op in per_channel} == {"CONV_2D", "DEPTHWISE_CONV_2D"}
    assert summary["weights"] == f"per-channel {len(per_channel)}/{len(weighted)} (per-tensor: FULLY_CONNECTED), INT8"
    # the fidelity rows are the verify table's reference-kernel row (verify reads up to 64 samples)
    exact, top1, sqnr = re.search(r"^reference\s+\S+\s+(\S+)%\s+\S+%\s+\d+\s+\S+%\s+(\S+)%\s+(\S+) dB$",
                                  proc.stdout, re.M).groups()
    assert "verify: 24 samples" in proc.stdout and "activation ranges" in proc.stdout
    assert summary["top-1 vs float"] == f"{top1}% (24 samples)"
    assert summary["SQNR vs float"] == f"{sqnr} dB" and float(sqnr) > 20.0
    assert summary["sim=TFLite exact"] == f"{exact}% (reference kernels)" and exact == "100.00"


@pytest.fixture
def bad_tfrecords(tmp_path) -> dict:
    images = png_records(tmp_path / "two.tfrecord", np.zeros((2, 16, 16, 3), np.uint8))
    good = write_records(tmp_path / "good.tfrecord", [{"x": np.zeros(768, np.float32)}] * 3)
    data = bytearray(open(good, "rb").read())
    data[-10] ^= 0xFF                                                   # the last record's payload
    (tmp_path / "corrupt.tfrecord").write_bytes(bytes(data))
    return {"two features": (images,), "wrong shape": (images, "--tfrecord_feature", "label"),
            "corrupt": (str(tmp_path / "corrupt.tfrecord"),)}


# One subprocess each (about 20 s on a quiet machine): the most common mistake in the default run,
# the others with the slow tests (their messages are checked in-process in test_tfrecord_calibration).
@pytest.mark.parametrize("case, message", [
    ("two features", "hold 2 features ['image/encoded', 'label']: name the one to calibrate with "
                     "(tfrecord_feature, --tfrecord_feature)"),
    pytest.param("wrong shape", "holds 1 values per record; the model expects samples of shape [16, 16, 3] "
                 "(768 values)", marks=pytest.mark.slow),
    pytest.param("corrupt", "is corrupt: corrupted record at", marks=pytest.mark.slow),
])
def test_bad_tfrecords_fail_before_any_work(keras3_dir, tmp_path, bad_tfrecords, case, message):
    out = tmp_path / "model.tflite"
    # progress bars on: had any calibration pass run, its bar would be on stderr beside the error
    proc = convert("--saved_model", keras3_dir, "--output", str(out), "--calibration", *bad_tfrecords[case],
                   progress=True)
    assert proc.returncode == 1, proc.stdout[-2000:] + proc.stderr[-2000:]
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("tfquant-convert: error: ") and message in lines[0], lines
    assert proc.stdout == ""                                  # no pipeline step ran, nothing was reported
    assert not out.exists()
