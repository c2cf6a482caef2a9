"""image_grid: labelled rows of images, drawn without pyplot."""

import numpy as np
import pytest

from virtual_ihc.evaluation.figures import image_grid
from virtual_ihc.io.images import read_image_rgb


def test_one_visible_panel_per_image_and_labelled_rows(tmp_path):
    rows = {"H&E": [np.zeros((8, 8, 3), np.uint8)] * 3, "map": [np.random.default_rng(0).random((8, 8))]}
    figure = image_grid(rows, column_titles=["a", "b", "c"], path=tmp_path / "grid.png", title="t")
    visible = [axis for axis in figure.axes if axis.axison]
    assert len(visible) == 4
    assert [axis.get_ylabel() for axis in figure.axes[::3]] == ["H&E", "map"]
    assert [axis.get_title() for axis in figure.axes[:3]] == ["a", "b", "c"]
    assert read_image_rgb(tmp_path / "grid.png").std() > 1.0


def test_no_rows_is_an_error():
    with pytest.raises(ValueError, match="no rows"):
        image_grid({})
