"""Reconstruction settings on EfficientNet-Lite0/1/2, held-out photos (issue 13).

    python -m benchmarks.recon_sweep --configs mse,percentile --models lite0,lite1,lite2
    python -m benchmarks.recon_sweep --configs ada200 --models lite1 --diagnose ada200:lite1

Each config is quantized once per model from the cached SavedModel (64 calibration crops of the
calibration photos) and evaluated on the 180 held-out crops under XNNPACK: top-1 agreement with
the float Keras model and logit SQNR, 95% bootstrap intervals over photos (the set and split of
`benchmarks.suite_generalization`). *quantize s*: tfquant.ptq + to_tflite; `--verify` adds the
flatbuffer check against the exact simulation (4 crops, reference kernels) to *end to end s*.
`--save-logits DIR` keeps each config's int8 logits; `--paired A:B --save-logits DIR` then gives
agreement(A) - agreement(B) and SQNR(A) - SQNR(B) with a paired bootstrap over photos (the same
crops: far tighter than the two intervals). `--float-check`: also the transformed float model's
agreement (float'; CLE changes it where a ReLU6 clip is not where calibration saw it).
`--diagnose config[:model],...`: `tfquant.debug.diagnose` (16 evaluation crops) of each result: weights-only and
activations-only SQNR and the layers that gain most when kept in float.
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
    "ada500": dict(adaround_iterations=500),                 # the default with more iterations
    "ada1000": dict(adaround_iterations=1000),
    "default_pt": dict(per_channel=False),      # per-tensor weights: MSE by default (was min-max)
    "pt_wminmax": dict(per_channel=False, weight_ranges="minmax"),
    # per-tensor: where does CLE's damage come from (issue 13; relu6_policy "bounded" unless said)
    "naive_pt": dict(steps=(), per_channel=False),
    "cle_naive_pt": dict(steps=("cle",), per_channel=False),
    "cle_ba_naive_pt": dict(steps=("cle", "bias_absorption"), per_channel=False),
    "cle_relu_naive_pt": dict(steps=("cle",), per_channel=False, relu6_policy="relu"),
    "cle_noab_naive_pt": dict(steps=("cle",), per_channel=False, cle_activation_bound=False),
    "cle_h50_naive_pt": dict(steps=("cle",), per_channel=False, relu6_headroom=0.5),
    "cle_h75_naive_pt": dict(steps=("cle",), per_channel=False, relu6_headroom=0.75),
    "cle_h25_naive_pt": dict(steps=("cle",), per_channel=False, relu6_headroom=0.25),
    "cle_ada_noba_pt": dict(steps=("cle",) + RECON, per_channel=False),
    "cle_ada_noba_pt_wmse": dict(steps=("cle",) + RECON, per_channel=False, weight_ranges="mse"),
}


def _logits(outputs):
    """The one output of a SavedModel signature (a dict) or of a function, as numpy."""
    if isinstance(outputs, dict):
        (outputs,) = outputs.values()
    return outputs.numpy()


def measure(variants: Sequence[str], names: Sequence[str], verify: bool, diagnose: Sequence[str],
            out: Optional[str], float_check: bool = False, save_logits: Optional[str] = None) -> None:
    import numpy as np

    from benchmarks.data.photos import evaluation_set, photo_bootstrap
    from benchmarks.models import efficientnet_lite0 as E
    from benchmarks.peers.converter_ptq import run_tflite
    import tfquant

    for variant in variants:
        data = evaluation_set(64, 6, size=E.input_size(variant))
        cal, evaluation = E.preprocess(data.calibration), E.preprocess(data.evaluation)
        float_logits = E.load_efficientnet_lite(variant).predict(evaluation, batch_size=30, verbose=0)
        saved_model = E.cached_saved_model(variant)
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
            b = photo_bootstrap(float_logits, int8_logits, data.sources)
            if save_logits:
                os.makedirs(save_logits, exist_ok=True)
                np.save(os.path.join(save_logits, f"{variant}_{name}.npy"), int8_logits)
                np.save(os.path.join(save_logits, f"{variant}_float.npy"), float_logits)
                np.save(os.path.join(save_logits, f"{variant}_sources.npy"), np.asarray(data.sources))
            if float_check:   # the transformed float model (CLE, absorption, corrected biases)
                transformed = np.concatenate([_logits(sim.float_model(evaluation[i:i + 30]))
                                              for i in range(0, len(evaluation), 30)])
                f = photo_bootstrap(float_logits, transformed, data.sources)
                exact += f" float' {100 * f.agreement:.1f}% {f.sqnr_db:.1f} dB"
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


def paired(variants: Sequence[str], a: str, b: str, directory: str) -> None:
    """Paired bootstrap over photos of config a minus config b from `--save-logits` files."""
    import numpy as np

    for variant in variants:
        load = lambda name: np.load(os.path.join(directory, f"{variant}_{name}.npy"))  # noqa: E731
        ref, src, la, lb = load("float"), load("sources"), load(a), load(b)
        top = ref.argmax(-1)
        hits_a, hits_b = (la.argmax(-1) == top).astype(float), (lb.argmax(-1) == top).astype(float)
        signal, noise_a, noise_b = (ref ** 2).sum(-1), ((ref - la) ** 2).sum(-1), ((ref - lb) ** 2).sum(-1)
        names, index = np.unique(src, return_inverse=True)
        per = [np.bincount(index, weights=w, minlength=len(names))
               for w in (hits_a, hits_b, np.ones(len(top)), signal, noise_a, noise_b)]
        draws = np.random.default_rng(0).integers(0, len(names), size=(4000, len(names)))
        pa, pb, n, _, na, nb = (p[draws].sum(1) for p in per)
        d_agree, d_sqnr = 100 * (pa - pb) / n, 10 * np.log10(nb / na)
        print(f"[paired] {variant} {a} - {b}: agreement {100 * (hits_a.mean() - hits_b.mean()):+.1f} points "
              f"({np.percentile(d_agree, 2.5):+.1f}..{np.percentile(d_agree, 97.5):+.1f}), SQNR "
              f"{10 * np.log10(noise_b.sum() / noise_a.sum()):+.2f} dB ({np.percentile(d_sqnr, 2.5):+.2f}.."
              f"{np.percentile(d_sqnr, 97.5):+.2f})", flush=True)


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.recon_sweep",
                                     description=__doc__.split("\n")[0])
    parser.add_argument("--models", default="lite0,lite1,lite2")
    parser.add_argument("--configs", default="mse,percentile,bn", help=", ".join(CONFIGS))
    parser.add_argument("--verify", action="store_true")
    parser.add_argument("--diagnose", default="", help="configs to diagnose")
    parser.add_argument("--out", default=None, help="append each row to this file")
    parser.add_argument("--float-check", action="store_true",
                        help="also the agreement of the transformed float model (float')")
    parser.add_argument("--save-logits", default=None,
                        help="save each config's int8 logits (MODEL_CONFIG.npy) there, for paired comparisons")
    parser.add_argument("--paired", default=None, help="A:B: compare two configs' saved logits")
    args = parser.parse_args(argv)
    split = lambda s: [x.strip() for x in s.split(",") if x.strip()]   # noqa: E731
    if args.paired:
        if not args.save_logits or ":" not in args.paired:
            parser.error("--paired A:B needs --save-logits DIR (where the runs saved their logits)")
        paired(split(args.models), *args.paired.split(":", 1), args.save_logits)
        return 0
    from absl import logging

    logging.set_verbosity(logging.WARNING)
    names = split(args.configs)
    unknown = [n for n in names if n not in CONFIGS]
    if unknown:
        parser.error(f"unknown config(s) {unknown}")
    measure(split(args.models), names, args.verify, split(args.diagnose), args.out,
            args.float_check, args.save_logits)
    return 0


if __name__ == "__main__":
    sys.exit(main())
