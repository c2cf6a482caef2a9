"""``virtual-ihc stain --precision``: a bfloat16 export, or the run's .keras generator rebuilt in bfloat16."""

import keras
import numpy as np
import pytest
from skimage.metrics import peak_signal_noise_ratio

from virtual_ihc.cli import main
from virtual_ihc.config import GeneratorConfig
from virtual_ihc.data.synthetic import make_layout, render_he, sample_tiles
from virtual_ihc.export import export_generators
from virtual_ihc.inference.model import ModelNotFoundError, StainModel, keras_generator_path
from virtual_ihc.inference.stitching import StitchOptions
from virtual_ihc.inference.slide_statistics import NormalizationOptions
from virtual_ihc.inference.whole_slide import StainOptions, stain_file
from virtual_ihc.io.images import read_image_rgb, write_image_rgb
from virtual_ihc.models import build_resnet_generator
from virtual_ihc.slides.synthetic_slides import write_image_as_slide

pytestmark = pytest.mark.slow  # four small exports: about 20 s


@pytest.fixture(scope="module")
def generators():
    keras.utils.set_random_seed(3)
    config = GeneratorConfig(base_filters=4, num_residual_blocks=1)
    return {"he_to_ki67": build_resnet_generator(config), "ki67_to_he": build_resnet_generator(config)}


@pytest.fixture(scope="module")
def float32_run(generators, tmp_path_factory):
    run = tmp_path_factory.mktemp("float32_run")
    export_generators(generators, run / "export")
    return run


@pytest.fixture(scope="module")
def bfloat16_run(generators, tmp_path_factory):
    run = tmp_path_factory.mktemp("bfloat16_run")
    export_generators(generators, run / "export", precision="bfloat16")
    return run


@pytest.fixture(scope="module")
def tiles():
    return sample_tiles("he", 3, 40, seed=4)


def test_a_bfloat16_export_is_used_in_bfloat16_by_default(bfloat16_run, float32_run, tiles):
    model = StainModel(bfloat16_run)
    assert model.precision == "bfloat16" and model.metadata["precision"] == "bfloat16"
    reference = StainModel(float32_run)
    assert reference.precision == "float32"
    assert not np.array_equal(model(tiles), reference(tiles))


def test_float32_run_rebuilt_in_bfloat16_equals_the_bfloat16_export(float32_run, bfloat16_run, tiles):
    rebuilt = StainModel(float32_run, precision="bfloat16")
    assert rebuilt.precision == "bfloat16" and rebuilt.path == float32_run / "export" / "he_to_ki67"
    np.testing.assert_array_equal(rebuilt(tiles), StainModel(bfloat16_run)(tiles))


def test_bfloat16_export_rebuilt_in_float32_equals_the_float32_export(float32_run, bfloat16_run, tiles):
    np.testing.assert_array_equal(StainModel(bfloat16_run, precision="float32")(tiles),
                                  StainModel(float32_run)(tiles))


def test_another_precision_without_the_keras_generator_is_a_clear_error(float32_run, tmp_path):
    export = tmp_path / "export"
    (export / "he_to_ki67").mkdir(parents=True)
    for path in (float32_run / "export" / "he_to_ki67").rglob("*"):
        target = export / "he_to_ki67" / path.relative_to(float32_run / "export" / "he_to_ki67")
        target.mkdir(exist_ok=True) if path.is_dir() else target.write_bytes(path.read_bytes())
    assert StainModel(export / "he_to_ki67").precision == "float32"  # the SavedModel alone is enough
    with pytest.raises(ModelNotFoundError, match="generator_he_to_ki67.keras"):
        StainModel(export / "he_to_ki67", precision="bfloat16")
    assert keras_generator_path(export / "he_to_ki67") == export / "generator_he_to_ki67.keras"


def test_cli_precision_bfloat16_stains_close_to_float32(float32_run, tmp_path):
    rng = np.random.default_rng(5)
    write_image_rgb(tmp_path / "he.png", render_he(make_layout(rng, (96, 120)), rng))
    outputs = {}
    for precision in ("float32", "bfloat16"):
        outputs[precision] = tmp_path / f"ki67_{precision}.png"
        assert main(["stain", str(tmp_path / "he.png"), str(outputs[precision]), "--model", str(float32_run),
                     "--tile-size", "64", "--overlap", "16", "--margin", "4", "--keep-background",
                     "--precision", precision]) == 0
    float32, bfloat16 = read_image_rgb(outputs["float32"]), read_image_rgb(outputs["bfloat16"])
    assert not np.array_equal(float32, bfloat16)
    assert peak_signal_noise_ratio(float32, bfloat16, data_range=255) >= 40


class Interrupted:
    """A model that crashes after ``fail_after`` tiles, with the path and precision of ``model``."""

    def __init__(self, model, fail_after):
        self.model, self.path, self.precision, self.fail_after, self.tiles = (model, model.path, model.precision,
                                                                              fail_after, 0)

    def __call__(self, tiles):
        if self.tiles + len(tiles) > self.fail_after:
            raise KeyboardInterrupt("simulated crash")
        self.tiles += len(tiles)
        return self.model(tiles)


def test_a_bfloat16_run_does_not_resume_a_float32_partial_slide(float32_run, tmp_path):
    rng = np.random.default_rng(6)
    slide = write_image_as_slide(tmp_path / "he.tif", render_he(make_layout(rng, (150, 200)), rng), mpp=0.5)
    # per-tile normalisation: every tile goes through the (interrupted) serving call
    options = StainOptions(StitchOptions(tile_size=64, overlap=16, margin=4, keep_background=True), resume=True,
                           normalization=NormalizationOptions("tile"))
    float32 = StainModel(float32_run)
    with pytest.raises(KeyboardInterrupt):
        stain_file(slide, tmp_path / "ki67.tif", Interrupted(float32, fail_after=8), options)
    assert stain_file(slide, tmp_path / "ki67.tif", StainModel(float32_run, precision="bfloat16"),
                      options).rows_resumed == 0
    with pytest.raises(KeyboardInterrupt):
        stain_file(slide, tmp_path / "again.tif", Interrupted(float32, fail_after=8), options)
    assert stain_file(slide, tmp_path / "again.tif", float32, options).rows_resumed == 2  # same precision resumes
