"""A grayscale H&E is masked on darkness and stained, not turned white."""

import keras
import numpy as np
from skimage.color import rgb2gray

from virtual_ihc.data.synthetic import make_layout, render_he
from virtual_ihc.export import export_saved_model
from virtual_ihc.histology.tissue import is_colourless, tissue_mask
from virtual_ihc.inference.model import StainModel
from virtual_ihc.inference.stitching import StitchOptions
from virtual_ihc.inference.whole_slide import StainOptions, stain_file
from virtual_ihc.io.images import read_image_rgb, write_image_rgb


def _grey_he_on_glass():
    rng = np.random.default_rng(0)
    image = np.full((256, 512, 3), 245, np.uint8)
    image[:, :200] = render_he(make_layout(rng, (256, 200)), rng)
    grey = np.round(rgb2gray(image) * 255).astype(np.uint8)
    return np.repeat(grey[:, :, None], 3, axis=2)


def test_tissue_of_a_grayscale_image_is_found_by_darkness():
    image = _grey_he_on_glass()
    assert is_colourless(image)
    mask = tissue_mask(image)
    assert mask[:, :190].mean() > 0.5 and not mask[:, 220:].any()
    assert not tissue_mask(np.full((64, 64, 3), 240, np.uint8)).any()  # blank glass stays background


def test_a_grayscale_he_is_stained_where_there_is_tissue(tmp_path, caplog):
    generator = keras.Sequential([keras.Input((None, None, 3)), keras.layers.Identity()])
    model = StainModel(export_saved_model(generator, tmp_path / "identity" / "he_to_ki67"))
    image = _grey_he_on_glass()
    write_image_rgb(tmp_path / "grey.png", image)
    # the identity model's output compared pixel for pixel: the generator's own glass is kept
    options = StainOptions(StitchOptions(tile_size=128, overlap=32, margin=8), glass_colour=None)
    result = stain_file(tmp_path / "grey.png", tmp_path / "out.png", model, options)
    out = read_image_rgb(tmp_path / "out.png")
    assert result.tiles_run > 0
    np.testing.assert_array_equal(out[:, :150], image[:, :150])  # identity model: the tissue comes back
    assert np.all(out[:, 400:] == 255)
    assert "no colour" in caplog.text
