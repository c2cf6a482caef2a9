"""``virtual-ihc nst`` end to end on tiny images with random weights (--weights none)."""

import json

import numpy as np
import pytest

from virtual_ihc import cli
from virtual_ihc.data.synthetic import sample_tiles
from virtual_ihc.io.images import read_image_rgb, write_image_rgb
from virtual_ihc.nst import sweep
from virtual_ihc.nst.config import NSTConfig

# Shallow layers: tracing the step through all of VGG19 takes seconds, and the
# default layers are exercised in test_nst_transfer.py.
FAST = ["--iterations", "2", "--weights", "none",
        "--content-layers", "block2_conv1", "--style-layers", "block1_conv1", "block2_conv1"]


@pytest.fixture
def tiles(tmp_path):
    """Two 48x48 H&E tiles (one in a sub-folder) and a 64x64 Ki-67 style image."""
    he = sample_tiles("he", 2, 48, seed=1)
    paths = {"he_dir": tmp_path / "he", "style": tmp_path / "ki67.png"}
    write_image_rgb(paths["he_dir"] / "a.png", he[0])
    write_image_rgb(paths["he_dir"] / "slide_2" / "b.png", he[1])
    write_image_rgb(paths["style"], sample_tiles("ki67", 1, 64, seed=2)[0])
    return paths


def test_batch_mode_writes_one_tile_per_input_with_the_same_name(tiles, tmp_path, capsys):
    out = tmp_path / "nst"
    status = cli.main(["nst", "--content", str(tiles["he_dir"]), "--style", str(tiles["style"]),
                       "--out", str(out), *FAST])
    assert status == 0
    for name in ("a.png", "slide_2/b.png"):
        image = read_image_rgb(out / name)
        assert image.shape == (48, 48, 3)
    record = json.loads((out / "nst_config.json").read_text())
    assert record["tiles"] == 2
    assert record["meaningful"] is False
    assert record["config"]["iterations"] == 2
    assert "not meaningful" in capsys.readouterr().out


def test_single_image_goes_to_the_out_file(tiles, tmp_path):
    out = tmp_path / "virtual_ki67.png"
    status = cli.main(["nst", "--content", str(tiles["he_dir"] / "a.png"), "--style", str(tiles["style"]),
                       "--out", str(out), "--optimizer", "lbfgs", *FAST])
    assert status == 0
    assert read_image_rgb(out).shape == (48, 48, 3)
    assert json.loads(out.with_suffix(".nst_config.json").read_text())["config"]["optimizer"] == "lbfgs"


def test_single_image_into_a_new_folder_keeps_its_name(tiles, tmp_path):
    status = cli.main(["nst", "--content", str(tiles["he_dir"] / "a.png"), "--style", str(tiles["style"]),
                       "--out", str(tmp_path / "results"), *FAST])
    assert status == 0
    assert read_image_rgb(tmp_path / "results" / "a.png").shape == (48, 48, 3)
    assert (tmp_path / "results" / "a.nst_config.json").is_file()


@pytest.mark.parametrize("broken", ["content", "style"])
def test_missing_input_file_fails_with_its_name(tiles, tmp_path, capsys, broken):
    inputs = {"content": tiles["he_dir"] / "a.png", "style": tiles["style"], broken: tmp_path / "missing.png"}
    status = cli.main(["nst", "--content", str(inputs["content"]), "--style", str(inputs["style"]),
                       "--out", str(tmp_path / "out.png"), *FAST])
    assert status == 2
    assert "missing.png" in capsys.readouterr().err
    assert not (tmp_path / "out.png").exists()


def test_missing_weights_file_fails_naming_the_option(tiles, tmp_path, capsys):
    status = cli.main(["nst", "--content", str(tiles["he_dir"]), "--style", str(tiles["style"]),
                       "--out", str(tmp_path / "out"), "--weights", str(tmp_path / "vgg19.h5")])
    assert status == 2
    assert "--weights" in capsys.readouterr().err


def test_sweep_writes_one_labelled_figure_and_each_output(tiles, tmp_path, monkeypatch):
    # Two settings keep the test fast; the full grid is checked in test_nst_config.py.
    full_grid = sweep.sweep_configs
    monkeypatch.setattr(sweep, "sweep_configs", lambda base: full_grid(base)[:2])
    out = tmp_path / "sweep"
    status = cli.main(["nst", "sweep", "--content", str(tiles["he_dir"] / "a.png"),
                       "--style", str(tiles["style"]), "--out", str(out), *FAST])
    assert status == 0
    labels = [label for label, _ in full_grid(NSTConfig())[:2]]
    for label in labels:
        assert read_image_rgb(out / f"{sweep.file_stem(label)}.png").shape == (48, 48, 3)
    figure = read_image_rgb(out / "sweep.png")
    assert figure.shape[0] > 200 and np.std(figure) > 0
    assert sorted(json.loads((out / "nst_config.json").read_text())["sweep"]) == sorted(labels)


def test_sweep_needs_a_single_content_image(tiles, tmp_path, capsys):
    status = cli.main(["nst", "sweep", "--content", str(tiles["he_dir"]), "--style", str(tiles["style"]),
                       "--out", str(tmp_path / "sweep"), *FAST])
    assert status == 2
    assert "one image" in capsys.readouterr().err


def test_empty_content_folder_is_rejected(tiles, tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    status = cli.main(["nst", "--content", str(tmp_path / "empty"), "--style", str(tiles["style"]),
                       "--out", str(tmp_path / "out"), *FAST])
    assert status == 2
    assert "no images" in capsys.readouterr().err
