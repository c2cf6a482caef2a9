"""Glass stays glass: the stained output is the glass colour where the H&E is glass, the generator's elsewhere."""

import keras
import numpy as np
import pytest

from virtual_ihc.cli import main
from virtual_ihc.data.synthetic import make_layout, render_he
from virtual_ihc.export import export_saved_model
from virtual_ihc.inference.cli import glass_colour
from virtual_ihc.histology.tissue import tissue_weight
from virtual_ihc.inference.glass import GlassRule
from virtual_ihc.io.images import read_image_rgb, write_image_rgb

COLOUR = (10, 200, 30)


def he_on_glass():
    """Tissue on the left 200 px of a 256 x 512 image, glass (245) on the right."""
    rng = np.random.default_rng(0)
    image = np.full((256, 512, 3), 245, np.uint8)
    image[:, :200] = render_he(make_layout(rng, (256, 200)), rng)
    image[:, 190:200] = (200, 110, 160)  # a clean tissue edge
    return image


def test_glass_takes_the_colour_and_tissue_keeps_the_stain():
    he = he_on_glass()
    rule = GlassRule.for_slide(he, COLOUR)
    weight = tissue_weight(he, rule.threshold, rule.colourless)
    assert (weight[:, :190] == 1).mean() > 0.6  # most of the section is tissue
    stained = np.full((1, 256, 512, 3), 77, np.uint8)
    out = rule.apply(he[None], stained)[0]
    assert np.all(out[:, 220:] == COLOUR) and np.all(out[weight == 0] == COLOUR)
    assert np.all(out[weight == 1] == 77)
    assert len(np.unique(out[128, 195:215, 1])) > 3  # feathered: colours in between at the edge


@pytest.fixture(scope="module")
def identity_run(tmp_path_factory):
    run = tmp_path_factory.mktemp("run")
    generator = keras.Sequential([keras.Input((None, None, 3)), keras.layers.Identity()])
    export_saved_model(generator, run / "export" / "he_to_ki67")
    return run


@pytest.mark.parametrize("colour", ["10,200,30", "none"])
def test_glass_colour_option(identity_run, tmp_path, colour):
    he = he_on_glass()
    write_image_rgb(tmp_path / "he.png", he)
    assert main(["stain", str(tmp_path / "he.png"), str(tmp_path / "out.png"), "--model", str(identity_run),
                 "--tile-size", "128", "--overlap", "32", "--margin", "8", "--glass-colour", colour]) == 0
    out = read_image_rgb(tmp_path / "out.png")
    if colour == "none":  # the generator's glass inside tissue tiles, white in tiles that are not run
        np.testing.assert_array_equal(out[:, :150], he[:, :150])
        assert np.all(out[:, 400:] == 255)
    else:  # glass in tissue tiles and tiles not run alike; tissue as the (identity) generator stains it
        rule = GlassRule.for_slide(he, COLOUR)  # the image is its own overview (under 1024 px)
        weight = tissue_weight(he, rule.threshold, rule.colourless)
        assert np.all(out[:, 220:] == COLOUR) and np.all(out[weight == 0] == COLOUR)
        np.testing.assert_array_equal(out[weight == 1], he[weight == 1])


def test_glass_colour_values_are_checked(identity_run, tmp_path, capsys):
    assert glass_colour("1, 2,3") == (1, 2, 3) and glass_colour("None") is None
    write_image_rgb(tmp_path / "he.png", he_on_glass()[:64, :64])
    with pytest.raises(SystemExit) as exit_info:
        main(["stain", str(tmp_path / "he.png"), str(tmp_path / "out.png"), "--model", str(identity_run),
              "--glass-colour", "300,0,0"])
    assert exit_info.value.code == 2 and "R,G,B with values 0-255" in capsys.readouterr().err
