"""The walkthrough notebooks: stored clean, set up for Colab, and executed top to bottom in FAST mode.

Each notebook runs in a fresh Jupyter kernel (nbclient) in its own empty working folder, with
``VIRTUAL_IHC_FAST=1`` (tiny models, a few steps, small tiles), so every cell of every notebook is
run by the suite; any cell error fails the test with the cell and its traceback.
"""

import ast
import base64
import re
from pathlib import Path

import nbformat
import pytest

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"
NAMES = ["01_quickstart", "02_prepare_slides", "03_evaluate_and_ablate", "04_whole_slide_and_serving",
         "05_style_transfer_baseline"]


def read(name: str):
    return nbformat.read(NOTEBOOKS / f"{name}.ipynb", as_version=4)


def code_cells(notebook) -> list:
    return [cell for cell in notebook.cells if cell.cell_type == "code"]


def test_the_five_walkthroughs_are_the_notebooks():
    assert sorted(path.stem for path in NOTEBOOKS.glob("*.ipynb")) == NAMES


@pytest.mark.parametrize("name", NAMES)
def test_notebook_is_stored_valid_and_without_outputs(name):
    notebook = read(name)
    nbformat.validate(notebook)
    for cell in code_cells(notebook):
        assert cell.outputs == [] and cell.execution_count is None, f"{name}: outputs stored in {cell.source[:60]!r}"


@pytest.mark.parametrize("name", NAMES)
def test_first_cell_installs_on_colab_and_reads_the_fast_switch(name):
    first = code_cells(read(name))[0].source
    assert re.search(r'^REPO_URL = "https://github\.com/', first, re.MULTILINE)
    assert '"google.colab" in sys.modules' in first and "pip" in first and "REPO_URL" in first
    assert 'os.environ.get("VIRTUAL_IHC_FAST"' in first
    assert "list_physical_devices(\"GPU\")" in first


@pytest.mark.parametrize("name", NAMES)
def test_cells_only_call_the_package(name):
    for cell in code_cells(read(name)):
        source = "\n".join(line for line in cell.source.splitlines() if not line.lstrip().startswith(("%", "!")))
        tree = ast.parse(source)  # valid Python once the IPython magics are set aside
        definitions = [node.name for node in ast.walk(tree)
                       if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))]
        assert not definitions, f"{name}: logic belongs in the package, not in a cell ({definitions})"


@pytest.mark.slow
@pytest.mark.parametrize("name", NAMES)
def test_notebook_runs_top_to_bottom_in_fast_mode(name, tmp_path, monkeypatch):
    import nbclient

    monkeypatch.setenv("VIRTUAL_IHC_FAST", "1")  # the kernel inherits the environment
    notebook = read(name)
    nbclient.NotebookClient(notebook, timeout=600, kernel_name="python3",
                            resources={"metadata": {"path": str(tmp_path)}}).execute()
    shown = [output for cell in code_cells(notebook) for output in cell.outputs
             if "image/png" in output.get("data", {})]
    assert shown, f"{name} showed no figure"
    assert all(len(base64.b64decode(output["data"]["image/png"])) > 2000 for output in shown)  # drawn, not empty
    assert "FAST mode" in "".join(output.get("text", "") for output in code_cells(notebook)[0].outputs)
