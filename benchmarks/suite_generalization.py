"""PTQ on photos the calibration never saw: EfficientNet-Lite0/1/2 on the larger photo set.

    python -m benchmarks.suite_generalization                       # Lite0, Lite1, Lite2
    python -m benchmarks.suite_generalization --models lite0 --quick

The set (benchmarks/data/photos.py; cached once by scripts/fetch_photos.sh): 42 photos split by
photo, 12 calibration / 30 evaluation. Calibration: 64 crops of the calibration photos only;
evaluation: 6 crops (random boxes and flips) of each evaluation photo, 180 in all. Every model
sees the same boxes, rendered at its own input size. Figures: top-1 agreement with the float
Keras model and logit SQNR, each with a 95% bootstrap interval that resamples evaluation photos;
int8 routes run under the interpreter's default (XNNPACK) kernels. For each model: the TFLite
converter's per-channel PTQ (from the Keras model, a user's route with the converter alone), and
tfquant's default pipeline (bias correction + AdaRound) per-channel and per-tensor, the same
without reconstruction (CLE, bias absorption, bias correction) and its data-free pipeline, each
from the cached SavedModel; *end to end s* is tfquant.ptq from the SavedModel path to the flatbuffer
verified against its exact simulation (`verify`, reference kernels, 4 evaluation crops: on a
shared 2-core machine the reference kernels take ~15 s a crop).
Latency and size beside the converter's int8 model and the float flatbuffer.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from typing import Dict, List, Optional, Sequence, Tuple

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from benchmarks import harness, routes  # noqa: E402
from benchmarks.harness import Row  # noqa: E402

INPUT_RANGE = (-127.0 / 128.0, 1.0)   # `preprocess`: (pixel - 127) / 128
MODELS = ("lite0", "lite1", "lite2")
TITLES = {"lite0": "EfficientNet-Lite0", "lite1": "EfficientNet-Lite1", "lite2": "EfficientNet-Lite2"}
CONVERTER = "TFLite converter PTQ per-channel"
TFQUANT_ROUTES = [
    # (row name, tfquant.ptq options). The default calibrated pipeline is bias correction + AdaRound
    # (issue 13, PTQConfig); the "without reconstruction" rows are the previous default, for the ablation.
    ("tfquant default pipeline per-channel", dict(per_channel=True)),
    ("tfquant default pipeline per-tensor", dict(per_channel=False)),
    ("tfquant without reconstruction (cle, bias_absorption, bias_correction) per-channel",
     dict(per_channel=True, steps=("cle", "bias_absorption", "bias_correction"))),
    ("tfquant without reconstruction (cle, bias_absorption, bias_correction) per-tensor",
     dict(per_channel=False, steps=("cle", "bias_absorption", "bias_correction"))),
    ("tfquant data-free (per-channel)", dict(per_channel=True, data_free=True,
                                             input_range=INPUT_RANGE)),
]
COLUMNS = ["route", "agreement", "agreement_ci", "sqnr_db", "sqnr_ci", "exact", "latency_ms",
           "size_kb", "quant_seconds", "total_seconds", "note"]


def sizes(quick: bool) -> Tuple[int, int, int]:
    """(calibration crops, crops per evaluation photo, verify samples)."""
    return (16, 2, 4) if quick else (64, 6, 4)


def measure_model(variant: str, quick: bool,
                  routes_: Sequence[Tuple[str, dict]] = TFQUANT_ROUTES) -> Tuple[List[Row], str]:
    """The rows of one model (float, converter, tfquant routes) and its markdown table."""
    from benchmarks.data.photos import evaluation_set, photo_bootstrap
    from benchmarks.models import efficientnet_lite0 as E
    from benchmarks.peers.converter_ptq import converter_ptq, float_tflite, run_tflite

    n_cal, per_photo, n_verify = sizes(quick)
    data = evaluation_set(n_cal, per_photo, size=E.input_size(variant))
    cal, evaluation = E.preprocess(data.calibration), E.preprocess(data.evaluation)
    model = E.load_efficientnet_lite(variant)
    float_logits = model.predict(evaluation, batch_size=30, verbose=0)
    models: Dict[str, bytes] = {}

    def row(route: str, tflite: bytes, **extra) -> Row:
        logits = run_tflite(tflite, evaluation)
        b = photo_bootstrap(float_logits, logits, data.sources)
        models[route] = tflite
        return harness.announce(Row(
            route=f"{TITLES[variant]}: {route}", agreement=b.agreement, agreement_ci=b.agreement_ci,
            sqnr_db=b.sqnr_db, sqnr_ci=b.sqnr_ci, size_kb=len(tflite) / 1024, **extra))

    rows = [row("float TFLite", float_tflite(model))]
    tfl, secs = harness.timed(converter_ptq, model, cal, per_channel=True)
    rows.append(row(CONVERTER, tfl, quant_seconds=secs))
    saved_model = E.cached_saved_model(variant)
    for name, options in routes_:
        start = time.perf_counter()
        result = routes.tfquant_ptq(saved_model, cal, evaluation, quick=quick, fidelity_n=n_verify,
                                    **dict(options))
        total = time.perf_counter() - start
        rows.append(row(name, result.tflite, quant_seconds=result.seconds, total_seconds=total,
                        exact=result.exact))
    measured = harness.latencies_ms(models)
    for r in rows:
        r.latency_ms = measured[r.route.split(": ", 1)[1]]
    table = harness.markdown_table(rows, COLUMNS, ratios={"converter int8": rows[1].latency_ms})
    head = (f"### {TITLES[variant]} ({E.input_size(variant)} px; {len(cal)} calibration crops of "
            f"{len(data.calibration_photos)} photos, {len(evaluation)} evaluation crops of "
            f"{len(data.evaluation_photos)} other photos)")
    return rows, f"{head}\n\n{table}\n"


def summary_table(all_rows: Dict[str, List[Row]], first: int = 1) -> str:
    """Top-1 agreement (interval) per route and model, side by side: the routes of the first
    model's rows from row `first` on (1: after the float model's)."""
    variants = list(all_rows)
    routes_ = [r.route.split(": ", 1)[1] for r in all_rows[variants[0]][first:]]
    lines = ["| route | " + " | ".join(TITLES[v] for v in variants) + " |",
             "|---|" + "---|" * len(variants)]
    for name in routes_:
        cells = []
        for v in variants:
            r = next((x for x in all_rows[v] if x.route.endswith(": " + name)), None)
            cells.append("-" if r is None else
                         f"{100 * r.agreement:.1f}% ({100 * r.agreement_ci[0]:.1f}-"
                         f"{100 * r.agreement_ci[1]:.1f}), {r.sqnr_db:.1f} dB")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def run(quick: bool, models: Optional[Sequence[str]] = None) -> Tuple[List[Row], str]:
    """All rows and the BENCHMARKS.md section. Raises PhotosNotFound (naming
    scripts/fetch_photos.sh) when the photo cache is missing."""
    from benchmarks.data.photos import CACHED_PHOTOS, FETCH_SCRIPT, PhotosNotFound, \
        missing_cached_photos, photo_split

    models = list(models or MODELS)
    unknown = [m for m in models if m not in MODELS]
    if unknown:
        raise ValueError(f"unknown model(s) {unknown}; choose from {', '.join(MODELS)}")
    missing = missing_cached_photos()
    if missing:
        raise PhotosNotFound(f"{len(missing)} of the {len(CACHED_PHOTOS)} Debian photos are not "
                             f"cached (e.g. {missing[0]!r}): run `bash {FETCH_SCRIPT}` once.")
    started = time.perf_counter()
    all_rows: Dict[str, List[Row]] = {}
    tables = []
    for variant in models:
        rows, table = measure_model(variant, quick)
        all_rows[variant] = rows
        tables.append(table)
        print(table, flush=True)   # a full run takes most of an hour: show each model's table
    cal_names, eval_names = photo_split()
    n_cal, per_photo, n_verify = sizes(quick)
    text = (f"## Generalization: EfficientNet-Lite0/1/2 on photos the calibration never saw (W8A8)\n\n"
            f"42 real photos (scikit-image, scikit-learn, OpenCV's samples, KDE wallpapers) split by "
            f"photo with a fixed seeded shuffle: {n_cal} calibration crops of {len(cal_names)} photos "
            f"({', '.join(cal_names)}); {per_photo} evaluation crops of each of the other "
            f"{len(eval_names)} photos. No labels: the figures are top-1 agreement with the float "
            f"model and logit SQNR, with 95% bootstrap intervals that resample evaluation photos. "
            f"int8 runs under the default (XNNPACK) kernels. *quantize s*: the quantization call; "
            f"*end to end s*: tfquant.ptq from the SavedModel to a flatbuffer verified against its "
            f"exact simulation ({n_verify} crops, reference kernels; *sim=TFLite exact*).\n\n"
            f"Top-1 agreement (95% interval) and logit SQNR:\n\n{summary_table(all_rows)}\n\n"
            + "\n".join(tables)
            + f"\nSuite wall time: {time.perf_counter() - started:.0f} s.\n")
    return [r for rows in all_rows.values() for r in rows], text


def range_sweep(variant: str, estimators: Sequence[str], quick: bool,
                per_channel: bool = False) -> str:
    """The default pipeline (per-tensor weights unless `per_channel`) with each per-tensor
    activation range estimator in `estimators`
    (PTQConfig.activation_ranges: "minmax", "percentile", "mse", "bn"; logits keep their
    cross-entropy estimator) on `variant`: a markdown table of agreement and SQNR with intervals.
    No verify and no latency (the flatbuffers differ only in activation scales)."""
    from benchmarks.data.photos import evaluation_set, photo_bootstrap
    from benchmarks.models import efficientnet_lite0 as E
    from benchmarks.peers.converter_ptq import run_tflite
    import tfquant

    n_cal, per_photo, _ = sizes(quick)
    data = evaluation_set(n_cal, per_photo, size=E.input_size(variant))
    cal, evaluation = E.preprocess(data.calibration), E.preprocess(data.evaluation)
    float_logits = E.load_efficientnet_lite(variant).predict(evaluation, batch_size=30, verbose=0)
    saved_model = E.cached_saved_model(variant)
    lines = [f"| {TITLES[variant]} {'per-channel' if per_channel else 'per-tensor'}: activation "
             f"ranges | top-1 agreement | 95% interval | logit SQNR dB | SQNR 95% interval | quantize s |",
             "|---|---|---|---|---|---|"]
    for estimator in estimators:
        (result, tflite), secs = harness.timed(
            lambda: (lambda r: (r, r.to_tflite()))(tfquant.ptq(
                saved_model, cal, progress=False, per_channel=per_channel,
                activation_ranges=estimator)))
        b = photo_bootstrap(float_logits, run_tflite(tflite, evaluation), data.sources)
        line = (f"| {estimator} | {100 * b.agreement:.1f}% | {100 * b.agreement_ci[0]:.1f}-"
                f"{100 * b.agreement_ci[1]:.1f}% | {b.sqnr_db:.1f} | {b.sqnr_ci[0]:.1f}-"
                f"{b.sqnr_ci[1]:.1f} | {secs:.0f} |")
        print(f"[benchmarks] {variant} {estimator}: {line}", flush=True)
        lines.append(line)
    return "\n".join(lines) + "\n"


def models_main(argv: Optional[Sequence[str]], module: str, doc: str, run_suite) -> int:
    """The command line of a suite over `MODELS` (`--models`, `--quick`): prints its section.

        >>> sys.exit(models_main(None, "benchmarks.suite_ablation", __doc__, run))
    """
    parser = argparse.ArgumentParser(prog=f"python -m {module}", description=doc.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="small sets (a smoke run)")
    parser.add_argument("--models", default=",".join(MODELS), help="comma-separated subset of " + ",".join(MODELS))
    args = parser.parse_args(argv)
    from absl import logging

    logging.set_verbosity(logging.WARNING)
    chosen = [m.strip() for m in args.models.split(",") if m.strip()]
    if any(m not in MODELS for m in chosen):
        parser.error(f"--models: choose from {', '.join(MODELS)}")
    _, text = run_suite(args.quick, chosen)
    print(text)
    return 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.suite_generalization",
                                     description=__doc__.split("\n")[0])
    parser.add_argument("--models", default=",".join(MODELS),
                        help="comma-separated subset of " + ",".join(MODELS))
    parser.add_argument("--quick", action="store_true", help="small sets (a smoke run)")
    parser.add_argument("--range-sweep", metavar="ESTIMATORS", default="",
                        help="instead: the default pipeline (per-tensor weights) with each activation range "
                             "estimator, e.g. minmax,percentile,mse,bn")
    parser.add_argument("--per-channel", action="store_true",
                        help="--range-sweep with per-channel weights")
    args = parser.parse_args(argv)
    from absl import logging

    logging.set_verbosity(logging.WARNING)
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    if args.range_sweep:
        estimators = [e.strip() for e in args.range_sweep.split(",") if e.strip()]
        for variant in models:
            print(range_sweep(variant, estimators, args.quick, args.per_channel), flush=True)
        return 0
    _, text = run(args.quick, models)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
