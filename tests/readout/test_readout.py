"""The Ki-67 readout of a synthetic virtual slide whose nuclei and their status are known."""

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from shapely.geometry import shape

from virtual_ihc.cli import main
from virtual_ihc.data.synthetic import make_layout, render_ki67
from virtual_ihc.io.images import read_image_rgb
from virtual_ihc.io.tiff_pyramid import TiffPyramidWriter, StreamedPyramid, level_shapes
from virtual_ihc.readout.qupath import read_roi
from virtual_ihc.readout.slide_readout import GeometryError, ReadoutOptions, read_out
from virtual_ihc.slides.synthetic_slides import write_image_as_slide

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"
SIZE = 600  # virtual slide side; the H&E is twice as large (0.25 against 0.5 µm/px)
OPTIONS = ReadoutOptions(region_um=100, hotspot_min_nuclei=50, tile_size=256)


@pytest.fixture(scope="module")
def slides(tmp_path_factory):
    folder = tmp_path_factory.mktemp("slides")
    rng = np.random.default_rng(0)
    layout = make_layout(rng, (SIZE, SIZE), positive_fraction=0.3)
    virtual = write_image_as_slide(folder / "virtual.tif", render_ki67(layout, rng), mpp=0.5)
    he = write_image_as_slide(folder / "he.tif", np.full((2 * SIZE, 2 * SIZE, 3), 240, np.uint8), mpp=0.25)
    return layout, virtual, he


@pytest.fixture(scope="module")
def readout(slides, tmp_path_factory):
    layout, virtual, he = slides
    out = tmp_path_factory.mktemp("readout")
    return read_out(virtual, out, he, options=OPTIONS), out


def features(out):
    return json.loads((out / "cells.geojson").read_text())["features"]


def test_the_index_of_the_known_positive_nuclei_is_recovered(slides, readout):
    layout, _, _ = slides
    summary, _ = readout
    assert abs(summary.index - layout.labelling_index) <= 0.05
    assert summary.nuclei == pytest.approx(len(layout.positive), rel=0.05)  # tiles do not count a nucleus twice


def test_every_cell_reads_back_at_its_nucleus_in_the_he_frame(slides, readout):
    layout, _, _ = slides
    summary, out = readout
    cells = features(out)
    assert len(cells) == summary.cells_written == summary.nuclei
    for cell in cells:
        polygon = shape(cell["geometry"])  # a maintained geometry library reads it back
        assert polygon.is_valid and polygon.area > 0
        x, y = polygon.centroid.x / 2, polygon.centroid.y / 2  # H&E level 0 -> virtual slide
        assert layout.nucleus_labels[int(y), int(x)] > 0


def test_cells_follow_qupaths_detection_format(readout):
    """Same keys and value types at every level as a detection exported by QuPath (the fixture)."""
    _, out = readout
    reference = json.loads((FIXTURES / "qupath_detections.geojson").read_text())
    written = json.loads((out / "cells.geojson").read_text())

    def skeleton(value):
        if isinstance(value, dict):
            return {key: skeleton(item) for key, item in value.items()}
        if isinstance(value, list):
            return "list"
        return type(value).__name__ if not isinstance(value, (int, float)) else "number"

    assert written.keys() == reference.keys() and written["type"] == "FeatureCollection"
    for feature in written["features"][:20]:
        assert skeleton(feature) == skeleton(reference["features"][0])
        classification = feature["properties"]["classification"]
        assert classification in [item["properties"]["classification"] for item in reference["features"]]
    assert {feature["properties"]["classification"]["name"] for feature in written["features"]} == {
        "Positive", "Negative"}


