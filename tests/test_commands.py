"""Every command, however it is started, reports a missing input file in one line with exit status 2."""

import importlib.util
import re
import subprocess
import sys
from pathlib import Path

import pytest

from virtual_ihc import cli

ROOT = Path(__file__).resolve().parent.parent


def missing_input_arguments(command: str, tmp_path: Path) -> list[str]:
    """Arguments of ``command`` that name an input file or folder that does not exist."""
    missing, out = str(tmp_path / "missing"), str(tmp_path / "out")
    return {
        "train": ["--he-dir", missing, "--ki67-dir", missing, "--out", out],
        "evaluate": ["--run", missing, "--he-dir", missing, "--weights", "none", "--out", out],
        "stain": [f"{missing}.png", f"{out}.png", "--model", missing],
        "nst": ["--content", f"{missing}.png", "--style", f"{missing}.png", "--out", out, "--weights", "none"],
        "tile": [f"{missing}.svs", "--stain", "he", "--out", out],
        "register": [f"{missing}_he.svs", f"{missing}_ki67.svs", "--out", out],
        "view": [f"{missing}.svs", "--port", "0"],
        "readout": [f"{missing}.tif", "--out", out],
        "ablate": ["--out", out, "--config", f"{missing}.yaml"],
        # reads no input file: its input is torchvision's download (checked when torchvision is missing)
        "resnet18-weights": [f"{out}.npz"],
    }[command]


def check_one_line_error(command: str, stderr: str) -> None:
    assert "Traceback" not in stderr, stderr
    errors = [line for line in stderr.splitlines() if re.search(r"\berror:", line, re.IGNORECASE)]
    assert len(errors) == 1, stderr
    assert re.fullmatch(rf"virtual-ihc {command}: error: \S.*", errors[0]), errors[0]


def skip_without_a_missing_input(command: str) -> None:
    if command == "resnet18-weights" and importlib.util.find_spec("torchvision") is not None:
        pytest.skip("torchvision is installed: the converter would download the weights")


def test_every_subcommand_is_covered():
    assert set(cli.SUBCOMMANDS) == set(ENTRY_POINTS.values()) | {"view", "readout"}


@pytest.mark.parametrize("command", sorted(cli.SUBCOMMANDS))
def test_every_subcommand_reports_a_missing_input_in_one_line_with_status_2(command, tmp_path, capsys):
    skip_without_a_missing_input(command)
    assert cli.main([command, *missing_input_arguments(command, tmp_path)]) == 2
    check_one_line_error(command, capsys.readouterr().err)


#: every way into a command other than ``virtual-ihc`` itself -> its subcommand
ENTRY_POINTS = {
    ("train.py",): "train",
    ("evaluate.py",): "evaluate",
    ("-m", "virtual_ihc.stain"): "stain",
    ("-m", "virtual_ihc.nst"): "nst",
    ("-m", "data_prep.tile_slides"): "tile",
    ("-m", "data_prep.register_pairs"): "register",
    ("-m", "virtual_ihc.experiments.ablation"): "ablate",
    ("-m", "virtual_ihc.evaluation.resnet18"): "resnet18-weights",
}


@pytest.mark.slow
@pytest.mark.parametrize("entry", sorted(ENTRY_POINTS), ids=" ".join)
def test_every_entry_point_reports_a_missing_input_in_one_line_with_status_2(entry, tmp_path):
    command = ENTRY_POINTS[entry]
    skip_without_a_missing_input(command)
    completed = subprocess.run([sys.executable, *entry, *missing_input_arguments(command, tmp_path)], cwd=ROOT,
                               capture_output=True, text=True, timeout=300)
    assert completed.returncode == 2, completed.stderr[-3000:]
    check_one_line_error(command, completed.stderr)
