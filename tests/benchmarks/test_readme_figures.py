"""README.md's headline block is written from BENCHMARKS.md, and only that block."""
import os

import pytest

from benchmarks.readme_figures import BEGIN, END, FiguresError, headline, main, rewrite_block, update_readme

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

HEAD = "| route | top-1 agreement | 95% interval | logit SQNR dB | sim=TFLite exact | quantize s | note |\n|---|---|---|---|---|---|---|\n"
BENCH = ("# Benchmarks\n\nWritten by `python -m benchmarks.run`. Machine: Test CPU; 2 cores.\n\n"
         "## EfficientNet-Lite0 on real photos (W8A8)\n\nText.\n\n" + HEAD +
         "| float TFLite | 100.0% | 100.0-100.0% | 110.0 | - | - |  |\n"
         "| TFLite converter PTQ per-channel | 80.0% | 70.0-90.0% | 15.0 | - | 10.0 |  |\n"
         "| TFLite converter PTQ per-tensor | 50.0% | 30.0-70.0% | 4.0 | - | 10.0 |  |\n"
         "| tfquant PTQ per-tensor: naive | 49.0% | 30.0-69.0% | 4.1 | 100.00% | 11.0 |  |\n"
         "| tfquant PTQ per-tensor: +CLE | 71.0% | 55.0-86.0% | 8.0 | 99.50% | 12.0 |  |\n"
         "| tfquant PTQ per-tensor: +AdaRound | 70.0% | 55.0-85.0% | 9.0 | 100.00% | 90.0 |  |\n"
         "| tfquant PTQ per-channel: default pipeline | 93.0% | 90.0-96.0% | 20.0 | 100.00% | 30.0 |  |\n"
         "| tfquant PTQ per-channel: AdaRound | 97.5% | 95.0-99.0% | 26.0 | 100.00% | 700.0 |  |\n"
         "| tfquant PTQ per-channel + automatic mixed precision | 99.0% | 98.0-100.0% | 30.0 | - | 200.0 |  |\n"
         "| tfquant PTQ data-free (per-channel) | 88.0% | 80.0-95.0% | 19.0 | 100.00% | 6.0 |  |\n\n"
         "## Fashion-MNIST, MobileNet-style network\n\n"
         "| route | TFLite accuracy | sim=TFLite exact | QAT step / float |\n|---|---|---|---|\n"
         "| float TFLite | 90.00% | - | - |\n"
         "| TFMOT 0.8.1 QAT W8A8 (1 epoch, tf_keras) | 90.20% | 40.00% | 1.30x |\n"
         "| tfquant QAT W8A8 (1 epoch) | 90.10% | 100.00% | 0.60x |\n\n"
         "| start | seed 0 | seed 1 | mean |\n|---|---|---|---|\n| QAT from scratch | 90.10% | 90.00% | 90.05% |\n")
README = f"# tool\n\nIntro.\n\n## Figures\n\n{BEGIN}\nold figures\n{END}\n\n## Tutorials\n\nSomeone else's text.\n"


def test_the_block_holds_the_figures_of_the_benchmarks_and_nothing_else_changes():
    new = rewrite_block(README, headline(BENCH))
    before, after = README.split(BEGIN)[0], README.split(END)[1]
    assert new.startswith(before + BEGIN + "\n") and new.endswith(END + after)
    block = new[len(before + BEGIN):-len(END + after)]
    assert "old figures" not in block and "Test CPU; 2 cores" in block
    rows = {r.split(" | ")[0].lstrip("| "): r for r in block.splitlines() if r.startswith("| ")}
    # the best per-channel route by agreement, not the mixed-precision row (not a ':' route) ...
    assert rows["EfficientNet-Lite0, PTQ W8A8, per-channel weights"] == (
        "| EfficientNet-Lite0, PTQ W8A8, per-channel weights | 97.5% (95.0-99.0%), 26.0 dB (AdaRound, 700.0 s) "
        "| TFLite converter: 80.0% (70.0-90.0%), 15.0 dB |")
    # ... a cumulative '+step' route named with the steps above it
    assert "71.0% (55.0-86.0%), 8.0 dB (CLE) | TFLite converter: 50.0% (30.0-70.0%), 4.0 dB" in \
        rows["EfficientNet-Lite0, PTQ W8A8, per-tensor weights"]
    assert "93.0% (90.0-96.0%), 20.0 dB (30.0 s)" in rows["the same, tfquant's default pipeline"]
    assert "88.0% (80.0-95.0%), 19.0 dB" in rows["EfficientNet-Lite0, data-free PTQ (no calibration data)"]
    assert "99.50% to 100.00% over 6 tfquant PTQ routes" in rows[
        "int8 outputs the simulation predicts exactly (reference kernels)"]
    assert rows["Fashion-MNIST QAT W8A8, 1 epoch: TFLite test accuracy (float 90.00%)"].endswith(
        "| 90.10%; mean of 2 seeds 90.05% | TFMOT 0.8.1: 90.20% |")
    assert rows["the same: QAT training step time / float"].endswith("| 0.60x | TFMOT 0.8.1: 1.30x |")
    assert rewrite_block(new, headline(BENCH)) == new                 # idempotent


@pytest.mark.parametrize("readme, found", [
    ("# tool\n\nno markers\n", "found 0 and 0"),
    (f"# tool\n{END}\nx\n{BEGIN}\n", "found 1 and 1, in the wrong order"),
    (f"{BEGIN}\n{END}\n{BEGIN}\n{END}\n", "found 2 and 2"),
])
def test_missing_or_misplaced_markers_fail_clearly(readme, found):
    with pytest.raises(FiguresError, match=f"README.md needs one {BEGIN} line followed by one {END} line "
                                           rf"\({found}\)"):
        rewrite_block(readme, "x")


def test_a_benchmark_row_that_is_missing_is_named():
    with pytest.raises(FiguresError, match=r"no row 'tfquant PTQ data-free'\.\.\. \(column 'route'\)"):
        headline(BENCH.replace("| tfquant PTQ data-free (per-channel)", "| something else"))
    with pytest.raises(FiguresError, match="no table with a 'TFLite accuracy' column under a '## Fashion-MNIST"):
        headline(BENCH.split("## Fashion-MNIST")[0])


def test_update_readme_and_the_command(tmp_path, capsys):
    bench, readme = tmp_path / "BENCHMARKS.md", tmp_path / "README.md"
    bench.write_text(BENCH)
    readme.write_text(README)
    body = update_readme(str(bench), str(readme))
    assert readme.read_text() == rewrite_block(README, body) and "97.5%" in body
    readme.write_text("no markers\n")
    assert main(["--benchmarks", str(bench), "--readme", str(readme)]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("readme_figures: error: README.md needs one")
    assert readme.read_text() == "no markers\n"
    assert main(["--benchmarks", str(tmp_path / "missing.md"), "--readme", str(readme)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("readme_figures: error: cannot read ") and "missing.md" in err and err.count("\n") == 1


def test_the_committed_readme_holds_the_committed_benchmarks_figures():
    with open(os.path.join(ROOT, "README.md")) as f:
        text = f.read()
    with open(os.path.join(ROOT, "BENCHMARKS.md")) as f:
        assert rewrite_block(text, headline(f.read())) == text, "run python -m benchmarks.readme_figures"
