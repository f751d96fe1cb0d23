"""The Keras applications sweep (issue 15, /work/shared/COVERAGE.md): per model and route, the ops
left in float, the simulation's exactness against TFLite's reference kernels, size and latency.

    python -m benchmarks.suite_keras_applications                      # all 15, all routes
    python -m benchmarks.suite_keras_applications --models EfficientNetB0,MobileNetV3Small --routes ptq

Each model: `keras.applications.X(weights=None, input_shape=(96, 96, 3), classes=10)`, its batch
norm statistics set by one `training=True` pass with momentum 0 over 32 uniform [-1, 1] inputs;
32 calibration and 8 test inputs drawn apart. Routes:
- ptq: `tfquant.ptq(model, x_cal)` + `verify` on the test inputs;
- qat: `quantize_model` + `calibrate` + `to_tflite` + `verify`;
- converter: the converter's own full-integer PTQ (benchmarks/peers/converter_ptq.py), which has
  no simulation to compare (exactness "-").
Every model runs in its own subprocess, so memory stays bounded and one crash is one row.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from typing import Optional

import numpy as np

MODELS = ("MobileNet", "MobileNetV2", "ResNet50", "Xception", "VGG16", "MobileNetV3Small",
          "MobileNetV3Large", "EfficientNetB0", "EfficientNetV2B0", "ResNet50V2", "DenseNet121",
          "InceptionV3", "InceptionResNetV2", "NASNetMobile", "ConvNeXtTiny")
ROUTES = ("ptq", "qat", "converter")
INPUT_SHAPE = (96, 96, 3)
CLASSES = 10
N_BN, N_CAL, N_TEST = 32, 32, 8


def build(name: str, seed: int = 0):
    """The application with random weights and batch norm statistics set from one forward pass."""
    import keras

    keras.utils.set_random_seed(seed)
    model = getattr(keras.applications, name)(weights=None, input_shape=INPUT_SHAPE, classes=CLASSES)
    rng = np.random.default_rng(seed)
    x_bn = rng.uniform(-1, 1, (N_BN, *INPUT_SHAPE)).astype(np.float32)
    bns = [layer for layer in model._flatten_layers(include_self=False)
           if isinstance(layer, keras.layers.BatchNormalization)]
    momenta = [bn.momentum for bn in bns]
    for bn in bns:
        bn.momentum = 0.0
    model(x_bn, training=True)
    for bn, m in zip(bns, momenta):
        bn.momentum = m
    x_cal = rng.uniform(-1, 1, (N_CAL, *INPUT_SHAPE)).astype(np.float32)
    x_test = rng.uniform(-1, 1, (N_TEST, *INPUT_SHAPE)).astype(np.float32)
    return model, x_cal, x_test


def _row(tflite: bytes, result=None, seconds: float = 0.0) -> dict:
    import tfquant
    from benchmarks.harness import latencies_ms

    report = tfquant.inspect(tflite)
    floats: dict[str, int] = {}
    for op in report.float_ops:
        floats[op.op] = floats.get(op.op, 0) + 1
    row = dict(float_ops=floats, size_kb=len(tflite) / 1024, seconds=seconds,
               latency_ms=latencies_ms({"m": tflite}, rounds=3, runs=5, warmup=3)["m"])
    if result is not None:
        row.update(exact=result.exact_fraction, max_lsb=result.max_lsb,
                   first_diverging=next((f"{t.name} ({100 * t.exact:.1f}%, {t.max_lsb} LSB)"
                                         for t in result.tensors if t.exact < 1.0), None))
    return row


def run_one(name: str, route: str) -> dict:
    """One (model, route) cell, in this process."""
    import tfquant

    model, x_cal, x_test = build(name)
    start = time.perf_counter()
    if route == "ptq":
        sim = tfquant.ptq(model, x_cal, progress=False)
        tflite = sim.to_tflite()
        seconds = time.perf_counter() - start
        result = sim.verify(x_test, kernels=("reference",))
        return _row(tflite, result, seconds)
    if route == "qat":
        qmodel = tfquant.quantize_model(model)
        tfquant.calibrate(qmodel, x_cal, batch_size=8)
        tflite = tfquant.to_tflite(qmodel)
        seconds = time.perf_counter() - start
        result = tfquant.verify(tflite, qmodel, x_test, kernels=("reference",))
        return _row(tflite, result, seconds)
    if route == "converter":
        from benchmarks.peers.converter_ptq import converter_ptq

        tflite = converter_ptq(model, x_cal)
        return _row(tflite, None, time.perf_counter() - start)
    raise ValueError(f"unknown route {route!r}: one of {', '.join(ROUTES)}")


def _worker(name: str, routes: list[str]) -> None:
    import keras

    for route in routes:
        try:
            row = run_one(name, route)
        except Exception as e:  # noqa: BLE001 - a failing route is a row of the table
            row = dict(error=f"{type(e).__name__}: {str(e).splitlines()[0][:160] if str(e) else ''}")
        keras.backend.clear_session()
        print("@@ROW " + json.dumps(dict(model=name, route=route, **row)), flush=True)


def run_subprocess(name: str, routes: list[str], timeout: Optional[float] = None) -> list[dict]:
    """Each model in its own Python process (bounded memory; a crash or OOM is one error row)."""
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    cmd = [sys.executable, "-m", "benchmarks.suite_keras_applications", "--worker", name,
           "--routes", ",".join(routes)]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout)
        out, err, rc = proc.stdout, proc.stderr, proc.returncode
    except subprocess.TimeoutExpired as e:
        out, err, rc = (e.stdout or b"").decode() if isinstance(e.stdout, bytes) else (e.stdout or ""), "", "timeout"
    rows = [json.loads(line[6:]) for line in out.splitlines() if line.startswith("@@ROW ")]
    done = {r["route"] for r in rows}
    for route in routes:
        if route not in done:
            tail = (err.strip().splitlines() or [""])[-1][:160]
            rows.append(dict(model=name, route=route, error=f"worker exit {rc}: {tail}"))
    return rows


def _cell(row: dict) -> str:
    if "error" in row:
        return f"error: {row['error']}"
    floats = row["float_ops"]
    text = str(sum(floats.values()))
    if floats:
        text += " (" + ", ".join(f"{op} x{n}" for op, n in sorted(floats.items())) + ")"
    if "exact" in row:
        text += f"; {100 * row['exact']:.1f}%, {row['max_lsb']} LSB"
    return text + f"; {row['size_kb']:.0f} KB, {row['latency_ms']:.2f} ms"


def markdown(rows: list[dict], routes: list[str]) -> str:
    """One line per model: per route, float ops (which), exact %, max LSB, size, latency."""
    names = {"ptq": "tfquant PTQ", "qat": "tfquant QAT", "converter": "converter PTQ"}
    lines = ["| model | " + " | ".join(names[r] for r in routes) + " |",
             "|---" * (len(routes) + 1) + "|"]
    by = {(r["model"], r["route"]): r for r in rows}
    for model in dict.fromkeys(r["model"] for r in rows):
        lines.append(f"| {model} | " + " | ".join(_cell(by[(model, r)]) for r in routes) + " |")
    lines.append("")
    lines.append("Cells: float ops left (which); verify's exact fraction and max LSB under the reference "
                 "kernels (output row, 8 inputs); flatbuffer size; batch-1 latency (default kernels, 1 thread; "
                 "3 rounds of 5 runs per route, taken one route after another: on a shared machine a "
                 "busy spell can fall on one route alone).")
    diverging = [(r["model"], r["route"], r["first_diverging"]) for r in rows if r.get("first_diverging")]
    if diverging:
        lines.append("")
        lines.append("First diverging intermediate tensor:")
        lines += [f"- {m} {route}: {t}" for m, route, t in diverging]
    return "\n".join(lines)


QUICK_MODELS = ("MobileNetV3Small", "EfficientNetB0", "ResNet50V2")


def _commit() -> str:
    """The checkout's short commit (with "+changes" when its tracked files differ), or "unknown"."""
    here = os.path.dirname(os.path.abspath(__file__))
    try:
        rev = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=here, capture_output=True,
                             text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "diff", "--quiet", "HEAD", "--", "tfquant", "benchmarks"],
                               cwd=here).returncode != 0
        return rev + ("+changes" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def _load_rows(path: Optional[str]) -> list[dict]:
    if not path or not os.path.exists(path):
        return []
    with open(path) as f:
        return json.load(f)


def _save_rows(path: Optional[str], rows: list[dict]) -> None:
    if path:
        from tfquant.io_utils import write_bytes_atomic

        write_bytes_atomic(path, json.dumps(rows, indent=1).encode())


def run(quick: bool, timeout: float = 1800.0, rows_file: Optional[str] = None,
        measure: bool = True) -> tuple[list[dict], str]:
    """The sweep as a BENCHMARKS.md section (benchmarks/run.py): all 15 models, or three with --quick.

    With `rows_file`, each model's rows are saved there as soon as it is done (with the commit that
    measured them) and a model already in the file is not run again: a sweep that takes hours can be
    stopped and resumed, and the section says which commit measured which model. `measure=False`
    writes the section from the file alone and names the models it does not hold yet.
    """
    rows = _load_rows(rows_file)
    done = {r["model"] for r in rows}
    started = time.perf_counter()
    for m in QUICK_MODELS if quick else MODELS:
        if m in done or not measure:
            continue
        commit = _commit()
        got = [dict(r, commit=commit) for r in run_subprocess(m, list(ROUTES), timeout)]
        rows += got
        _save_rows(rows_file, rows)
        print(f"[benchmarks] keras_applications {m}: " + "; ".join(f"{r['route']}: {_cell(r)}" for r in got),
              flush=True)
    wanted = QUICK_MODELS if quick else MODELS
    rows = [r for r in rows if r["model"] in wanted]
    missing = [m for m in wanted if m not in {r["model"] for r in rows}]
    commits = sorted({r.get("commit", "unknown") for r in rows})
    measured = (f"measured at commit {commits[0]}" if len(commits) == 1 else
                "measured over several commits: " + "; ".join(
                    f"{c}: " + ", ".join(dict.fromkeys(r["model"] for r in rows if r.get("commit", "unknown") == c))
                    for c in commits))
    text = (f"## Keras applications: float ops left and sim = TFLite exactness, both routes\n\n"
            f"`keras.applications.X(weights=None, input_shape={INPUT_SHAPE}, classes={CLASSES})`, batch norm "
            f"statistics from one training-mode pass over {N_BN} uniform [-1, 1] inputs, {N_CAL} calibration "
            f"and {N_TEST} test inputs drawn apart (benchmarks/suite_keras_applications.py; "
            + (f"{time.perf_counter() - started:.0f} s in this run; " if measure else "")
            + f"{measured}).\n\n"
            + markdown(rows, list(ROUTES)) + "\n"
            + (f"\nNot measured yet: {', '.join(missing)}.\n" if missing else ""))
    return rows, text


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=",".join(MODELS), help="comma-separated application names")
    parser.add_argument("--routes", default=",".join(ROUTES), help="comma-separated: ptq,qat,converter")
    parser.add_argument("--timeout", type=float, default=None, help="seconds per model")
    parser.add_argument("--json", default=None, help="write the rows to this file after each model")
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    routes = [r for r in args.routes.split(",") if r]
    for r in routes:
        if r not in ROUTES:
            parser.error(f"--routes: unknown route {r!r}; use some of {','.join(ROUTES)}")
    if args.worker:
        _worker(args.worker, routes)
        return
    models = [m for m in args.models.split(",") if m]
    for m in models:
        if m not in MODELS:
            parser.error(f"--models: unknown model {m!r}; use some of {','.join(MODELS)}")
    rows = []
    for m in models:
        start = time.perf_counter()
        got = [dict(r, commit=_commit()) for r in run_subprocess(m, routes, args.timeout)]
        rows += got
        _save_rows(args.json, rows)
        print(f"{m}: {time.perf_counter() - start:.0f} s: " + "; ".join(
            f"{r['route']}: {_cell(r)}" for r in got), file=sys.stderr, flush=True)
    print(markdown(rows, routes))


if __name__ == "__main__":
    main()
