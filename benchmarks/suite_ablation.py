"""The PTQ ablation on photos the calibration never saw: EfficientNet-Lite0/1/2, W8A8.

    python -m benchmarks.suite_ablation                     # Lite0/1/2
    python -m benchmarks.suite_ablation --quick --models lite0
    python -m benchmarks.run --suites=ablation --update     # its section of BENCHMARKS.md

The generalization suite's protocol (benchmarks/suite_generalization.py: its calibration crops,
its evaluation crops of 30 other photos, 95% intervals resampling photos; int8 under the default
XNNPACK kernels): the white paper's steps added one at a time, per-tensor and per-channel, then
the default pipeline (bias correction + AdaRound) with MSE activation ranges, and the data-free
pipeline, beside the TFLite converter's own PTQ. The rows before "+MSE weight ranges" keep min-max
weights (per-tensor weights default to MSE, `PTQConfig.weight_ranges`).
"""
from __future__ import annotations

import os
import sys
import time
from typing import Dict, List, Optional, Sequence, Tuple

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from benchmarks import harness  # noqa: E402
from benchmarks.harness import Row  # noqa: E402
from benchmarks.suite_generalization import INPUT_RANGE, MODELS, TITLES, models_main, sizes, summary_table  # noqa: E402

NO_RECON = ("cle", "bias_absorption", "bias_correction")
ABLATION = [
    ("per-tensor: naive", dict(per_channel=False, steps=(), weight_ranges="minmax")),
    ("per-tensor: +CLE", dict(per_channel=False, steps=("cle",), weight_ranges="minmax")),
    ("per-tensor: +bias absorption", dict(per_channel=False, steps=("cle", "bias_absorption"),
                                          weight_ranges="minmax")),
    ("per-tensor: +bias correction", dict(per_channel=False, steps=NO_RECON, weight_ranges="minmax")),
    ("per-tensor: +MSE weight ranges", dict(per_channel=False, steps=NO_RECON, weight_ranges="mse")),
    ("per-tensor: +AdaRound", dict(per_channel=False, steps=NO_RECON + ("adaround",), weight_ranges="mse")),
    ("per-tensor: default (bias correction + AdaRound, MSE weights)", dict(per_channel=False)),
    ("per-channel: naive", dict(per_channel=True, steps=())),
    ("per-channel: +CLE, bias absorption, bias correction", dict(per_channel=True, steps=NO_RECON)),
    ("per-channel: +AdaRound", dict(per_channel=True, steps=NO_RECON + ("adaround",))),
    ("per-channel: default (bias correction + AdaRound)", dict(per_channel=True)),
    ("per-channel: default + MSE activation ranges", dict(per_channel=True, activation_ranges="mse")),
    ("data-free (per-channel)", dict(per_channel=True, data_free=True, input_range=INPUT_RANGE)),
]
QUICK_ROUTES = ("per-tensor: naive", "per-tensor: +bias correction", "per-channel: default (bias correction + AdaRound)",
                "data-free (per-channel)")
COLUMNS = ["route", "agreement", "agreement_ci", "sqnr_db", "sqnr_ci", "quant_seconds"]


def measure_model(variant: str, quick: bool) -> List[Row]:
    """The converter's rows and the ablation's, for one model."""
    import tfquant
    from benchmarks.data.photos import evaluation_set, photo_bootstrap
    from benchmarks.models import efficientnet_lite0 as E
    from benchmarks.peers.converter_ptq import converter_ptq, run_tflite

    n_cal, per_photo, _ = sizes(quick)
    data = evaluation_set(n_cal, per_photo, size=E.input_size(variant))
    cal, evaluation = E.preprocess(data.calibration), E.preprocess(data.evaluation)
    model = E.load_efficientnet_lite(variant)
    float_logits = model.predict(evaluation, batch_size=30, verbose=0)

    def row(route: str, tflite: bytes, seconds: float) -> Row:
        b = photo_bootstrap(float_logits, run_tflite(tflite, evaluation), data.sources)
        return harness.announce(Row(route=f"{TITLES[variant]}: {route}", agreement=b.agreement,
                                    agreement_ci=b.agreement_ci, sqnr_db=b.sqnr_db, sqnr_ci=b.sqnr_ci,
                                    quant_seconds=seconds))

    rows = []
    for granularity, per_channel in (("per-channel", True), ("per-tensor", False)):
        tfl, secs = harness.timed(converter_ptq, model, cal, per_channel=per_channel)
        rows.append(row(f"TFLite converter PTQ {granularity}", tfl, secs))
    saved_model = E.cached_saved_model(variant)
    for name, options in ABLATION:
        if quick and name not in QUICK_ROUTES:
            continue
        options = dict(options, adaround_iterations=20) if quick else options
        result, secs = harness.timed(tfquant.ptq, saved_model, cal, progress=False, **options)
        rows.append(row(f"tfquant {name}", result.to_tflite(), secs))
    return rows


def run(quick: bool, models: Optional[Sequence[str]] = None) -> Tuple[List[Row], str]:
    """All rows and the BENCHMARKS.md section."""
    started = time.perf_counter()
    n_cal, per_photo, _ = sizes(quick)
    all_rows: Dict[str, List[Row]] = {}
    for variant in models or MODELS:
        all_rows[variant] = measure_model(variant, quick)
    details = "\n\n".join(harness.markdown_table(rows, COLUMNS) for rows in all_rows.values())
    text = ("## PTQ ablation: EfficientNet-Lite0/1/2 on photos the calibration never saw (W8A8)\n\n"
            + __doc__.split("\n\n")[2].replace("\n", " ") + f" ({n_cal} calibration crops, {per_photo} "
            f"evaluation crops per photo.)\n\nTop-1 agreement (95% interval) and logit SQNR:\n\n"
            + summary_table(all_rows, first=0) + "\n\n<details><summary>Each model's rows with their SQNR "
            "intervals and quantization times</summary>\n\n" + details
            + f"\n\n</details>\n\nSuite wall time: {time.perf_counter() - started:.0f} s.\n")
    return [r for rows in all_rows.values() for r in rows], text


def main(argv: Optional[Sequence[str]] = None) -> int:
    return models_main(argv, "benchmarks.suite_ablation", __doc__, run)


if __name__ == "__main__":
    sys.exit(main())
