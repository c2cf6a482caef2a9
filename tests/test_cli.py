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
