import subprocess
import sys

import pytest

from virtual_ihc import cli


def test_every_subcommand_module_has_the_cli_protocol():
    import importlib

    for name, (module_name, _) in cli.SUBCOMMANDS.items():
        module = importlib.import_module(module_name)
        assert callable(module.configure_parser) and callable(module.run), name


@pytest.mark.parametrize("command", sorted(cli.SUBCOMMANDS))
def test_subcommand_help(command, capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main([command, "--help"])
    assert exit_info.value.code == 0
    assert "usage: virtual-ihc" in capsys.readouterr().out


def test_train_via_console_entry_point_reports_bad_options():
    completed = subprocess.run([sys.executable, "-m", "virtual_ihc.cli", "train", "--crop-size", "60"],
                               capture_output=True, text=True, timeout=120)
    assert completed.returncode == 2
    assert "--crop-size" in completed.stderr


TINY_TRAIN = ["--epochs", "1", "--steps-per-epoch", "2", "--base-filters", "4", "--num-residual-blocks", "1",
              "--disc-base-filters", "8", "--disc-num-layers", "1", "--sample-train-tiles", "12",
              "--sample-val-tiles", "4", "--sample-tile-size", "40", "--tile-size", "40", "--tile-overlap", "20",
              "--crop-size", "32", "--max-val-tiles", "4", "--batch-size", "2", "--pool-size", "4"]
#: what our logging writes (configure_logging's format)
LOG_LINE = r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} (INFO|WARNING) virtual_ihc\."


@pytest.mark.slow
def test_a_training_run_prints_only_its_log_one_line_per_epoch_and_the_summary(tmp_path):
    """stdout is a pipe here, as in a log file: one progress line per epoch, a few metrics wide;
    stderr holds nothing but our log lines (no absl/oneDNN/CUDA start-up lines, no remapper error)."""
    import re

    completed = subprocess.run([sys.executable, "train.py", "--out", str(tmp_path / "run"), *TINY_TRAIN],
                               capture_output=True, text=True, timeout=600)
    assert completed.returncode == 0, completed.stderr[-3000:]
    noise = [line for line in completed.stderr.splitlines() if not re.match(LOG_LINE, line)]
    assert noise == []
    out = completed.stdout.splitlines()
    progress = [line for line in out if line.startswith("epoch ")]
    assert len(progress) == 1 and len(progress[0]) < 200, progress
    assert "generator_loss" in progress[0] and "val_he_cycle_ssim" in progress[0]
    assert len(out) <= 16  # the summary: outputs, pathology-guard verdict, skipped files
    assert any(line.startswith("Trained 1 epoch x 2 steps") for line in out)


def test_help_shows_no_none_defaults():
    completed = subprocess.run([sys.executable, "train.py", "--help"], capture_output=True, text=True, timeout=120)
    assert completed.returncode == 0
    assert "(default: None" not in completed.stdout
    assert "runs/<name>" in completed.stdout
