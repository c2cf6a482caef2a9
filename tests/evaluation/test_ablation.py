"""The ablation runner: four variants on the same data and seed, evaluated into one summary.

Training is replaced by ``write_untrained_run`` (random generators written as checkpoints), so these
tests check the orchestration, not learning.
"""

import argparse
import json

import pytest
from test_evaluator import TINY, write_untrained_run

from virtual_ihc.config import ConfigError
from virtual_ihc.evaluation.report import read_metrics_csv
from virtual_ihc.experiments.ablation import (VARIANTS, configure_parser, is_complete, run_ablation, training_overrides,
                                              variant_configs, variant_overrides)


def _args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    configure_parser(parser)
    return parser.parse_args(argv)


def _without_variant_options(config) -> dict:
    values = config.to_dict()
    values["generator"].pop("skip")
    values["loss"].pop("ssim_weight")
    values.pop("out"), values.pop("name")
    return values


def test_variants_differ_only_in_skip_and_ssim_weight(tmp_path):
    configs = variant_configs(tmp_path, list(VARIANTS), {"train": {"seed": 3}})
    settings = {name: (config.generator.skip, config.loss.ssim_weight) for name, config in configs.items()}
    assert settings == {"cyclegan": (False, 0.0), "skip": (True, 0.0), "ssim": (False, 5.0),
                        "skip_ssim": (True, 5.0)}
    shared = [_without_variant_options(config) for config in configs.values()]
    assert all(values == shared[0] for values in shared)
    assert shared[0]["train"]["seed"] == 3
    assert len({config.run_dir for config in configs.values()}) == 4


def test_command_line_training_options_reach_every_variant(tmp_path):
    args = _args(["--out", str(tmp_path), "--epochs", "2", "--steps-per-epoch", "5", "--seed", "4", "--no-export"])
    configs = variant_configs(tmp_path, list(VARIANTS), training_overrides(args))
    assert {(c.train.epochs, c.train.steps_per_epoch, c.train.seed, c.train.export) for c in configs.values()} \
        == {(2, 5, 4, False)}
    default = variant_configs(tmp_path, ["skip"], training_overrides(_args(["--out", str(tmp_path)])))
    assert default["skip"].train.export  # without --no-export the config's default stays


def test_ssim_variants_use_the_configured_beta(tmp_path):
    configs = variant_configs(tmp_path, ["ssim", "skip"], {"loss": {"ssim_weight": 2.5}})
    assert configs["ssim"].loss.ssim_weight == 2.5 and configs["skip"].loss.ssim_weight == 0.0


def test_unknown_variant_is_refused():
    with pytest.raises(ConfigError, match="unknown variant"):
        variant_overrides("pix2pix", 5.0)


def test_user_training_data_needs_evaluation_tiles(tmp_path):
    from virtual_ihc.evaluation.tiles import EvaluationInputError

    args = _args(["--out", str(tmp_path), "--he-dir", str(tmp_path), "--ki67-dir", str(tmp_path)])
    with pytest.raises(EvaluationInputError, match="--eval-he-dir"):
        run_ablation(args, train=write_untrained_run)


@pytest.mark.slow
def test_ablation_trains_every_variant_on_the_same_data_and_evaluates_them(tmp_path):
    config_file = tmp_path / "tiny.json"
    config_file.write_text(json.dumps({"generator": TINY["generator"], "data": {"sample_tile_size": 32}}))
    trained = []

    def train(config, resume=False):
        trained.append(config)
        return write_untrained_run(config, resume)

    argv = ["--out", str(tmp_path / "ablation"), "--config", str(config_file), "--epochs", "1",
            "--sample-train-tiles", "2", "--eval-tiles", "4", "--weights", "none", "--no-fid", "--no-progress"]
    outputs = run_ablation(_args(argv), train=train)

    assert [config.name for config in trained] == list(VARIANTS)
    assert len({(config.data.he_dir, config.data.ki67_dir, config.train.seed) for config in trained}) == 1
    rows = read_metrics_csv(outputs["metrics"])
    assert {row.variant for row in rows if row.metric == "phash"} == {"CycleGAN", "+skip", "+SSIM", "+skip+SSIM"}
    summary = outputs["summary"].read_text()
    for variant in ("| cyclegan | CycleGAN |", "| skip | +skip |", "| ssim | +SSIM |", "| skip_ssim | +skip+SSIM |"):
        assert variant in summary
    assert all(outputs[name].stat().st_size > 0 for name in ("metrics_vs_epoch", "residuals", "comparison"))

    trained.clear()
    run_ablation(_args(argv), train=train)  # complete runs are reused, only re-evaluated
    assert trained == []
    configs = variant_configs(tmp_path / "ablation", list(VARIANTS), {"train": {"epochs": 1}})
    assert all(is_complete(config) for config in configs.values())
