"""README.md's headline block is written from BENCHMARKS.md, and only that block."""
import os

import pytest

from benchmarks.readme_figures import BEGIN, END, FiguresError, headline, main, rewrite_block, update_readme

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

def _model_table(model: str) -> str:
    return ("| route | top-1 agreement | sim=TFLite exact | end to end s |\n|---|---|---|---|\n"
            f"| {model}: TFLite converter PTQ per-channel | 80.0% | - | - |\n"
            f"| {model}: tfquant default pipeline per-channel | 95.0% | 100.00% | {len(model)}.5 |\n")


SUMMARY = ("| route | Lite0 | Lite1 |\n|---|---|---|\n"
           "| TFLite converter PTQ per-channel | 85.0% (78.9-90.6), 16.6 dB | 82.8% (76.1-89.4), 15.0 dB |\n"
           "| tfquant default pipeline per-channel | 96.1% (92.8-98.9), 24.4 dB | 92.8% (88.3-96.7), 22.7 dB |\n"
           "| tfquant default pipeline per-tensor | 90.0% (85.0-94.0), 18.0 dB | 88.0% (80.0-93.0), 17.0 dB |\n"
           "| tfquant data-free (per-channel) | 88.3% (82.8-92.8), 19.4 dB | 85.0% (78.9-91.1), 17.4 dB |\n")
APPS = ("| model | tfquant PTQ | tfquant QAT | converter PTQ |\n|---|---|---|---|\n"
        "| MobileNet | 0; 100.0%, 0 LSB; 3436 KB, 0.82 ms | 0; 100.0%, 0 LSB; 3448 KB, 0.80 ms | 0; 3448 KB, 0.87 ms |\n"
        "| ConvNeXtTiny | 23 (NEG x23); 100.0%, 0 LSB; 1 KB, 2 ms | 23 (NEG x23); 100.0%, 0 LSB; 1 KB, 2 ms | "
        "23 (NEG x23); 1 KB, 2 ms |\n"
        "| DenseNet121 | 0; 96.0%, 1 LSB; 1 KB, 2 ms | 0; 100.0%, 0 LSB; 1 KB, 2 ms | 0; 1 KB, 2 ms |\n"
        "| Xception | 0; 100.0%, 0 LSB; 1 KB, 2 ms | - | 0; 1 KB, 2 ms |\n")
BENCH = ("# Benchmarks\n\nWritten by `python -m benchmarks.run`. Machine: Test CPU; 2 cores.\n\n"
         "## Generalization: held out (W8A8)\n\nText.\n\n" + SUMMARY + "\n### Lite0\n\n" + _model_table("Lite0")
         + "\n### Lite1\n\n" + _model_table("Lite1") + "\n"
         "## Keras applications: float ops\n\n" + APPS + "\n"
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
    # the held-out summary, one column per model, in the order of the headline's routes
    assert rows["held-out photos"] == "| held-out photos | Lite0 | Lite1 |"
    assert rows["tfquant PTQ, default pipeline, per-channel weights"] == (
        "| tfquant PTQ, default pipeline, per-channel weights | 96.1% (92.8-98.9), 24.4 dB | 92.8% (88.3-96.7), 22.7 dB |")
    assert "| 90.0% (85.0-94.0), 18.0 dB |" in rows["tfquant PTQ, default pipeline, per-tensor weights"]
    assert "| 88.3% (82.8-92.8), 19.4 dB |" in rows["tfquant PTQ, data-free (no calibration data)"]
    assert rows["TFLite converter PTQ, per-channel weights"].endswith("| 82.8% (76.1-89.4), 15.0 dB |")
    # end-to-end seconds and exactness from each model's own table
    assert rows["the default pipeline end to end, s (SavedModel to verified flatbuffer)"].endswith("| 5.5 | 5.5 |")
    assert [r for r in block.splitlines() if r.startswith("| held-out") or r.startswith("| tfquant PTQ")][1:] == [
        rows[k] for k in ("tfquant PTQ, default pipeline, per-channel weights",
                          "tfquant PTQ, default pipeline, per-tensor weights", "tfquant PTQ, data-free (no calibration data)")]
    # the applications: Xception has no QAT cell (not counted); DenseNet121's PTQ is not exact;
    # ConvNeXt's 23 float ops are the converter's own
    apps = rows["Keras applications (3 measured): PTQ and QAT fully int8 and bit exact"]
    assert "| 2 of 3: PTQ and QAT leave no more float ops" in apps
    assert apps.endswith("| TFLite converter: 2 of 3 fully int8, no simulation |")
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
    with pytest.raises(FiguresError, match=r"no row 'tfquant data-free'\.\.\. \(column 'route'\)"):
        headline(BENCH.replace("| tfquant data-free (per-channel)", "| something else"))
    with pytest.raises(FiguresError, match="no table with a 'model' column under a '## Keras applications"):
        headline(BENCH.replace("| model |", "| net |"))
    with pytest.raises(FiguresError, match="no table with a 'TFLite accuracy' column under a '## Fashion-MNIST"):
        headline(BENCH.split("## Fashion-MNIST")[0])


def test_update_readme_and_the_command(tmp_path, capsys):
    bench, readme = tmp_path / "BENCHMARKS.md", tmp_path / "README.md"
    bench.write_text(BENCH)
    readme.write_text(README)
    body = update_readme(str(bench), str(readme))
    assert readme.read_text() == rewrite_block(README, body) and "96.1%" in body
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
