"""Interrupted slide runs: nothing under the final name, and --resume finishes them exactly."""

import json

import numpy as np
import pytest
import tifffile

from virtual_ihc.data.synthetic import make_layout, render_he
from virtual_ihc.inference.stitching import StitchOptions
from virtual_ihc.inference.whole_slide import STATE_FILE, StainOptions, partial_dir, stain_file
from virtual_ihc.slides.synthetic_slides import write_image_as_slide

OPTIONS = StainOptions(StitchOptions(tile_size=128, overlap=48, margin=8, batch_size=4, keep_background=True),
                       compression="deflate")


class TileMeanModel:
    """Each output depends on its whole tile (like instance normalisation), so blending matters.

    Counts tiles; raises ``KeyboardInterrupt`` once ``fail_after`` tiles are done.
    """

    def __init__(self, fail_after=None):
        self.tiles, self.fail_after = 0, fail_after

    def __call__(self, tiles):
        if self.fail_after is not None and self.tiles + len(tiles) > self.fail_after:
            raise KeyboardInterrupt("simulated crash")
        self.tiles += len(tiles)
        means = tiles.mean(axis=(1, 2, 3), keepdims=True)
        return np.clip(0.5 * tiles + 0.5 * means + 20, 0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def slide(tmp_path_factory):
    rng = np.random.default_rng(5)
    image = render_he(make_layout(rng, (600, 700)), rng)
    return write_image_as_slide(tmp_path_factory.mktemp("slide") / "he.tif", image, mpp=0.25)


@pytest.fixture(scope="module")
def uninterrupted(slide, tmp_path_factory):
    result = stain_file(slide, tmp_path_factory.mktemp("reference") / "ki67.tif", TileMeanModel(), OPTIONS)
    return result, read_levels(result.output)


def read_levels(path):
    with tifffile.TiffFile(path) as tif:
        return [page.asarray() for page in tif.pages]


def interrupt(slide, output, fail_after):
    with pytest.raises(KeyboardInterrupt):
        stain_file(slide, output, TileMeanModel(fail_after=fail_after), OPTIONS)


def test_crash_leaves_no_output_but_a_partial_state(slide, tmp_path):
    output = tmp_path / "ki67.tif"
    interrupt(slide, output, fail_after=20)
    assert not output.exists()
    state = json.loads((partial_dir(output) / STATE_FILE).read_text())
    assert state["rows_done"] == 2  # 9 tiles a row in batches of 4: rows 0 and 1 finished


def test_resume_finishes_without_redoing_rows_and_matches(slide, uninterrupted, tmp_path):
    reference, reference_levels = uninterrupted
    output = tmp_path / "ki67.tif"
    interrupt(slide, output, fail_after=20)
    resumed_model = TileMeanModel()
    result = stain_file(slide, output, resumed_model, StainOptions(**{**OPTIONS.__dict__, "resume": True}))
    assert result.rows_resumed == 2
    assert resumed_model.tiles == reference.tiles_run - 2 * 9
    levels = read_levels(output)
    assert len(levels) == len(reference_levels) > 1
    for level, expected in zip(levels, reference_levels):
        np.testing.assert_array_equal(level, expected)
    assert not partial_dir(output).exists()


def test_without_resume_a_partial_run_starts_over(slide, tmp_path):
    output = tmp_path / "ki67.tif"
    interrupt(slide, output, fail_after=20)
    assert stain_file(slide, output, TileMeanModel(), OPTIONS).rows_resumed == 0


def test_resume_with_other_options_starts_over(slide, tmp_path):
    output = tmp_path / "ki67.tif"
    interrupt(slide, output, fail_after=20)
    changed = StainOptions(StitchOptions(tile_size=128, overlap=32, keep_background=True), resume=True)
    assert stain_file(slide, output, TileMeanModel(), changed).rows_resumed == 0


def test_resume_skips_a_finished_output(slide, uninterrupted):
    model = TileMeanModel()
    result = stain_file(slide, uninterrupted[0].output, model, StainOptions(resume=True))
    assert result.skipped and model.tiles == 0
