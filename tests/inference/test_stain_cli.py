"""``virtual-ihc stain`` / ``python -m virtual_ihc.stain``: files, folders, options and errors."""

import argparse
import math
import runpy
from pathlib import Path

import keras
import numpy as np
import openslide
import pytest

from virtual_ihc.cli import main
from virtual_ihc.data.synthetic import make_layout, render_he
from virtual_ihc.export import export_saved_model, model_metadata
from virtual_ihc.histology.normalization import StainNormalizer, fit_stain_stats
from virtual_ihc.inference.cli import configure_parser, options_from_args, output_name
from virtual_ihc.inference.slide_statistics import NormalizationOptions
from virtual_ihc.io.images import read_image_rgb, write_image_rgb
from virtual_ihc.slides.synthetic_slides import write_image_as_slide


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """A run folder whose H&E -> Ki-67 export is an identity generator trained at 0.5 µm/px."""
    run = tmp_path_factory.mktemp("run")
    generator = keras.Sequential([keras.Input((None, None, 3)), keras.layers.Identity()])
    export_saved_model(generator, run / "export" / "he_to_ki67", model_metadata("he_to_ki67", mpp=0.5))
    return run


def he_image(height, width, seed=0):
    rng = np.random.default_rng(seed)
    return render_he(make_layout(rng, (height, width)), rng)


def test_image_in_image_out(run_dir, tmp_path, capsys):
    image = he_image(150, 210)
    write_image_rgb(tmp_path / "he.png", image)
    code = main(["stain", str(tmp_path / "he.png"), str(tmp_path / "ki67.png"), "--model", str(run_dir),
                 "--tile-size", "64", "--overlap", "16", "--margin", "4", "--keep-background", "--glass-colour", "none"])
    assert code == 0
    np.testing.assert_array_equal(read_image_rgb(tmp_path / "ki67.png"), image)  # identity model, glass kept as is
    assert "stained 1 of 1" in capsys.readouterr().out


def test_slide_is_read_at_the_models_resolution(run_dir, tmp_path):
    """The export says 0.5 µm/px: a 0.25 µm/px slide is stained at half size, with mpp 0.5 in the output."""
    write_image_as_slide(tmp_path / "he.tif", he_image(600, 520), mpp=0.25)
    assert main(["stain", str(tmp_path / "he.tif"), str(tmp_path / "ki67.tif"), "--model", str(run_dir)]) == 0
    with openslide.OpenSlide(str(tmp_path / "ki67.tif")) as out:
        assert out.dimensions == (260, 300)
        assert float(out.properties[openslide.PROPERTY_NAME_MPP_X]) == pytest.approx(0.5)


def test_folder_batch_names_outputs_by_kind(run_dir, tmp_path, capsys):
    inputs = tmp_path / "in"
    write_image_rgb(inputs / "a.jpg", he_image(64, 80, seed=1))
    write_image_as_slide(inputs / "b.tif", he_image(300, 280, seed=2), mpp=0.5)
    (inputs / "notes.txt").write_text("not an image")
    code = main(["stain", str(inputs), str(tmp_path / "out"), "--model", str(run_dir / "export" / "he_to_ki67"),
                 "--resume"])
    assert code == 0
    assert sorted(path.name for path in (tmp_path / "out").iterdir()) == ["a.png", "b.tif"]
    assert main(["stain", str(inputs), str(tmp_path / "out"), "--model", str(run_dir), "--resume"]) == 0
    assert capsys.readouterr().out.count("skipped") == 2


def test_normalisation_options_are_applied(run_dir, tmp_path):
    image = he_image(128, 128, seed=3)
    write_image_rgb(tmp_path / "he.png", image)
    write_image_rgb(tmp_path / "target.png", he_image(128, 128, seed=4)[..., ::-1])  # other colours
    assert main(["stain", str(tmp_path / "he.png"), str(tmp_path / "ki67.png"), "--model", str(run_dir),
                 "--normalize", "reinhard", "--target", str(tmp_path / "target.png"), "--keep-background",
                 "--glass-colour", "none"]) == 0
    # one tile; the slide statistics come from the whole (small) image
    normalizer = StainNormalizer.fit("reinhard", read_image_rgb(tmp_path / "target.png"))
    expected = normalizer.transform(image, fit_stain_stats("reinhard", image))
    assert np.abs(expected.astype(int) - image).mean() > 1
    np.testing.assert_array_equal(read_image_rgb(tmp_path / "ki67.png"), expected)


@pytest.mark.parametrize("extra, message", [
    (["--model", "missing"], "no SavedModel"),
    (["--overlap", "600"], "overlap must be in"),
    (["--normalize", "macenko"], "--normalize and --target go together"),
])
def test_bad_arguments_exit_2_with_a_message(run_dir, tmp_path, capsys, extra, message):
    write_image_rgb(tmp_path / "he.png", he_image(64, 64))
    arguments = ["stain", str(tmp_path / "he.png"), str(tmp_path / "out.png"), "--model", str(run_dir), *extra]
    assert main(arguments) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "out.png").exists()


def test_unreadable_input_fails_that_input_only(run_dir, tmp_path, capsys):
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "broken.png").write_bytes(b"not a png")
    write_image_rgb(tmp_path / "in" / "good.png", he_image(64, 64))
    assert main(["stain", str(tmp_path / "in"), str(tmp_path / "out"), "--model", str(run_dir)]) == 1
    assert (tmp_path / "out" / "good.png").exists() and "broken.png: FAILED" in capsys.readouterr().err


def test_output_names():
    assert output_name(Path("x/slide.svs")) == "slide.tif" and output_name(Path("x/tile.jpg")) == "tile.png"


def test_python_m_virtual_ihc_stain_is_the_stain_command(monkeypatch, capsys):
    monkeypatch.setattr("sys.argv", ["python -m virtual_ihc.stain", "--help"])
    with pytest.raises(SystemExit) as exit_info:
        runpy.run_module("virtual_ihc.stain", run_name="__main__")
    assert exit_info.value.code == 0
    assert "virtual-ihc stain" in capsys.readouterr().out


def test_normalization_options_reach_the_stain_options():
    parser = argparse.ArgumentParser()
    configure_parser(parser)

    def parse(*extra):
        return options_from_args(parser.parse_args(["in.png", "out.png", "--model", "run", *extra]))

    assert parse().normalization is None  # slide-consistent when the export has its .keras generator
    assert parse("--normalization", "tile").normalization.method == "tile"
    assert parse("--kernel-tiles", "inf").normalization == NormalizationOptions("kernel", math.inf)
    assert parse("--normalization", "kernel", "--kernel-tiles", "3").normalization.kernel_tiles == 3


def test_kernel_normalization_without_a_keras_generator_exits_2(run_dir, tmp_path, capsys):
    write_image_rgb(tmp_path / "he.png", he_image(64, 64))
    assert main(["stain", str(tmp_path / "he.png"), str(tmp_path / "out.png"), "--model", str(run_dir),
                 "--normalization", "kernel"]) == 2
    assert "no .keras generator" in capsys.readouterr().err and not (tmp_path / "out.png").exists()
