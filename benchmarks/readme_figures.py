"""The README's headline figures, taken from BENCHMARKS.md (never typed by hand).

    python -m benchmarks.readme_figures                      # README.md's block from BENCHMARKS.md
    python -m benchmarks.readme_figures --benchmarks B.md --readme R.md

`benchmarks.run` calls `update_readme` at the end of a full run. Only the text between the markers
`<!-- headline:begin -->` and `<!-- headline:end -->` in the README is rewritten.
"""
from __future__ import annotations

import re
import sys
from typing import Optional

BEGIN, END = "<!-- headline:begin -->", "<!-- headline:end -->"


class FiguresError(ValueError):
    """BENCHMARKS.md or README.md is not what the headline block is made from / written into."""


def tables(markdown: str) -> dict[str, list[list[dict[str, str]]]]:
    """The markdown tables of each `## ` section: {heading: [table, ...]}, a table a list of
    {column header: cell} rows.

        >>> tables(open("BENCHMARKS.md").read())["EfficientNet-Lite0 on real photos (W8A8)"][0][0]["route"]
        'float TFLite'
    """
    found: dict[str, list[list[dict[str, str]]]] = {}
    heading, header, rows = "", None, None
    for line in markdown.splitlines() + [""]:
        if line.startswith("## "):
            heading = line[3:].strip()
        cells = [c.strip() for c in line.strip()[1:-1].split("|")] if line.strip().startswith("|") else None
        if cells is None:
            if rows is not None:
                found.setdefault(heading, []).append(rows)
            header, rows = None, None
        elif header is None:
            header = cells
        elif rows is None and all(set(c) <= set("-:") for c in cells):
            rows = []
        elif rows is not None:
            rows.append(dict(zip(header, cells)))
    return found


def _table(found: dict, heading_prefix: str, column: str) -> list[dict[str, str]]:
    for heading, tabs in found.items():
        if heading.startswith(heading_prefix):
            for table in tabs:
                if table and column in table[0]:
                    return table
    raise FiguresError(f"BENCHMARKS.md has no table with a {column!r} column under a '## {heading_prefix}...' "
                       "heading: write it with a full `python -m benchmarks.run`.")


def _row(table: list[dict[str, str]], prefix: str, column: str = "route") -> dict[str, str]:
    for row in table:
        if row.get(column, "").startswith(prefix):
            return row
    raise FiguresError(f"BENCHMARKS.md has no row {prefix!r}... (column {column!r}): write it with a full "
                       "`python -m benchmarks.run`.")


GENERALIZATION = "Generalization"
HELD_OUT_ROUTES = (   # (summary row prefix in BENCHMARKS.md, its name in the headline)
    ("tfquant default pipeline per-channel", "tfquant PTQ, default pipeline, per-channel weights"),
    ("tfquant default pipeline per-tensor", "tfquant PTQ, default pipeline, per-tensor weights"),
    ("tfquant data-free", "tfquant PTQ, data-free (no calibration data)"),
    ("TFLite converter PTQ per-channel", "TFLite converter PTQ, per-channel weights"),
)


def _held_out_lines(found: dict) -> list[str]:
    """EfficientNet-Lite0/1/2 on photos the calibration never saw: the generalization section's
    summary rows, with the default pipeline's end-to-end seconds from the per-model tables."""
    summary = _table(found, GENERALIZATION, "route")
    models = [k for k in summary[0] if k != "route"]
    per_model = [t for t in found[next(h for h in found if h.startswith(GENERALIZATION))]
                 if t and "end to end s" in t[0]]
    seconds, exact = {}, {}
    for model in models:
        for table in per_model:
            if table[0]["route"].startswith(model + ":"):
                row = _row(table, f"{model}: {HELD_OUT_ROUTES[0][0]}")
                seconds[model], exact[model] = row["end to end s"], row.get("sim=TFLite exact", "-")
    lines = ["| " + " | ".join(["held-out photos"] + models) + " |", "|---" * (len(models) + 1) + "|"]
    for prefix, name in HELD_OUT_ROUTES:
        row = _row(summary, prefix)
        lines.append("| " + " | ".join([name] + [row[m] for m in models]) + " |")
    if seconds:
        lines.append("| " + " | ".join(["the default pipeline end to end, s (SavedModel to verified flatbuffer)"]
                                       + [seconds.get(m, "-") for m in models]) + " |")
        lines.append("| " + " | ".join(["the same: int8 outputs the simulation predicts exactly (reference kernels)"]
                                       + [exact.get(m, "-") for m in models]) + " |")
    return lines


