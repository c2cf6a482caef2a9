"""Slide-consistent normalisation: the stored statistics, their smoothing, and the two passes end to end."""

import math

import keras
import numpy as np
import pytest
import tifffile

from virtual_ihc.config import GeneratorConfig
from virtual_ihc.data.synthetic import make_layout, render_he
from virtual_ihc.export import export_generators
from virtual_ihc.inference.model import StainModel
from virtual_ihc.inference.slide_statistics import (NormalizationOptions, SmoothedStatistics, StatisticsStore,
                                                    measure_statistics)
from virtual_ihc.inference.stitching import StitchOptions, TileLayout
from virtual_ihc.inference.whole_slide import StainOptions, partial_dir, stain_file
from virtual_ihc.io.images import read_image_rgb, write_image_rgb
from virtual_ihc.models import build_resnet_generator
from virtual_ihc.slides.synthetic_slides import write_image_as_slide

STITCH = StitchOptions(tile_size=64, overlap=16, margin=4, batch_size=3, keep_background=True)


def _layout(height=112, width=160):
    return TileLayout.plan(height, width, STITCH)  # 2 x 3 tiles at a stride of 48


def test_store_keeps_rows_as_float16_means_and_deviations(tmp_path):
    rng = np.random.default_rng(0)
    means, variances = rng.normal(0, 3, (2, 5)).astype(np.float32), rng.uniform(0.1, 4, (2, 5)).astype(np.float32)
    for store in (StatisticsStore(tmp_path), StatisticsStore()):
        store.save_row(3, np.array([0, 2]), means, variances)
        columns, loaded_means, loaded_variances = store.load_row(3)
        assert columns.tolist() == [0, 2]
        np.testing.assert_allclose(loaded_means, means, rtol=2e-3, atol=2e-3)
        np.testing.assert_allclose(loaded_variances, variances, rtol=4e-3)
        assert len(store.load_row(0)[0]) == 0 and store.nbytes() > 0
    assert [path.name for path in tmp_path.iterdir()] == ["statistics_00003.npy"]


def test_infinite_kernel_gives_every_tile_the_statistics_of_all_measured_pixels_together():
    """Mixture of per-tile moments = the moments of the union of the tiles' pixels (equal sizes)."""
    rng = np.random.default_rng(1)
    pixels = [rng.normal(loc, scale, (100, 2)) for loc, scale in ((0, 1), (5, 2), (-3, 0.5))]
    store = StatisticsStore()
    store.save_row(0, np.array([0, 2]), np.stack([p.mean(0) for p in pixels[:2]]), np.stack([p.var(0) for p in pixels[:2]]))
    store.save_row(1, np.array([1]), pixels[2].mean(0)[None], pixels[2].var(0)[None])
    smoothed = SmoothedStatistics(_layout(), store, NormalizationOptions(kernel_tiles=math.inf))
    means, variances = smoothed.for_row(1)
    union = np.concatenate(pixels)
    np.testing.assert_allclose(means, np.broadcast_to(union.mean(0), (3, 2)), rtol=2e-3, atol=2e-3)
    np.testing.assert_allclose(variances, np.broadcast_to(union.var(0), (3, 2)), rtol=5e-3)


def test_narrow_kernel_keeps_each_measured_tile_and_fills_the_others_from_neighbours():
    store = StatisticsStore()
    store.save_row(0, np.array([0, 2]), np.array([[0.0], [10.0]]), np.array([[1.0], [1.0]]))
    narrow = SmoothedStatistics(_layout(), store, NormalizationOptions(kernel_tiles=0.05)).for_row(0)
    np.testing.assert_allclose(narrow[0][[0, 2], 0], [0.0, 10.0], atol=0.01)  # own statistics
    # the middle tile has nothing within reach of a narrow kernel: the slide's pooled statistics
    assert narrow[0][1, 0] == pytest.approx(5.0, abs=0.01) and narrow[1][1, 0] == pytest.approx(26.0, rel=0.01)
    wide = SmoothedStatistics(_layout(), store, NormalizationOptions(kernel_tiles=1.0)).for_row(1)
    assert 0.0 < wide[0][0, 0] < 5.0 < wide[0][2, 0] < 10.0  # a row below: weighted towards the nearer tile


