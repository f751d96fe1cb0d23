"""The debugger's report: report.md with PNG plots (per-layer SQNR, range histograms of the
worst tensors, per-channel weight ranges before and after the PTQ steps), written atomically.

    >>> tfquant.debug.diagnose(result, x).write_report("report/")      # -> report/report.md
"""
from __future__ import annotations

import os

import numpy as np

from tfquant.io_utils import atomic_directory


def _plots(d, folder: str) -> list[tuple[str, str]]:
    # matplotlib's object API, not pyplot: no backend is switched (a notebook keeps showing its figures)
    from matplotlib.figure import Figure

    out = []
    layers = d.layers
    if layers:
        fig = Figure(figsize=(max(6, 0.35 * len(layers)), 4))
        ax = fig.subplots()
        idx = np.arange(len(layers))
        ax.bar(idx - 0.2, [la.only_db for la in layers], 0.4, label="only this layer quantized")
        ax.bar(idx + 0.2, [la.all_but_db for la in layers], 0.4, label="all but this layer")
        ax.axhline(d.quantized_db, color="k", lw=1, label="all quantized")
        ax.set_xticks(idx, [la.layer[-24:] for la in layers], rotation=90, fontsize=7)
        ax.set_ylabel("output SQNR (dB)")
        ax.legend(fontsize=7)
        fig.tight_layout()
        fig.savefig(os.path.join(folder, "layer_sqnr.png"), dpi=110)
        out.append(("Per-layer sensitivity", "layer_sqnr.png"))
    if d.samples_of:
        fig = Figure(figsize=(4 * len(d.samples_of), 3))
        axes = fig.subplots(1, len(d.samples_of))
        for ax, (entry, v) in zip(np.atleast_1d(axes), d.samples_of.items()):
            ax.hist(v, bins=100, log=True)
            ax.set_title(entry[-30:], fontsize=8)
        fig.tight_layout()
        fig.savefig(os.path.join(folder, "worst_ranges.png"), dpi=110)
        out.append(("Range histograms of the tensors with the most outliers", "worst_ranges.png"))
    spread = sorted(d.weight_ranges.items(), key=lambda kv: -np.max(kv[1][0]) / max(np.median(kv[1][0]), 1e-12))[:4]
    if spread:
        fig = Figure(figsize=(4 * len(spread), 3))
        axes = fig.subplots(1, len(spread))
        for ax, (name, (now, before)) in zip(np.atleast_1d(axes), spread):
            if before is not None:
                ax.bar(np.arange(before.size), before, color="tab:gray", label="imported")
            ax.bar(np.arange(now.size), now, color="tab:blue", alpha=0.7, label="quantized model")
            ax.set_title(name[-30:], fontsize=8)
            ax.set_xlabel("output channel", fontsize=7)
            ax.legend(fontsize=6)
        fig.tight_layout()
        fig.savefig(os.path.join(folder, "weight_ranges.png"), dpi=110)
        out.append(("Per-channel weight ranges (max |w|) of the widest-spread layers", "weight_ranges.png"))
    return out


def markdown(d, plots=()) -> str:
    agree = "-" if d.quantized_agreement is None else f"{100 * d.quantized_agreement:.1f}%"
    lines = [f"# tfquant.debug report ({d.route}, {d.samples} samples)", "",
             "| run | output SQNR vs float |", "|---|---|",
             f"| every quantizer bypassed vs the float model (FP32 sanity) | {d.fp32_sanity} |",
             f"| quantized (top-1 agreement {agree}) | {d.quantized_db:.1f} dB |",
             *([] if d.quantized_vs_given_db is None else
               [f"| quantized vs the float model as given | {d.quantized_vs_given_db:.1f} dB |"]),
             f"| weights only | {d.weights_only_db:.1f} dB |",
             f"| activations only | {d.activations_only_db:.1f} dB |", "", "## Suspects", ""]
    if not d.suspects:
        lines.append("No layer costs more than 0.05 dB.")
    for i, s in enumerate(d.suspects, 1):
        lines.append(f"{i}. **{s.layer}**: +{s.gain_db:.1f} dB if left in float. Cause: {s.cause}. Fix: {s.fix}.")
    if d.fixed_db is not None:
        agree = "" if d.fixed_agreement is None else f", top-1 agreement {100 * d.fixed_agreement:.1f}%"
        lines += ["", f"Tried: {d.fix_description}: {d.fixed_db:.1f} dB{agree}."]
    if d.tflite_exact is not None:
        lines += ["", "## Flatbuffer vs simulation (reference kernels)", "",
                  f"Outputs: {100 * d.tflite_exact:.2f}% of the int8 values exactly as simulated.", ""]
        if d.tensor_fidelity:
            lines += ["| tensor | exact | max LSB |", "|---|---|---|"]
            lines += [f"| {n} | {100 * e:.1f}% | {m} |" for n, e, m in sorted(d.tensor_fidelity, key=lambda t: t[1])[:20]]
    lines += ["", "## Layers", "", "| layer | only this quantized (dB) | all but this (dB) | weight range spread | output outlier ratio |",
              "|---|---|---|---|---|"]
    for la in d.layers:
        ws = "-" if la.weight_spread is None else f"{la.weight_spread:.1f}x"
        orat = "-" if la.outlier_ratio is None else f"{la.outlier_ratio:.1f}x"
        lines.append(f"| {la.layer} | {la.only_db:.1f} | {la.all_but_db:.1f} | {ws} | {orat} |")
    lines += ["", "## Tensors (most outliers first)", "", "| entry | min | max | 1% | 99% | outlier ratio |",
              "|---|---|---|---|---|---|"]
    for t in d.tensors[:20]:
        lines.append(f"| {t.entry} | {t.min:.4g} | {t.max:.4g} | {t.p_low:.4g} | {t.p_high:.4g} | {t.outlier_ratio:.1f}x |")
    for title, png in plots:
        lines += ["", f"## {title}", "", f"![{title}]({png})"]
    return "\n".join(lines) + "\n"


def write_report(d, directory) -> str:
    """Write report.md and its plots into `directory` (atomically); returns the report's path."""
    with atomic_directory(directory) as tmp:
        plots = _plots(d, tmp)
        with open(os.path.join(tmp, "report.md"), "w", encoding="utf-8") as f:
            f.write(markdown(d, plots))
    return os.path.join(os.fspath(directory), "report.md")
