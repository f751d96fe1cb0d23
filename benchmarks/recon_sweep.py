"""Reconstruction settings on EfficientNet-Lite0/1/2, held-out photos (issue 13).

    python -m benchmarks.recon_sweep --configs mse,percentile --models lite0,lite1,lite2
    python -m benchmarks.recon_sweep --configs ada200 --models lite1 --diagnose ada200:lite1

Each config is quantized once per model from the cached SavedModel (64 calibration crops of the
calibration photos) and evaluated on the 180 held-out crops under XNNPACK: top-1 agreement with
the float Keras model and logit SQNR, 95% bootstrap intervals over photos (the set and split of
`benchmarks.suite_generalization`). *quantize s*: tfquant.ptq + to_tflite; `--verify` adds the
flatbuffer check against the exact simulation (4 crops, reference kernels) to *end to end s*.
`--diagnose config[:model],...`: `tfquant.debug.diagnose` (16 evaluation crops) of each result: weights-only and
activations-only SQNR and the layers that gain most when kept in float.
`--logits DIR`: also save each model's float logits and each config's int8 logits there;
`--paired DIR --base NAME`: from those files, each config against NAME on the same crops (the
difference in agreement and in SQNR, with a paired bootstrap over photos), no quantizing.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from typing import Optional, Sequence

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

RECON = ("bias_correction", "adaround")
CONFIGS = {
    # name: tfquant.ptq options (per-channel unless said)
    "norecon": dict(steps=("cle", "bias_absorption", "bias_correction")),
    "ada200": dict(steps=RECON, adaround_iterations=200, adaround_lr=0.01),
    "mse": dict(steps=RECON, adaround_iterations=200, adaround_lr=0.01, activation_ranges="mse"),
    "percentile": dict(steps=RECON, adaround_iterations=200, adaround_lr=0.01,
                       activation_ranges="percentile"),
    "bn": dict(steps=RECON, adaround_iterations=200, adaround_lr=0.01, activation_ranges="bn"),
    "mse_logits_mse": dict(steps=RECON, adaround_iterations=200, adaround_lr=0.01,
                           activation_ranges="mse", logits_ranges="mse"),
    "mse100": dict(steps=RECON, adaround_iterations=100, adaround_lr=0.01, activation_ranges="mse"),
    "mse200_rows512": dict(steps=RECON, adaround_iterations=200, adaround_lr=0.01,
                           activation_ranges="mse", adaround_rows=512),
    "mse200_maxw": dict(steps=RECON, adaround_iterations=200, adaround_lr=0.01,
                        activation_ranges="mse", adaround_max_weights=300_000),
    "mse400": dict(steps=RECON, adaround_iterations=400, adaround_lr=0.01, activation_ranges="mse"),
    "mse_pt": dict(steps=RECON, adaround_iterations=200, adaround_lr=0.01, activation_ranges="mse",
                   per_channel=False),
    "cle_ada_pt": dict(steps=("cle", "bias_absorption") + RECON, adaround_iterations=200,
                       adaround_lr=0.01, per_channel=False),
    "cle_ada": dict(steps=("cle", "bias_absorption") + RECON, adaround_iterations=200,
                    adaround_lr=0.01),
    "pt_wmse": dict(per_channel=False, weight_ranges="mse"),
    "best": dict(activation_ranges="best"),
    "best_pt": dict(activation_ranges="best", per_channel=False),
    "best_pt_wmse": dict(activation_ranges="best", per_channel=False, weight_ranges="mse"),
    "qdrop": dict(adaround_qdrop=0.5),                       # default + QDrop input mix
    "qdrop25": dict(adaround_qdrop=0.25),
    "float_in": dict(adaround_qdrop=1.0),                    # AdaRound on the float input
    "weights_in": dict(layerwise_activations=False),         # input: weight-quantized model only
    "outq": dict(adaround_output_quant=True),                # output fake-quantized in the loss
    "qdrop_outq": dict(adaround_qdrop=0.5, adaround_output_quant=True),
    "df": dict(data_free=True, input_range=(-127.0 / 128.0, 1.0)),     # data-free (the calibration unused)
    "df_a4": dict(data_free=True, input_range=(-127.0 / 128.0, 1.0), bn_alpha=4.0),
    "df_a5": dict(data_free=True, input_range=(-127.0 / 128.0, 1.0), bn_alpha=5.0),
    "df_a8": dict(data_free=True, input_range=(-127.0 / 128.0, 1.0), bn_alpha=8.0),
    "default": dict(),
    "default_pt": dict(per_channel=False),
}


def paired_difference(reference, base, test, sources, resamples: int = 4000, seed: int = 0):
    """(agreement of test - of base, its 95% interval, SQNR dB of test - of base, its interval):
    one bootstrap over photos resampling both on the same crops."""
    import numpy as np

    reference, base, test = (np.asarray(a, np.float64) for a in (reference, base, test))
    top = np.argmax(reference, -1)
    names, index = np.unique(np.asarray(sources), return_inverse=True)
    per = [np.bincount(index, weights=w, minlength=len(names)) for w in (
        (np.argmax(test, -1) == top) - 1.0 * (np.argmax(base, -1) == top), np.ones(len(top)),
        np.sum(reference ** 2, -1), np.sum((reference - base) ** 2, -1), np.sum((reference - test) ** 2, -1))]
    draws = np.random.default_rng(seed).integers(0, len(names), size=(resamples, len(names)))
    d, n, sig, nb, nt = (p[draws].sum(1) for p in per)
    db = 10 * np.log10(nb / nt)           # SQNR(test) - SQNR(base): the signal cancels
    point = (per[0].sum() / per[1].sum(), 10 * np.log10(per[3].sum() / per[4].sum()))
    return (point[0], tuple(np.percentile(d / n, [2.5, 97.5])), point[1], tuple(np.percentile(db, [2.5, 97.5])))


def paired(directory: str, variants: Sequence[str], names: Sequence[str], base: str) -> None:
    import numpy as np

    for variant in variants:
        path = lambda tag: os.path.join(directory, f"{variant}_{tag}.npy")   # noqa: E731
        ref, sources = np.load(path("float")), np.load(path("sources"))
        for name in names:
            if name == base or not os.path.exists(path(name)):
                continue
            a, a_ci, s, s_ci = paired_difference(ref, np.load(path(base)), np.load(path(name)), sources)
            print(f"[paired] | {variant} | {name} - {base} | {100 * a:+.1f} ({100 * a_ci[0]:+.1f} to "
                  f"{100 * a_ci[1]:+.1f}) | {s:+.2f} dB ({s_ci[0]:+.2f} to {s_ci[1]:+.2f}) |", flush=True)


def measure(variants: Sequence[str], names: Sequence[str], verify: bool, diagnose: Sequence[str],
            out: Optional[str], logits: Optional[str] = None) -> None:
    from benchmarks.data.photos import evaluation_set, photo_bootstrap
    from benchmarks.models import efficientnet_lite0 as E
    from benchmarks.peers.converter_ptq import run_tflite
    import tfquant

    for variant in variants:
        data = evaluation_set(64, 6, size=E.input_size(variant))
        cal, evaluation = E.preprocess(data.calibration), E.preprocess(data.evaluation)
        float_logits = E.load_efficientnet_lite(variant).predict(evaluation, batch_size=30, verbose=0)
        saved_model = E.cached_saved_model(variant)
        if logits:
            import numpy as np

            os.makedirs(logits, exist_ok=True)
            np.save(os.path.join(logits, f"{variant}_float.npy"), float_logits)
            np.save(os.path.join(logits, f"{variant}_sources.npy"), np.asarray(data.sources))
        for name in names:
            options = dict(CONFIGS[name])
            start = time.perf_counter()
            sim = tfquant.ptq(saved_model, cal, progress=False, **options)
            tflite = sim.to_tflite()
            quant_s = time.perf_counter() - start
            exact = ""
            if verify:
                v = sim.verify(evaluation[:4], kernels=("reference",), intermediate_samples=0)
                exact = f" exact {100 * v.exact_fraction:.1f}%"
            total = time.perf_counter() - start
            int8_logits = run_tflite(tflite, evaluation)
            if logits:
                np.save(os.path.join(logits, f"{variant}_{name}.npy"), int8_logits)
            b = photo_bootstrap(float_logits, int8_logits, data.sources)
            line = (f"| {variant} | {name} | {100 * b.agreement:.1f}% ({100 * b.agreement_ci[0]:.1f}-"
                    f"{100 * b.agreement_ci[1]:.1f}) | {b.sqnr_db:.1f} ({b.sqnr_ci[0]:.1f}-{b.sqnr_ci[1]:.1f})"
                    f" | {quant_s:.0f} | {total:.0f}{exact} | {sim.report.steps} "
                    f"{ {k: round(v, 1) for k, v in sim.report.seconds.items()} } |")
            print("[recon]", line, flush=True)
            if out:
                with open(out, "a") as f:
                    f.write(line + "\n")
            if name in diagnose or f"{name}:{variant}" in diagnose:
                from tfquant.debug import diagnose as run_diagnose

                d = run_diagnose(sim, evaluation[:16], try_fix=False,
                                 check_tflite=False, top=5)
                text = f"{variant} {name}:\n{d.summary()}"
                print("[recon]", text, flush=True)
                if out:
                    with open(out, "a") as f:
                        f.write(text + "\n")


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.recon_sweep",
                                     description=__doc__.split("\n")[0])
    parser.add_argument("--models", default="lite0,lite1,lite2")
    parser.add_argument("--configs", default="mse,percentile,bn", help=", ".join(CONFIGS))
    parser.add_argument("--verify", action="store_true")
    parser.add_argument("--diagnose", default="", help="configs to diagnose")
    parser.add_argument("--out", default=None, help="append each row to this file")
    parser.add_argument("--logits", default=None, help="save the logits in this directory")
    parser.add_argument("--paired", default=None, help="compare saved logits in this directory")
    parser.add_argument("--base", default="default", help="the config --paired compares against")
    args = parser.parse_args(argv)
    from absl import logging

    logging.set_verbosity(logging.WARNING)
    split = lambda s: [x.strip() for x in s.split(",") if x.strip()]   # noqa: E731
    names = split(args.configs)
    unknown = [n for n in names if n not in CONFIGS]
    if unknown:
        parser.error(f"unknown config(s) {unknown}")
    if args.paired:
        paired(args.paired, split(args.models), names, args.base)
        return 0
    measure(split(args.models), names, args.verify, split(args.diagnose), args.out, args.logits)
    return 0


if __name__ == "__main__":
    sys.exit(main())
