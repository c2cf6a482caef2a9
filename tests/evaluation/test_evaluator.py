"""evaluate.py end to end on untrained runs written directly (no training), and its input errors."""

import csv
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf

from virtual_ihc.cli import main
from virtual_ihc.config import ExperimentConfig, resolve_config
from virtual_ihc.data.synthetic import write_sample_dataset
from virtual_ihc.evaluation.evaluator import EvaluationOptions, evaluate_models, resolve_data
from virtual_ihc.evaluation.models import run_entries, variant_name
from virtual_ihc.evaluation.report import read_metrics_csv
from virtual_ihc.evaluation.tiles import EvaluationInputError
from virtual_ihc.export import export_saved_model
from virtual_ihc.io.images import read_image_rgb, write_image_rgb
from virtual_ihc.models import build_resnet_generator

TINY = {"generator": {"base_filters": 4, "num_residual_blocks": 1}, "train": {"epochs": 2}}


def write_untrained_run(config: ExperimentConfig, resume: bool = False) -> Path:
    """A run directory as training leaves it (config.json, one checkpoint per epoch), with random generators.

    Has ``run_training``'s signature, so the ablation tests use it as a stand-in trainer.
    """
    run_dir = config.run_dir
    run_dir.mkdir(parents=True, exist_ok=True)
    config.save(run_dir / "config.json")
    for epoch in range(1, config.train.epochs + 1):
        keras.utils.set_random_seed(config.train.seed * 100 + epoch)
        checkpoint = tf.train.Checkpoint(
            generator_he_to_ki67=build_resnet_generator(config.generator, "generator_he_to_ki67"),
            generator_ki67_to_he=build_resnet_generator(config.generator, "generator_ki67_to_he"))
        checkpoint.write(str(run_dir / "checkpoints" / f"epoch_{epoch:03d}" / "ckpt"))
    return run_dir


@pytest.fixture(scope="module")
def workspace(tmp_path_factory) -> Path:
    """Paired sample tiles (32 px), two untrained runs and a copy of the real Ki-67 as a 'virtual' folder."""
    root = tmp_path_factory.mktemp("evaluation")
    data = write_sample_dataset(root / "data", 1, 5, 32, seed=1, paired=True)
    (root / "pairs").mkdir()
    (root / "pairs" / "he").symlink_to(data / "he" / "val")
    (root / "pairs" / "ki67").symlink_to(data / "ki67" / "val")
    for name, skip, ssim, epochs in (("plain", False, 0.0, 2), ("improved", True, 5.0, 1)):
        values = {"generator": {**TINY["generator"], "skip": skip}, "loss": {"ssim_weight": ssim},
                  "train": {"epochs": epochs}, "out": str(root / name)}
        write_untrained_run(resolve_config(cli_values=values))
    return root


@pytest.fixture(scope="module")
def evaluation(workspace) -> Path:
    """One ``virtual-ihc evaluate`` run over every epoch of both runs (2 + 1) plus the 'virtual' folder."""
    out = workspace / "eval"
    code = main(["evaluate", "--run", f"plain={workspace / 'plain'}", "--run", str(workspace / "improved"),
                 "--virtual-dir", f"copy={workspace / 'pairs' / 'ki67'}", "--pairs-dir", str(workspace / "pairs"),
                 "--all-checkpoints", "--weights", "none", "--fid-image-size", "75", "--kid-subset-size", "4",
                 "--kid-subsets", "5", "--batch-size", "5", "--out", str(out), "--no-progress"])
    assert code == 0
    return out


def _rows(evaluation: Path) -> list:
    return read_metrics_csv(evaluation / "metrics.csv")


@pytest.mark.slow
def test_writes_csvs_summary_and_nonempty_figures(evaluation):
    for name in ("metrics.csv", "per_tile.csv", "summary.md"):
        assert (evaluation / name).stat().st_size > 0
    for name in ("fig_metrics_vs_epoch.png", "fig_residuals.png", "fig_comparison.png", "fig_ki67_index.png"):
        image = read_image_rgb(evaluation / name)
        assert image.shape[0] > 100 and image.std() > 1.0  # drawn, not blank


@pytest.mark.slow
def test_all_checkpoints_give_one_row_per_epoch(evaluation):
    epochs = {row.epoch for row in _rows(evaluation) if row.model == "plain" and row.metric == "cycle_ssim"}
    assert epochs == {1, 2}


