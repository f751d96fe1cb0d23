"""The Colab tutorials in tutorials/: each notebook runs top to bottom offline (nbclient, a fresh
python3 kernel, cwd a temporary directory) without a cell error, and the repository's copies are
stripped (no outputs, no execution counts)."""
import os

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TUTORIALS = os.path.join(REPO, "tutorials")
NOTEBOOKS = sorted(f for f in os.listdir(TUTORIALS) if f.endswith(".ipynb"))
SLOW = {"01_qat_fashion_mnist.ipynb", "02_ptq_efficientnet_lite0.ipynb"}   # minutes on 2 cores: -m slow
CELL_TIMEOUT = 900                                # seconds, per cell


def test_the_three_tutorials_are_there():
    assert NOTEBOOKS == ["01_qat_fashion_mnist.ipynb", "02_ptq_efficientnet_lite0.ipynb", "03_debugging.ipynb"]


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_notebook_is_stripped(name):
    nb = nbformat.read(os.path.join(TUTORIALS, name), as_version=4)
    nbformat.validate(nb)
    assert nb.metadata.kernelspec.name == "python3"
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert code and nb.cells[0].cell_type == "markdown"
    for i, cell in enumerate(code):
        assert cell.outputs == [] and cell.execution_count is None, f"{name}: code cell {i} has outputs"
    # the first code cell is the install cell: a no-op when tfquant is importable
    assert "find_spec(\"tfquant\") is None" in code[0].source


def _execute(name, tmp_path, monkeypatch):
    monkeypatch.setenv("TFQUANT_SOURCE", REPO)           # the install cell finds this checkout there
    monkeypatch.setenv("TF_CPP_MIN_LOG_LEVEL", "3")
    nb = nbformat.read(os.path.join(TUTORIALS, name), as_version=4)
    client = nbclient.NotebookClient(nb, timeout=CELL_TIMEOUT, kernel_name="python3",
                                     resources={"metadata": {"path": str(tmp_path)}})
    client.execute()                                     # raises CellExecutionError on any cell error
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    return nb, outputs


def _text(outputs) -> str:
    return "".join(o.get("text", "") for o in outputs if o.output_type == "stream")


def _images(outputs) -> int:
    return sum("image/png" in o.get("data", {}) for o in outputs if o.output_type == "display_data")


@pytest.mark.parametrize("name", [pytest.param(n, marks=pytest.mark.slow) if n in SLOW else n for n in NOTEBOOKS])
def test_notebook_runs_top_to_bottom(name, tmp_path, monkeypatch):
    nb, outputs = _execute(name, tmp_path, monkeypatch)
    text = _text(outputs)
    assert "verify:" in text                             # every tutorial prints a verify table
    assert _images(outputs) >= 1                         # and shows at least one figure
    assert [f for f in os.listdir(tmp_path) if f.endswith(".tflite")]   # and writes its flatbuffer