def test_regions_add_up_and_the_hot_spot_has_the_highest_index(readout):
    summary, out = readout
    with open(out / "regions.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert sum(int(row["nuclei"]) for row in rows) == summary.nuclei
    assert sum(int(row["positive"]) for row in rows) == summary.positive
    assert rows[0]["side_um"] == "100.0"
    eligible = [row for row in rows if int(row["nuclei"]) >= OPTIONS.hotspot_min_nuclei]
    best = max(eligible, key=lambda row: float(row["index"]))
    assert (summary.hot_spot["row"], summary.hot_spot["col"]) == (int(best["row"]), int(best["col"]))
    assert read_image_rgb(out / "index_map.png").shape[:2] == (SIZE, SIZE)  # the thumbnail of a small slide
    layer = json.loads((out / "index_layer.json").read_text())
    assert (layer["rows"], layer["columns"], layer["region_px"]) == (3, 3, 200)


def test_report_states_the_indices_the_caveat_and_what_was_counted(readout):
    summary, out = readout
    report = (out / "report.md").read_text()
    assert f"**{summary.index:.3f}**" in report and f"**{summary.hot_spot['index']:.3f}**" in report
    assert "not a diagnosis" in report and "every nucleus" in report


def test_a_region_of_interest_restricts_the_count(slides, readout, tmp_path):
    layout, virtual, he = slides
    roi = read_roi(FIXTURES / "qupath_annotations.geojson")  # the left half of the H&E; its point is ignored
    assert roi.bounds == (0, 0, 600, 1200)
    summary = read_out(virtual, tmp_path, he, FIXTURES / "qupath_annotations.geojson", OPTIONS)
    centroids = [shape(cell["geometry"]).centroid.x for cell in features(tmp_path)]
    assert max(centroids) < 600 + 1 and 0.35 < summary.nuclei / readout[0].nuclei < 0.65
    report = (tmp_path / "report.md").read_text()
    assert "qupath_annotations.geojson" in report and "every nucleus" not in report


def test_hot_spot_needs_its_minimum_count(slides, tmp_path):
    _, virtual, he = slides
    summary = read_out(virtual, tmp_path, he, options=ReadoutOptions(region_um=100, hotspot_min_nuclei=10_000))
    assert summary.hot_spot is None and "no 100 µm region has 10000 nuclei" in (tmp_path / "report.md").read_text()


def test_geometry_comes_from_the_stained_tiffs_description(slides, tmp_path):
    """Without --he, the downsample virtual-ihc stain records in the TIFF puts the cells on the H&E."""
    layout, virtual, _ = slides
    image = read_image_rgb(virtual)
    description = json.dumps({"virtual_ihc": {"source": "he.svs", "source_size": [2 * SIZE, 2 * SIZE],
                                              "downsample": 2.0}})
    path = tmp_path / "described.tif"
    pyramid = StreamedPyramid(TiffPyramidWriter(path, level_shapes(SIZE, SIZE), "deflate", 0.5,
                                                description=description))
    pyramid.add_rows(image)
    pyramid.finish()
    summary = read_out(path, tmp_path / "out", options=OPTIONS)
    assert summary.downsample == 2.0 and "he.svs" in summary.geometry_source
    x, y = np.mean([shape(cell["geometry"]).centroid.coords[0] for cell in features(tmp_path / "out")], axis=0)
    assert 400 < x < 800 and 400 < y < 800  # the middle of the 1200 px H&E frame


def test_slides_of_different_shapes_are_refused(slides, tmp_path):
    _, virtual, _ = slides
    other = write_image_as_slide(tmp_path / "other.tif", np.full((700, 1200, 3), 240, np.uint8), mpp=0.25)
    with pytest.raises(GeometryError, match="not .* at one scale"):
        read_out(virtual, tmp_path / "out", other, options=OPTIONS)


@pytest.mark.parametrize("extra, message", [
    (["--roi", "missing.geojson"], "no such region-of-interest file"),
    (["--region-um", "0"], "region size must be positive"),
])
def test_bad_input_exits_2_with_one_line(slides, tmp_path, capsys, extra, message):
    _, virtual, he = slides
    assert main(["readout", str(virtual), "--he", str(he), "--out", str(tmp_path / "out"), *extra]) == 2
    error = capsys.readouterr().err
    assert message in error and error.count("\n") == 1
    assert not (tmp_path / "out" / "cells.geojson").exists()


def test_a_slide_without_resolution_is_refused(tmp_path, capsys):
    write_image_as_slide(tmp_path / "plain.tif", np.full((64, 64, 3), 240, np.uint8), mpp=None)
    assert main(["readout", str(tmp_path / "plain.tif"), "--out", str(tmp_path / "out")]) == 2
    assert "no µm/px" in capsys.readouterr().err


def test_outlines_of_necked_nuclei_are_valid_polygons():
    from shapely.geometry import Polygon

    from virtual_ihc.readout.cells import outline

    mask = np.zeros((12, 20), bool)
    mask[2:10, 2:8] = mask[2:10, 12:18] = True
    mask[5, 8:12] = True  # a one-pixel neck between two lobes
    polygon = Polygon(outline(mask))
    assert polygon.is_valid and 0.8 * mask.sum() <= polygon.area <= mask.sum()  # both lobes and the neck