def test_measuring_resumes_at_the_first_row_and_stores_only_tissue_tiles():
    layout = _layout()
    read = []

    class Measure:
        def measure_tiles(self, tiles):
            return tiles.mean(axis=(1, 2)).astype(np.float32), np.ones((len(tiles), 3), np.float32)

    def read_tile(y, x, height, width):
        read.append((y, x, height, width))
        return np.full((height, width, 3), x, np.uint8)

    is_tissue = np.array([[True, False, True], [True, True, False]])
    store, done = StatisticsStore(), []
    measured = measure_statistics(layout, read_tile, Measure(), is_tissue, 2, store,
                                  NormalizationOptions(sample_size=32), first_row=1, row_done=done.append)
    assert measured == 2 and done == [2]
    assert {y for y, *_ in read} == {48 + 16} and {size for *_, size in read} == {32}  # centre crops of row 1
    assert store.load_row(0)[0].size == 0 and store.load_row(1)[0].tolist() == [0, 1]


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    keras.utils.set_random_seed(0)
    generator = build_resnet_generator(GeneratorConfig(base_filters=4, num_residual_blocks=1))
    return StainModel(export_generators({"he_to_ki67": generator}, tmp_path_factory.mktemp("run"))["he_to_ki67"])


@pytest.fixture(scope="module")
def he_png(tmp_path_factory):
    rng = np.random.default_rng(2)
    path = tmp_path_factory.mktemp("he") / "he.png"
    write_image_rgb(path, render_he(make_layout(rng, (112, 160)), rng))
    return path


def _stain(path, output, model, **normalization):
    options = StainOptions(STITCH, normalization=NormalizationOptions(**normalization), glass_colour=None)
    return read_image_rgb(stain_file(path, output, model, options).output)


def test_a_kernel_too_narrow_to_reach_a_neighbour_stains_like_per_tile_normalisation(model, he_png, tmp_path):
    """Each tile measured whole and smoothed with itself only: its own statistics, as per tile."""
    narrow = _stain(he_png, tmp_path / "narrow.png", model, kernel_tiles=0.01, sample_size=64)
    per_tile = _stain(he_png, tmp_path / "tile.png", model, method="tile")
    assert np.abs(narrow.astype(int) - per_tile).max() <= 1


def test_the_whole_slide_kernel_stains_every_tile_with_the_pooled_statistics(model, he_png, tmp_path):
    image = read_image_rgb(he_png)
    pooled = _stain(he_png, tmp_path / "pooled.png", model, kernel_tiles=math.inf, sample_size=64)
    module = model.statistics_module()
    corners = [(y, x) for y in (0, 48) for x in (0, 48, 96)]
    tiles = np.stack([image[y:y + 64, x:x + 64] for y, x in corners])
    means, variances = module.measure_tiles(tiles)
    second = (variances + means ** 2).mean(0)
    mean = means.mean(0)
    expected = module.stain_tiles(tiles[:1], mean[None], (second - mean ** 2)[None])[0]
    # the top-left corner is covered by the first tile alone (no blending there)
    assert np.abs(pooled[:40, :40].astype(int) - expected[:40, :40]).max() <= 1
    per_tile = _stain(he_png, tmp_path / "tile.png", model, method="tile")
    assert np.abs(pooled.astype(int) - per_tile).mean() > 1


class Crashing:
    """``model`` whose statistics pass or staining pass raises after ``after`` calls (a killed run)."""

    def __init__(self, model, crash_in, after):
        self.model, self.crash_in, self.after, self.calls = model, crash_in, after, 0
        self.path, self.precision, self.keras_path, self.mpp = model.path, model.precision, model.keras_path, None

    def _tick(self, part):
        if part == self.crash_in:
            self.calls += 1
            if self.calls > self.after:
                raise KeyboardInterrupt("simulated crash")

    def __call__(self, tiles):
        return self.model(tiles)

    def statistics_module(self):
        outer, module = self, self.model.statistics_module()

        class Module:
            def measure_tiles(self, tiles):
                outer._tick("measure")
                return module.measure_tiles(tiles)

            def stain_tiles(self, *args):
                outer._tick("stain")
                return module.stain_tiles(*args)

        return Module()


@pytest.mark.parametrize("crash_in", ["measure", "stain"])
def test_resume_after_a_crash_in_either_pass_equals_an_uninterrupted_run(model, tmp_path, crash_in):
    rng = np.random.default_rng(3)
    slide = write_image_as_slide(tmp_path / "he.tif", render_he(make_layout(rng, (200, 160)), rng), mpp=0.5)
    options = StainOptions(STITCH, compression="deflate", resume=True,
                           normalization=NormalizationOptions(kernel_tiles=1.0, sample_size=32))
    reference = stain_file(slide, tmp_path / "reference.tif", model, options)
    with pytest.raises(KeyboardInterrupt):
        stain_file(slide, tmp_path / "ki67.tif", Crashing(model, crash_in, after=2), options)
    assert not (tmp_path / "ki67.tif").exists() and partial_dir(tmp_path / "ki67.tif").is_dir()
    result = stain_file(slide, tmp_path / "ki67.tif", model, options)
    assert result.tiles_measured == (reference.tiles_measured - 6 if crash_in == "measure" else 0)
    assert result.tiles_run == (reference.tiles_run if crash_in == "measure" else reference.tiles_run - 6)
    np.testing.assert_array_equal(tifffile.imread(tmp_path / "ki67.tif"), tifffile.imread(reference.output))
