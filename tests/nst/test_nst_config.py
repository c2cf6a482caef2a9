"""NSTConfig validation, CLI defaults and the sweep grid."""

import argparse
import dataclasses

import pytest

from virtual_ihc.nst.cli import config_from_args, configure_parser, parse_style_layers
from virtual_ihc.nst.config import NSTConfig
from virtual_ihc.nst.sweep import file_stem, sweep_configs


def parse(*argv):
    parser = argparse.ArgumentParser()
    configure_parser(parser)
    return parser.parse_args(["--content", "he.png", "--style", "ki67.png", "--out", "out.png", *argv])


def test_cli_defaults_are_the_config_defaults():
    assert config_from_args(parse()) == NSTConfig()


def test_cli_options_reach_the_config():
    config = config_from_args(parse("--content-loss", "mae", "--content-weight", "3", "--optimizer", "lbfgs",
                                    "--style-layers", "block2_conv1:0.7", "block3_conv1:0.3"))
    assert (config.content_loss, config.content_weight, config.optimizer) == ("mae", 3.0, "lbfgs")
    assert config.style_layers == (("block2_conv1", 0.7), ("block3_conv1", 0.3))


def test_sweep_is_a_positional_mode():
    assert parse().mode == "transfer"
    assert parse("sweep").mode == "sweep"


def test_style_layers_without_weights_share_them_equally():
    assert parse_style_layers(["block1_conv1", "block2_conv1"]) == (("block1_conv1", 0.5), ("block2_conv1", 0.5))


def test_style_layer_with_bad_weight_is_rejected():
    with pytest.raises(ValueError, match="block1_conv1:heavy"):
        parse_style_layers(["block1_conv1:heavy"])


@pytest.mark.parametrize("change, message", [
    ({"content_layers": ("block4_conv9",)}, "block4_conv9"),
    ({"style_layers": (("fc1", 1.0),)}, "fc1"),
    ({"content_loss": "huber"}, "content_loss"),
    ({"optimizer": "sgd"}, "optimizer"),
    ({"init": "zeros"}, "init"),
    ({"iterations": 0}, "iterations"),
    ({"style_weight": -1.0}, "style_weight"),
])
def test_invalid_settings_are_rejected_by_name(change, message):
    with pytest.raises(ValueError, match=message):
        NSTConfig(**change)


def test_layer_names_lists_each_layer_once():
    config = NSTConfig(content_layers=("block1_conv1",), style_layers=(("block1_conv1", 1.0), ("block2_conv1", 1.0)))
    assert config.layer_names == ("block1_conv1", "block2_conv1")


def test_sweep_changes_one_setting_at_a_time():
    base = NSTConfig()
    settings = sweep_configs(base)
    assert settings[0][1] == base
    changed_fields = []
    for _, config in settings[1:]:
        differences = [field.name for field in dataclasses.fields(base)
                       if getattr(config, field.name) != getattr(base, field.name)]
        assert len(differences) == 1
        changed_fields.append(differences[0])
    assert sorted(changed_fields) == sorted(["content_weight", "content_weight", "style_weight", "content_loss",
                                             "content_layers", "style_layers"])


def test_sweep_covers_the_report_grid():
    base = NSTConfig()
    configs = [config for _, config in sweep_configs(base)]
    assert any(config.content_weight > base.content_weight for config in configs)
    assert any(config.content_weight < base.content_weight for config in configs)
    assert any(config.style_weight > base.style_weight for config in configs)
    assert {config.content_loss for config in configs} == {"mse", "mae"}
    assert any(config.content_layers == ("block5_conv2",) for config in configs)
    assert any(all(not name.startswith(("block1", "block2")) for name, _ in config.style_layers)
               for config in configs)


def test_sweep_file_names_are_unique():
    stems = [file_stem(label) for label, _ in sweep_configs(NSTConfig())]
    assert len(set(stems)) == len(stems)
