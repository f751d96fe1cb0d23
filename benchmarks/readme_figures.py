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


def _pct(cell: str) -> float:
    try:
        return float(cell.rstrip("%"))
    except ValueError:
        raise FiguresError(f"BENCHMARKS.md cell {cell!r} is not a percentage.") from None


def _agreement(row: dict[str, str]) -> str:
    return f"{row['top-1 agreement']} ({row['95% interval']}), {row['logit SQNR dB']} dB"


def headline(benchmarks: str) -> str:
    """The headline block's markdown from the text of BENCHMARKS.md: the best tfquant PTQ routes
    on EfficientNet-Lite0 beside the TFLite converter's PTQ, the simulation's fidelity, and QAT on
    Fashion-MNIST beside TFMOT."""
    found = tables(benchmarks)
    eff = _table(found, "EfficientNet-Lite0", "top-1 agreement")
    fm = _table(found, "Fashion-MNIST", "TFLite accuracy")
    machine = re.search(r"Machine: (.*?)\.\s*$", benchmarks, re.M)
    ours = [r for r in eff if r["route"].startswith("tfquant PTQ")]

    def best(prefix: str) -> dict[str, str]:
        rows = [r for r in ours if r["route"].startswith(prefix) and r["top-1 agreement"] != "-"]
        if not rows:
            raise FiguresError(f"BENCHMARKS.md has no {prefix!r} row with a top-1 agreement.")
        return max(rows, key=lambda r: _pct(r["top-1 agreement"]))

    per_channel, per_tensor = best("tfquant PTQ per-channel:"), best("tfquant PTQ per-tensor:")
    default = _row(eff, "tfquant PTQ per-channel: default pipeline")
    data_free = _row(eff, "tfquant PTQ data-free")
    exact = [_pct(r["sim=TFLite exact"]) for r in ours if r["sim=TFLite exact"] != "-"]
    if not exact:
        raise FiguresError("BENCHMARKS.md has no tfquant PTQ row with a sim=TFLite exact figure.")
    exact_text = (f"{min(exact):.2f}% on each of the {len(exact)} tfquant PTQ routes measured"
                  if min(exact) == max(exact)
                  else f"{min(exact):.2f}% to {max(exact):.2f}% over {len(exact)} tfquant PTQ routes")
    conv_pc, conv_pt = _row(eff, "TFLite converter PTQ per-channel"), _row(eff, "TFLite converter PTQ per-tensor")
    qat, tfmot, flt = _row(fm, "tfquant QAT W8A8"), _row(fm, "TFMOT"), _row(fm, "float TFLite")
    tfmot_name = tfmot["route"].split(" QAT")[0]
    seeds: Optional[str] = None
    try:
        seed_row = _row(_table(found, "Fashion-MNIST", "start"), "QAT from scratch", "start")
        runs = [k for k in seed_row if k.startswith("seed ")]
        seeds = f"; mean of {len(runs)} seeds {seed_row['mean']}"
    except FiguresError:
        pass

    def label(row):
        """The route's steps; rows named "+step" add one step to the rows above them."""
        name = row["route"].split(": ", 1)[-1]
        if not name.startswith("+"):
            return name
        group = row["route"].split(": ", 1)[0] + ": +"
        above = [r["route"] for r in eff[:eff.index(row) + 1] if r["route"].startswith(group)]
        return ", ".join(r.split(": +", 1)[1] for r in above)

    lines = [
        "<!-- written by `python -m benchmarks.readme_figures` from BENCHMARKS.md: do not edit by hand -->",
        "Headline figures from `BENCHMARKS.md` (one run of `python -m benchmarks.run`"
        + (f"; {machine.group(1)}" if machine else "") + "). Top-1 agreement with the float model, its 95% "
        "interval (8 photos: wide) and the logit SQNR:",
        "",
        "| | tfquant | peer |",
        "|---|---|---|",
        f"| EfficientNet-Lite0, PTQ W8A8, per-channel weights | {_agreement(per_channel)} ({label(per_channel)}, "
        f"{per_channel['quantize s']} s) | TFLite converter: {_agreement(conv_pc)} |",
        f"| the same, tfquant's default pipeline | {_agreement(default)} ({default['quantize s']} s) | |",
        f"| EfficientNet-Lite0, PTQ W8A8, per-tensor weights | {_agreement(per_tensor)} ({label(per_tensor)}) | "
        f"TFLite converter: {_agreement(conv_pt)} |",
        f"| EfficientNet-Lite0, data-free PTQ (no calibration data) | {_agreement(data_free)} | "
        "TFLite converter: needs a representative dataset |",
        f"| int8 outputs the simulation predicts exactly (reference kernels) | {exact_text} | "
        "TFLite converter: no simulation |",
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
