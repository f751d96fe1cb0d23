"""EfficientNet-Lite0 (ImageNet weights) on crops of real photos: fidelity to the float model."""
from __future__ import annotations

from benchmarks import harness, routes
from benchmarks.harness import NotBuilt, Row

INPUT_RANGE = (-127.0 / 128.0, 1.0)   # `preprocess`: (pixel - 127) / 128

PTQ_ABLATION = [
    # (row name, tfquant.ptq options) — the white paper's tables 3-4, W8A8. The rows before
    # "+MSE ranges" keep min-max weights (per-tensor weights default to MSE, PTQConfig.weight_ranges).
    ("tfquant PTQ per-tensor: naive", dict(per_channel=False, steps=(), weight_ranges="minmax")),
    ("tfquant PTQ per-tensor: +CLE", dict(per_channel=False, steps=("cle",), weight_ranges="minmax")),
    ("tfquant PTQ per-tensor: +bias absorption",
     dict(per_channel=False, steps=("cle", "bias_absorption"), weight_ranges="minmax")),
    ("tfquant PTQ per-tensor: +bias correction",
     dict(per_channel=False, steps=("cle", "bias_absorption", "bias_correction"), weight_ranges="minmax")),
    ("tfquant PTQ per-tensor: +MSE ranges",
     dict(per_channel=False, steps=("cle", "bias_absorption", "bias_correction"), ranges="mse")),
    ("tfquant PTQ per-tensor: +AdaRound",
     dict(per_channel=False, steps=("cle", "bias_absorption", "bias_correction", "adaround"), ranges="mse")),
    ("tfquant PTQ per-tensor: default pipeline, ReLU6 replaced by ReLU for CLE",
     dict(per_channel=False, relu6_policy="relu")),
    ("tfquant PTQ per-channel: naive", dict(per_channel=True, steps=())),
    ("tfquant PTQ per-channel: default pipeline", dict(per_channel=True)),
    ("tfquant PTQ per-channel: default pipeline + AdaRound",
     dict(per_channel=True, steps=("cle", "bias_absorption", "bias_correction", "adaround"))),
    ("tfquant PTQ per-channel: bias correction + AdaRound (200 iterations)",
     dict(per_channel=True, steps=("bias_correction", "adaround"), adaround_iterations=200)),
    ("tfquant PTQ per-channel: bias correction + AdaRound",
     dict(per_channel=True, steps=("bias_correction", "adaround"))),
    ("tfquant PTQ data-free (per-channel)", dict(per_channel=True, data_free=True, input_range=INPUT_RANGE)),
]
# Automatic mixed precision on this model: benchmarks/suite_mixed_precision.py (held-out photos).
QUICK_ROWS = ("tfquant PTQ per-tensor: naive", "tfquant PTQ per-tensor: +bias correction",
              "tfquant PTQ data-free (per-channel)")


def run(quick: bool):
    from benchmarks.data.photos import evaluation_sources, photo_crops
    from benchmarks.models.efficientnet_lite0 import cached_saved_model, load_efficientnet_lite0, preprocess
    from benchmarks.peers.converter_ptq import converter_ptq, float_tflite, run_tflite

    n_cal, n_eval = (16, 48) if quick else (64, 320)
    cal_u8, eval_u8 = photo_crops(n_cal, n_eval, seed=0)
    cal, evaluation = preprocess(cal_u8), preprocess(eval_u8)
    sources = evaluation_sources(n_cal, n_eval, seed=0)
    model = load_efficientnet_lite0()
    float_logits = model.predict(evaluation, batch_size=32, verbose=0)

    models = {}   # route -> flatbuffer: latencies are measured side by side at the end

    def measure(route: str, tflite: bytes, seconds=None, **extra) -> Row:
        logits = run_tflite(tflite, evaluation)
        models[route] = tflite
        return harness.announce(Row(
            route=route, agreement=harness.top1_agreement(float_logits, logits),
            agreement_ci=harness.agreement_interval(float_logits, logits, sources),
            sqnr_db=harness.sqnr_db(float_logits, logits), size_kb=len(tflite) / 1024,
            quant_seconds=seconds, **extra))

    rows = [measure("float TFLite", float_tflite(model))]
    tfl, secs = harness.timed(converter_ptq, model, cal, per_channel=True)
    rows.append(measure("TFLite converter PTQ per-channel", tfl, secs))
    tfl, secs = harness.timed(converter_ptq, model, cal, per_channel=False)
    rows.append(measure("TFLite converter PTQ per-tensor", tfl, secs))
    saved_model = cached_saved_model()   # tfquant.ptq reads the SavedModel, as a user would
    reports = []
    for name, options in PTQ_ABLATION:
        if quick and name not in QUICK_ROWS:
            continue
        try:
            result = routes.tfquant_ptq(saved_model, cal, evaluation, quick=quick, **dict(options))
        except NotBuilt as e:
            rows.append(Row(route=name, note=f"not built ({e})"))
            continue
        rows.append(measure(name, result.tflite, result.seconds, exact=result.exact,
                            within_one=result.within_one))
        reports.append(f"**{name}**\n\n```\n{result.report}\n```\n")

    harness.fill_latencies(rows, models)
    float_ms = rows[0].latency_ms
    conv_ms = rows[1].latency_ms
    table = harness.markdown_table(
        rows, ["route", "agreement", "agreement_ci", "sqnr_db", "exact", "within_one", "latency_ms",
               "size_kb", "quant_seconds", "note"],
        ratios={"float": float_ms, "converter int8": conv_ms})
    text = (f"## EfficientNet-Lite0 on real photos (W8A8)\n\n"
            f"ImageNet-pretrained EfficientNet-Lite0 rebuilt in Keras 3; {n_cal} calibration crops and "
            f"{n_eval} disjoint evaluation crops (random crops and flips) of the photos in the "
            f"scikit-image and scikit-learn wheels. No labels: the figure is agreement with the float "
            f"model; its 95% interval is a bootstrap that resamples whole photos "
            f"({len(set(sources))} of them: crops of one photo are not independent samples). "
            f"Fidelity for tfquant routes: the exact simulation vs the flatbuffer (reference "
            f"kernels) on {min(16, n_eval)} evaluation crops.\n\n{table}\n\n"
            f"![agreement](benchmarks/plots/efficientnet_agreement.png)\n\n"
            f"<details><summary>What each tfquant.ptq route did (its report)</summary>\n\n"
            + "\n".join(reports) + "\n</details>\n")
    return rows, text
