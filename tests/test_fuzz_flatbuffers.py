"""Truncated and bit-flipped flatbuffers: `inspect`, `tfquant-inspect` and the interpreter wrapper
(`verify`'s) raise tfquant errors only, never a raw traceback, a hang or a crash. Bounded in time."""
import os
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

import tfquant
from tfquant.errors import TFQuantError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def flatbuffer() -> bytes:
    from testdata import handbuilt_model

    return tfquant.to_tflite(handbuilt_model.build().__call__)


def damaged(data: bytes, flips: list[tuple[int, int]], cut: int) -> bytes:
    b = bytearray(data[: max(8, len(data) - cut)])
    for pos, bit in flips:
        b[pos % len(b)] ^= 1 << bit
    return bytes(b)


DAMAGE = st.tuples(st.lists(st.tuples(st.integers(0, 10**7), st.integers(0, 7)), min_size=1, max_size=8),
                   st.one_of(st.just(0), st.integers(1, 4000)))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(DAMAGE)
def test_inspect_raises_only_tfquant_errors(flatbuffer, damage):
    data = damaged(flatbuffer, *damage)
    try:
        report = tfquant.inspect(data)
    except TFQuantError:
        return
    report.table()                    # a report that parsed can be printed
    report.to_json()


def test_interpreter_and_verify_on_damaged_files(flatbuffer, tmp_path):
    """In a child process (a crash there fails this test instead of killing the run): 120 damaged
    files through TFLiteRunner and verify; every failure must be a tfquant error."""
    rng = np.random.default_rng(0)
    paths = []
    for i in range(120):
        flips = [(int(rng.integers(0, len(flatbuffer))), int(rng.integers(0, 8))) for _ in range(rng.integers(1, 4))]
        path = tmp_path / f"d{i}.tflite"
        path.write_bytes(damaged(flatbuffer, flips, int(rng.integers(0, 64)) if i % 4 == 0 else 0))
        paths.append(str(path))
    code = f"""
import sys, numpy as np, tfquant
from tfquant.errors import TFQuantError
from tfquant.export.interpreter import TFLiteRunner
from testdata import handbuilt_model
sim = handbuilt_model.build()
x = np.random.default_rng(1).uniform(-1, 1, (2, 16, 16, 3)).astype(np.float32)
ok = bad = 0
for p in {paths!r}:
    try:
        TFLiteRunner(p).run([x])
        tfquant.verify(p, sim.exact, x, kernels=("reference",), intermediate_samples=0)
        ok += 1
    except TFQuantError:
        bad += 1
print("done", ok, bad)
"""
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONPATH=ROOT)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, env=env,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    ok, bad = (int(v) for v in proc.stdout.split("done")[1].split())
    assert ok + bad == 120 and bad > 0


def test_tfquant_inspect_command_on_a_damaged_file(flatbuffer, tmp_path):
    path = tmp_path / "bad.tflite"
    path.write_bytes(damaged(flatbuffer, [(100, 3), (2000, 5), (len(flatbuffer) // 2, 1)], 500))
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONPATH=ROOT)
    proc = subprocess.run([sys.executable, "-m", "tools.inspect_tflite", str(path)], capture_output=True,
                          text=True, cwd=ROOT, env=env, timeout=300)
    assert "Traceback" not in proc.stderr, proc.stderr[-2000:]
