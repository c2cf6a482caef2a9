"""Patchwork measures, and a synthetic slide whose tiles differ in tissue content stained three ways."""

import keras
import numpy as np
import pytest

from virtual_ihc.config import GeneratorConfig
from virtual_ihc.export import export_generators
from virtual_ihc.inference.glass import GlassRule
from virtual_ihc.inference.model import StainModel
from virtual_ihc.inference.patchwork import (boundary_gradient_ratio, cell_bounds, glass_spread, grid_cells,
                                             he_glass_mask, he_tissue_mask, mean_colour_difference)
from virtual_ihc.inference.seams import seam_lines
from virtual_ihc.inference.slide_statistics import NormalizationOptions
from virtual_ihc.inference.stitching import StitchOptions, TileLayout
from virtual_ihc.inference.whole_slide import StainOptions, stain_file
from virtual_ihc.io.images import read_image_rgb, write_image_rgb
from virtual_ihc.models import build_resnet_generator
from virtual_ihc.slides.synthetic_slides import consecutive_sections

SIZE, TILE = 384, 128
STITCH = StitchOptions(tile_size=TILE, overlap=32, margin=8)


def test_cells_end_at_the_overlap_centres():
    assert cell_bounds([0, 96, 192], 128, 320) == [(0, 112), (112, 208), (208, 320)]
    assert len(grid_cells([0, 96], [0], 128, 224, 100)) == 2


def test_glass_spread_is_the_range_of_the_cells_mean_glass_grey():
    image = np.full((100, 200, 3), 250, np.uint8)
    image[:, 100:] = 230  # the right cell's glass is darker
    image[40:60, 40:60] = 0  # tissue, excluded by the glass mask
    glass = np.ones((100, 200), bool)
    glass[40:60, 40:60] = False
    cells = [(slice(0, 100), slice(0, 100)), (slice(0, 100), slice(100, 200))]
    spread = glass_spread(image, glass, cells)
    assert spread["range"] == pytest.approx(20) and spread["cells"] == 2


def test_gradient_ratio_is_one_without_a_grid_and_high_with_tile_offsets():
    rng = np.random.default_rng(0)
    texture = rng.integers(100, 140, (256, 256, 3))
    lines = seam_lines([0, 64, 128, 192], 64, 256)
    assert boundary_gradient_ratio(texture.astype(np.uint8), lines, lines) == pytest.approx(1.0, abs=0.1)
    offsets = np.kron(rng.normal(0, 20, (4, 4)), np.ones((64, 64)))[:, :, None]
    patched = np.clip(texture + offsets, 0, 255).astype(np.uint8)
    assert boundary_gradient_ratio(patched, lines, lines) > 1.5
    mask = np.zeros((256, 256), bool)  # only pairs inside the mask count: none across a seam here
    mask[8:56, 8:56] = True
    assert np.isnan(boundary_gradient_ratio(patched, lines, lines, mask))


def test_colour_difference_counts_only_the_mask():
    a, b = np.zeros((4, 4, 3), np.uint8), np.zeros((4, 4, 3), np.uint8)
    b[:2] = 30
    mask = np.zeros((4, 4), bool)
    mask[:2, :2] = mask[2:, 2:] = True
    assert mean_colour_difference(a, b, mask) == pytest.approx(15)


@pytest.fixture(scope="module")
def stained(tmp_path_factory):
    """A section on glass (tiles from all glass to all tissue) stained per tile, slide-consistently and whole."""
    folder = tmp_path_factory.mktemp("patchwork")
    keras.utils.set_random_seed(0)
    generator = build_resnet_generator(GeneratorConfig(base_filters=4, num_residual_blocks=1))
    model = StainModel(export_generators({"he_to_ki67": generator}, folder / "export")["he_to_ki67"])
    he = consecutive_sections(SIZE, seed=3, tissue_fraction=0.35).he
    write_image_rgb(folder / "he.png", he)
    runs = {"per-tile": StainOptions(STITCH, normalization=NormalizationOptions("tile"), glass_colour=None),
            "default": StainOptions(STITCH), "whole": StainOptions(whole=True)}
    outputs = {name: read_image_rgb(stain_file(folder / "he.png", folder / f"{name}.png", model, options).output)
               for name, options in runs.items()}
    layout = TileLayout.plan(SIZE, SIZE, STITCH)
    rule = GlassRule.for_slide(he, (255, 255, 255))
    tissue, inside = he_tissue_mask(he, rule), he_tissue_mask(he, rule, erode=4)
    glass = he_glass_mask(he, rule, clearance=4)
    lines = seam_lines(list(layout.row_starts), TILE, SIZE)
    cells = grid_cells(list(layout.row_starts), list(layout.col_starts), TILE, SIZE, SIZE)
    fractions = [tissue[rows, cols].mean() for rows, cols in cells]
    return {name: {"glass_spread": glass_spread(image, glass, cells)["range"],
                   "gradient_ratio": boundary_gradient_ratio(image, lines, lines, inside),
                   "difference_from_whole": mean_colour_difference(image, outputs["whole"], inside)}
            for name, image in outputs.items()} | {"tissue_fractions": fractions}


@pytest.mark.slow
def test_the_slide_has_glass_tissue_and_mixed_tiles(stained):
    fractions = stained["tissue_fractions"]
    assert min(fractions) == 0 and max(fractions) > 0.9 and any(0.1 < value < 0.5 for value in fractions)


@pytest.mark.slow
def test_per_tile_normalisation_shows_the_grid_on_the_glass(stained):
    print(stained)  # the figures of docs/stain.md's synthetic check
    assert stained["per-tile"]["glass_spread"] > 10


@pytest.mark.slow
def test_the_default_keeps_glass_even_and_tissue_close_to_the_whole_image(stained):
    default, per_tile = stained["default"], stained["per-tile"]
    assert default["glass_spread"] <= 3 and stained["whole"]["glass_spread"] <= 3
    assert default["gradient_ratio"] <= 1.1
    assert default["difference_from_whole"] <= 0.5 * per_tile["difference_from_whole"]