def _applications_text(found: dict) -> tuple[str, str, str]:
    """(label, tfquant, converter) cells: how many Keras applications each tfquant route leaves with no
    more float ops than the converter and exact under the reference kernels."""
    table = _table(found, "Keras applications", "model")
    converter = next(k for k in table[0] if k.startswith("converter"))
    routes = [k for k in table[0] if k.startswith("tfquant")]

    def float_ops(cell: str) -> int:
        try:
            return int(cell.split(";")[0].split()[0])
        except (ValueError, IndexError):
            raise FiguresError(f"BENCHMARKS.md Keras applications cell {cell!r} does not start with a float-op "
                               "count.") from None

    measured = [r for r in table if all(r[k] not in ("", "-") for k in routes + [converter])]
    good = [r for r in measured if all(float_ops(r[k]) <= float_ops(r[converter]) and "100.0%, 0 LSB" in r[k]
                                       for k in routes)]
    int8 = sum(float_ops(r[converter]) == 0 for r in measured)
    names = " and ".join(k.replace("tfquant ", "") for k in routes)
    return (f"Keras applications ({len(measured)} measured): {names} fully int8 and bit exact",
            f"{len(good)} of {len(measured)}: {names} leave no more float ops than the converter, and "
            "every output is exact (0 LSB)",
            f"TFLite converter: {int8} of {len(measured)} fully int8, no simulation")


def headline(benchmarks: str) -> str:
    """The headline block's markdown from the text of BENCHMARKS.md: tfquant's PTQ on
    EfficientNet-Lite0/1/2 on held-out photos beside the TFLite converter's PTQ, the Keras
    applications' coverage and exactness, and QAT on Fashion-MNIST beside TFMOT."""
    found = tables(benchmarks)
    fm = _table(found, "Fashion-MNIST", "TFLite accuracy")
    machine = re.search(r"Machine: (.*?)\.\s*$", benchmarks, re.M)
    apps_label, apps, apps_peer = _applications_text(found)
    qat, tfmot, flt = _row(fm, "tfquant QAT W8A8"), _row(fm, "TFMOT"), _row(fm, "float TFLite")
    tfmot_name = tfmot["route"].split(" QAT")[0]
    seeds: Optional[str] = None
    try:
        seed_row = _row(_table(found, "Fashion-MNIST", "start"), "QAT from scratch", "start")
        runs = [k for k in seed_row if k.startswith("seed ")]
        seeds = f"; mean of {len(runs)} seeds {seed_row['mean']}"
    except FiguresError:
        pass
    lines = [
        "<!-- written by `python -m benchmarks.readme_figures` from BENCHMARKS.md: do not edit by hand -->",
        "Headline figures from `BENCHMARKS.md`" + (f" ({machine.group(1)})" if machine else "") + ". "
        "EfficientNet-Lite0/1/2, PTQ W8A8, on photos the calibration never saw: top-1 agreement with the float "
        "model (95% interval over photos) and logit SQNR, int8 under the default (XNNPACK) kernels:",
        "",
        *_held_out_lines(found),
        "",
        "| | tfquant | peer |",
        "|---|---|---|",
        f"| {apps_label} | {apps} | {apps_peer} |",
        f"| Fashion-MNIST QAT W8A8, 1 epoch: TFLite test accuracy (float {flt['TFLite accuracy']}) | "
        f"{qat['TFLite accuracy']}{seeds or ''} | {tfmot_name}: {tfmot['TFLite accuracy']} |",
        f"| the same: int8 outputs of the QAT model equal to its flatbuffer's | {qat['sim=TFLite exact']} | "
        f"{tfmot_name}: {tfmot['sim=TFLite exact']} |",
        f"| the same: QAT training step time / float | {qat['QAT step / float']} | "
        f"{tfmot_name}: {tfmot['QAT step / float']} |",
    ]
    return "\n".join(lines)


def rewrite_block(readme: str, body: str) -> str:
    """`readme` with the text between the headline markers replaced by `body` (the markers and
    everything outside them kept)."""
    begins, ends = readme.count(BEGIN), readme.count(END)
    if begins != 1 or ends != 1 or readme.index(BEGIN) > readme.index(END):
        raise FiguresError(f"README.md needs one {BEGIN} line followed by one {END} line (found {begins} and "
                           f"{ends}{', in the wrong order' if begins == ends == 1 else ''}): add them where the "
                           "headline figures go.")
    head, rest = readme.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    return f"{head}{BEGIN}\n{body.strip()}\n{END}{tail}"


def update_readme(benchmarks: str = "BENCHMARKS.md", readme: str = "README.md") -> str:
    """Rewrite `readme`'s headline block from the figures in `benchmarks` (atomically); returns
    the block written."""
    from tfquant.io_utils import write_bytes_atomic

    try:
        with open(benchmarks) as f:
            body = headline(f.read())
        with open(readme) as f:
            text = f.read()
    except OSError as e:
        raise FiguresError(f"cannot read {e.filename!r}: {e.strerror}.") from None
    new = rewrite_block(text, body)
    if new != text:
        write_bytes_atomic(readme, new.encode())
    return body


def main(argv: list[str]) -> int:
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--benchmarks", default="BENCHMARKS.md")
    parser.add_argument("--readme", default="README.md")
    args = parser.parse_args(argv)
    try:
        update_readme(args.benchmarks, args.readme)
    except FiguresError as e:
        print(f"readme_figures: error: {e}", file=sys.stderr)
        return 1
    print(f"wrote the headline block of {args.readme} from {args.benchmarks}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