@pytest.mark.slow
def test_every_metric_family_is_reported(evaluation):
    metrics = {(row.model, row.tile_set, row.metric) for row in _rows(evaluation)}
    for metric in ("cycle_ssim", "cycle_ms_ssim", "cycle_psnr", "cycle_mae", "paired_ssim", "paired_ms_ssim",
                   "paired_psnr", "phash", "fid", "kid", "ki67_index", "ki67_index_abs_error",
                   "ki67_index_pearson_r", "positive_area_pearson_r", "negative_area_pearson_r"):
        assert ("improved", "pairs", metric) in metrics, metric
    assert ("improved", "ki67", "cycle_ssim") in metrics  # the reverse cycle
    assert ("real_ki67", "ki67", "ki67_index") in metrics


@pytest.mark.slow
def test_virtual_folder_equal_to_the_reference_scores_perfectly(evaluation):
    rows = {row.metric: row for row in _rows(evaluation) if row.model == "copy"}
    assert rows["phash"].mean == 1.0
    assert rows["paired_ssim"].mean == pytest.approx(1.0, abs=1e-5)
    assert rows["ki67_index_abs_error"].mean == 0.0
    assert rows["fid"].mean == pytest.approx(0.0, abs=1e-6)
    assert "cycle_ssim" not in rows  # one-way model: no cycle


@pytest.mark.slow
def test_summary_has_a_table_row_per_model_and_says_weights_are_random(evaluation):
    summary = (evaluation / "summary.md").read_text()
    assert "| plain | CycleGAN |" in summary
    assert "| improved | +skip+SSIM |" in summary
    assert "| copy | precomputed | 1.0000 ± 0.0000 |" in summary
    assert "random (untrained) weights" in summary
    assert "FID from 5 samples" in summary


@pytest.mark.slow
def test_per_tile_csv_lists_every_tile(evaluation):
    with open(evaluation / "per_tile.csv") as handle:
        tiles = {row["tile"] for row in csv.DictReader(handle) if row["model"] == "copy" and row["metric"] == "phash"}
    assert tiles == {f"tile_{index:05d}.png" for index in range(5)}


@pytest.mark.slow
def test_exported_savedmodel_gives_the_checkpoint_outputs(workspace):
    from virtual_ihc.training.checkpoints import load_generators

    run_dir = workspace / "improved"
    for direction, generator in load_generators(run_dir).items():
        export_saved_model(generator, run_dir / "export" / direction)
    tiles = np.stack([read_image_rgb(path) for path in sorted((workspace / "pairs" / "he").glob("*.png"))[:2]])
    tiles = tiles[:, :30, :27]  # not multiples of 8: both paths pad and crop back
    exported = run_entries(str(run_dir), source="export")[0].load()
    latest = run_entries(str(run_dir), source="checkpoint")[0].load()
    virtual_exported, virtual_latest = exported.he_to_ki67([], tiles), latest.he_to_ki67([], tiles)
    assert virtual_exported.shape == tiles.shape
    # graph vs eager float rounding may move a pixel by one grey level, nothing more
    assert np.abs(virtual_exported.astype(int) - virtual_latest.astype(int)).max() <= 1


def test_variant_names_follow_the_paper():
    assert variant_name(resolve_config(cli_values={"generator": {"skip": False}, "loss": {"ssim_weight": 0}})) \
        == "CycleGAN"
    assert variant_name(resolve_config(cli_values={"generator": {"skip": True}, "loss": {"ssim_weight": 0}})) \
        == "+skip"
    assert variant_name(resolve_config(cli_values={"generator": {"skip": False}})) == "+SSIM"


def test_missing_run_directory_is_a_clear_error(tmp_path):
    with pytest.raises(EvaluationInputError, match="no such run directory"):
        run_entries(str(tmp_path / "absent"))
    (tmp_path / "not_a_run").mkdir()
    with pytest.raises(EvaluationInputError, match="no config.json"):
        run_entries(str(tmp_path / "not_a_run"))


def test_run_without_checkpoints_is_a_clear_error(tmp_path):
    config = resolve_config(cli_values={"out": str(tmp_path / "run")})
    config.run_dir.mkdir()
    config.save(config.run_dir / "config.json")
    with pytest.raises(EvaluationInputError, match="no checkpoint"):
        run_entries(str(config.run_dir))


