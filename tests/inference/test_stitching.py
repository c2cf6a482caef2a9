"""Stitching: blending windows, identity round trips through the whole pipeline, background tiles."""

import keras
import numpy as np
import pytest

from virtual_ihc.data.synthetic import make_layout, render_he
from virtual_ihc.export import export_saved_model
from virtual_ihc.grid import tile_starts
from virtual_ihc.inference.blending import axis_weights, rising_ramp
from virtual_ihc.inference.model import StainModel
from virtual_ihc.inference.stitching import StitchOptions, TileLayout
from virtual_ihc.inference.whole_slide import StainOptions, stain_file
from virtual_ihc.io.images import read_image_rgb, write_image_rgb


@pytest.fixture(scope="module")
def identity_model(tmp_path_factory):
    """The real serving module around a generator that returns its input."""
    generator = keras.Sequential([keras.Input((None, None, 3)), keras.layers.Identity()])
    return StainModel(export_saved_model(generator, tmp_path_factory.mktemp("identity") / "he_to_ki67"))


class CountingModel:
    """Wraps a tile model and counts the tiles it is called on."""

    def __init__(self, model):
        self.model, self.tiles = model, 0

    def __call__(self, tiles):
        self.tiles += len(tiles)
        return self.model(tiles)


def he_image(height, width, seed=0):
    rng = np.random.default_rng(seed)
    return render_he(make_layout(rng, (height, width)), rng)


@pytest.mark.parametrize("length, margin", [(64, 16), (33, 0), (5, 4), (1, 0)])
def test_ramp_and_its_mirror_sum_to_one(length, margin):
    ramp = rising_ramp(length, margin)
    np.testing.assert_allclose(ramp + ramp[::-1], 1.0, atol=1e-12)
    assert ramp.min() >= 0 and ramp.max() <= 1


def test_ramp_is_zero_over_the_context_margin():
    ramp = rising_ramp(64, 16)
    assert np.all(ramp[:16] == 0) and np.all(ramp[-16:] == 1) and np.all(np.diff(ramp) >= 0)


def test_axis_weights_partition_unity_and_keep_image_borders():
    length, tile, margin = 1000, 256, 16
    starts = tile_starts(length, tile, 192)
    total = np.zeros(length)
    for start, weight in zip(starts, axis_weights(starts, tile, margin)):
        total[start:start + tile] += weight
    np.testing.assert_allclose(total, 1.0, atol=1e-12)
    weights = axis_weights(starts, tile, margin)
    assert weights[0][0] == 1 and weights[-1][-1] == 1 and weights[1][0] == 0


def test_layout_shrinks_tiles_to_small_images_and_rejects_tiny_ones():
    layout = TileLayout.plan(37, 600, StitchOptions(tile_size=128, overlap=32))
    assert (layout.tile_height, layout.tile_width) == (37, 128)
    assert layout.row_starts == (0,) and layout.col_starts[-1] == 600 - 128
    with pytest.raises(ValueError, match="pixels high and wide"):
        TileLayout.plan(15, 100, StitchOptions())


@pytest.mark.parametrize("height, width", [(301, 517), (37, 53), (256, 384), (130, 16)])
def test_identity_model_stitches_back_to_the_input(identity_model, tmp_path, height, width):
    """Odd sizes, smaller than a tile, multiples and non-multiples of the stride."""
    image = he_image(height, width)
    write_image_rgb(tmp_path / "he.png", image)
    # the identity model's glass is kept as it is: the stitching is compared pixel for pixel
    options = StainOptions(StitchOptions(tile_size=128, overlap=40, margin=8, batch_size=3, keep_background=True),
                           glass_colour=None)
    result = stain_file(tmp_path / "he.png", tmp_path / "out.png", identity_model, options)
    assert result.tiles_run == result.tiles_total
    np.testing.assert_array_equal(read_image_rgb(tmp_path / "out.png"), image)


def test_identity_model_whole_mode_is_one_call(identity_model, tmp_path):
    image = he_image(90, 123)
    write_image_rgb(tmp_path / "he.png", image)
    counting = CountingModel(identity_model)
    stain_file(tmp_path / "he.png", tmp_path / "out.png", counting, StainOptions(whole=True, glass_colour=None))
    assert counting.tiles == 1
    np.testing.assert_array_equal(read_image_rgb(tmp_path / "out.png"), image)


def test_background_tiles_are_white_and_not_run(identity_model, tmp_path):
    image = np.full((256, 512, 3), 245, np.uint8)  # glass
    image[:, :200] = he_image(256, 200)
    write_image_rgb(tmp_path / "he.png", image)
    counting = CountingModel(identity_model)
    options = StainOptions(StitchOptions(tile_size=128, overlap=32, margin=8), glass_colour=None)
    result = stain_file(tmp_path / "he.png", tmp_path / "out.png", counting, options)
    out = read_image_rgb(tmp_path / "out.png")
    assert 0 < counting.tiles == result.tiles_run < result.tiles_total
    assert np.all(out[:, 400:] == 255)
    np.testing.assert_array_equal(out[:, :150], image[:, :150])
