import argparse
import dataclasses
import json
import subprocess
import sys

import pytest

from virtual_ihc.cli import main as virtual_ihc_main
from virtual_ihc.config import PROFILES, SECTIONS, ConfigError, ExperimentConfig, resolve_config, validate_config
from virtual_ihc.training import cli


def _parse(*argv):
    parser = argparse.ArgumentParser()
    cli.configure_parser(parser)
    return parser.parse_args(list(argv))


def test_every_config_field_has_exactly_one_command_line_option():
    parser = argparse.ArgumentParser()
    cli.configure_parser(parser)
    destinations = {action.dest for action in parser._actions}
    for section in SECTIONS:
        for field in dataclasses.fields(getattr(ExperimentConfig(), section)):
            assert f"{section}.{field.name}" in destinations
    assert {"name", "out", "profile"} <= destinations


def test_defaults_are_the_papers_and_the_small_profile_overrides_them():
    paper = resolve_config(profile="paper")
    assert (paper.data.tile_size, paper.data.tile_overlap, paper.train.batch_size) == (288, 144, 4)
    assert (paper.loss.cycle_weight, paper.loss.ssim_weight, paper.generator.num_residual_blocks) == (5, 5, 10)
    assert paper.train.lr_schedule == "exponential" and paper.train.lr_decay_rate == 0.9
    assert paper.train.lr_decay_epochs == 2 and paper.train.learning_rate == 2e-4
    small = resolve_config()
    assert small.profile == "small"
    assert small.generator.base_filters == PROFILES["small"]["generator"]["base_filters"]


def test_precedence_defaults_profile_file_command_line(tmp_path):
    config_file = tmp_path / "config.yaml"
    config_file.write_text("train:\n  epochs: 7\n  batch_size: 2\nloss:\n  ssim_weight: 1.5\n")
    args = _parse("--config", str(config_file), "--epochs", "9", "--no-skip", "--ssim-weight", "0")
    config = cli.config_from_args(args)
    assert config.train.epochs == 9  # command line beats file
    assert config.train.batch_size == 2  # file beats profile
    assert config.generator.skip is False and config.loss.ssim_weight == 0.0
    assert config.data.crop_size == PROFILES["small"]["data"]["crop_size"]  # profile beats default


@pytest.mark.parametrize("argv, option", [
    (["--cycle-weight", "-1"], "--cycle-weight"),
    (["--crop-size", "60"], "--crop-size"),
    (["--tile-size", "100", "--crop-size", "64"], "--tile-size"),
    (["--batch-size", "0"], "--batch-size"),
    (["--he-dir", "x"], "--he-dir"),
    (["--disc-base-filters", "0"], "--disc-base-filters"),
])
def test_invalid_values_name_the_option(argv, option):
    with pytest.raises(ConfigError, match=option):
        cli.config_from_args(_parse(*argv))


def test_batch_must_cover_all_replicas():
    config = resolve_config(cli_values={"train": {"batch_size": 3}})
    with pytest.raises(ConfigError, match="--batch-size"):
        validate_config(config, num_replicas=2)


def test_unknown_keys_in_a_config_file_are_errors(tmp_path):
    path = tmp_path / "bad.json"
    path.write_text(json.dumps({"train": {"epochz": 3}}))
    with pytest.raises(ConfigError, match="train.epochz"):
        cli.config_from_args(_parse("--config", str(path)))


def test_config_round_trips_through_json(tmp_path):
    config = resolve_config(cli_values={"name": "x", "train": {"epochs": 3}})
    config.save(tmp_path / "config.json")
    assert ExperimentConfig.load(tmp_path / "config.json") == config


def test_resume_without_a_run_is_a_clear_error(tmp_path, capsys):
    code = virtual_ihc_main(["train", "--out", str(tmp_path / "nothing"), "--resume"])
    assert code == 2
    assert "--resume" in capsys.readouterr().err


def test_help_lists_options_with_defaults():
    result = subprocess.run([sys.executable, "train.py", "--help"], capture_output=True, text=True, check=True)
    assert "--ssim-weight" in result.stdout and "(default: 5.0" in result.stdout
    assert "--no-skip" in result.stdout and "--mixed-precision" in result.stdout


def _float_options():
    for section in SECTIONS:
        owner = type(getattr(ExperimentConfig(), section))
        hints = __import__("typing").get_type_hints(owner)
        for field in dataclasses.fields(owner):
            if hints[field.name] in (float, float | None):
                yield section, field.name


@pytest.mark.parametrize("value", ["nan", "inf", "-inf"])
@pytest.mark.parametrize("section, name", list(_float_options()))
def test_non_finite_float_options_are_rejected(section, name, value):
    flag = f"--{'disc-' if section == 'discriminator' else ''}{name.replace('_', '-')}"
    with pytest.raises(ConfigError, match=f"{flag} must be a finite number"):
        cli.config_from_args(_parse(f"{flag}={value}"))