def test_empty_tile_folder_is_a_clear_error(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(EvaluationInputError, match=r"--he-dir: no image files"):
        resolve_data(he_dir=tmp_path / "empty")
    with pytest.raises(EvaluationInputError, match="--he-dir"):
        resolve_data(he_dir=tmp_path / "missing")


def test_mismatched_pair_names_are_a_clear_error(tmp_path):
    tile = np.full((16, 16, 3), 200, np.uint8)
    for stain, names in (("he", ("a.png", "b.png")), ("ki67", ("a.png", "c.png"))):
        for name in names:
            write_image_rgb(tmp_path / "pairs" / stain / name, tile)
    with pytest.raises(EvaluationInputError, match=r"identical file names.*\['b.png'\].*\['c.png'\]"):
        resolve_data(pairs_dir=tmp_path / "pairs")


def test_nothing_to_evaluate_is_a_clear_error(tmp_path):
    write_image_rgb(tmp_path / "he" / "a.png", np.full((16, 16, 3), 200, np.uint8))
    with pytest.raises(EvaluationInputError, match="--run"):
        evaluate_models([], resolve_data(he_dir=tmp_path / "he"), EvaluationOptions(distribution=False))


def test_cli_reports_bad_input_with_exit_code_2(tmp_path, capsys):
    code = main(["evaluate", "--run", str(tmp_path / "absent"), "--he-dir", str(tmp_path), "--weights", "none",
                 "--out", str(tmp_path / "out")])
    assert code == 2
    error = capsys.readouterr().err
    assert "error: --run" in error and "no such run directory" in error


def test_a_weights_file_for_both_networks_is_refused(tmp_path, capsys):
    (tmp_path / "weights.h5").write_bytes(b"")
    code = main(["evaluate", "--run", str(tmp_path), "--he-dir", str(tmp_path), "--weights",
                 str(tmp_path / "weights.h5"), "--out", str(tmp_path / "out")])
    assert code == 2
    assert "--phash-weights" in capsys.readouterr().err


def test_pairs_of_different_sizes_are_a_clear_error_naming_both_files(tmp_path, capsys):
    tile = np.full((48, 48, 3), 200, np.uint8)
    for name in ("a.png", "b.png"):
        write_image_rgb(tmp_path / "pairs" / "he" / name, tile[:40, :40])
        write_image_rgb(tmp_path / "pairs" / "ki67" / name, tile)
        write_image_rgb(tmp_path / "virtual" / name, tile[:40, :40])
    code = main(["evaluate", "--virtual-dir", f"v={tmp_path / 'virtual'}", "--pairs-dir", str(tmp_path / "pairs"),
                 "--weights", "none", "--no-fid", "--out", str(tmp_path / "out"), "--no-progress"])
    error = capsys.readouterr().err
    assert code == 2
    assert f"{tmp_path / 'pairs' / 'he' / 'a.png'} is 40x40 px" in error
    assert f"{tmp_path / 'pairs' / 'ki67' / 'a.png'} is 48x48 px" in error
    assert "Traceback" not in error and len(error.splitlines()) <= 3


@pytest.mark.slow
def test_pathology_consistency_is_reported_and_the_true_ki67_passes_it(evaluation):
    rows = {(row.model, row.metric): row for row in _rows(evaluation) if row.tile_set == "pairs"}
    for metric in ("nuclei_f1", "glass_kept", "eosin_ratio", "dab_outside_nuclei", "virtual_index_he_nuclei",
                   "index_difference"):
        assert ("improved", f"pooled_{metric}") in rows, metric
    # the "virtual" copy is the real Ki-67 of the same layout: its nuclei are the H&E's, its index the reference's
    assert rows[("copy", "pooled_nuclei_f1")].mean >= 0.7
    assert rows[("copy", "pooled_eosin_ratio")].mean < 0.1
    assert abs(rows[("copy", "pooled_index_difference")].mean) < 0.1
    assert rows[("copy", "pooled_nuclei_f1")].note == "flags: none"
    with open(evaluation / "per_tile.csv") as handle:
        per_tile = [row for row in csv.DictReader(handle) if row["model"] == "copy" and row["metric"] == "nuclei_f1"]
    assert len(per_tile) == 5
    summary = (evaluation / "summary.md").read_text()
    assert "## Pathology consistency" in summary and "not a diagnosis" in summary
    assert "**copy**, pairs: pathology-consistent" in summary


@pytest.mark.slow
def test_paired_tiles_carry_the_real_index_beside_the_virtual_one(evaluation):
    with open(evaluation / "per_tile.csv") as handle:
        rows = [row for row in csv.DictReader(handle) if row["model"] == "copy" and row["tile_set"] == "pairs"]
    virtual = {row["tile"]: float(row["value"]) for row in rows if row["metric"] == "ki67_index"}
    real = {row["tile"]: float(row["value"]) for row in rows if row["metric"] == "reference_ki67_index"}
    assert len(real) == 5 and real == virtual  # the 'copy' model returns the real Ki-67 tiles
    assert "fig_ki67_index" in (evaluation / "summary.md").read_text()
