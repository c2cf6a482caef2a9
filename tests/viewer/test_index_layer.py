"""The readout's Ki-67 index layer in the viewer, without a browser: found, placed, served, refused."""

import http.client
import json

import numpy as np
import pytest

from virtual_ihc import cli
from virtual_ihc.readout.regions import RegionCounts, write_index_layer
from virtual_ihc.viewer.deep_zoom import SlideOpenError, open_viewer_slides
from virtual_ihc.viewer.index_layer import open_index_layer

MPP = 0.5


def readout_folder(folder, virtual_size=(1600, 1200), region_px=800):
    """A readout of a ``virtual_size`` slide in regions of ``region_px``: index 0, 1 / 1, 0 (a 2 x 2 checkerboard)."""
    counts = RegionCounts.empty(*virtual_size, region_px)
    counts.nuclei[:] = 10
    counts.positive[:] = 10 * (np.indices(counts.nuclei.shape).sum(axis=0) % 2)
    folder.mkdir(parents=True, exist_ok=True)
    write_index_layer(folder, counts, 1.0, "virtual.tif", virtual_size, region_px * MPP)
    return folder


@pytest.fixture
def slides(make_slide):
    glass = np.full((1200, 1600, 3), 245, np.uint8)
    return [make_slide("he.tif", glass, mpp=MPP), make_slide("virtual.tif", glass, mpp=MPP),
            make_slide("small.tif", glass[:600, :800], mpp=2 * MPP)]


def test_the_layer_covers_the_slide_of_the_readouts_size(slides, tmp_path):
    opened = open_viewer_slides(slides[1:])
    try:
        layer = open_index_layer(readout_folder(tmp_path / "readout"), opened)
        assert layer.slide == 0 and layer.width_fraction == 1.0 and layer.png.startswith(b"\x89PNG")
        wider = open_index_layer(readout_folder(tmp_path / "wider", region_px=700), opened)
        assert wider.width_fraction == pytest.approx(3 * 700 / 1600)  # the last column reaches past the edge
    finally:
        for slide in opened:
            slide.close()


def test_manifest_places_the_layer_and_the_server_serves_it(slides, serve_slides, tmp_path):
    with serve_slides(slides, readout=readout_folder(tmp_path / "readout")) as server:
        manifest = server.manifest
        connection = http.client.HTTPConnection(*server.server_address[:2], timeout=10)
        connection.request("GET", "/index_layer.png")
        response = connection.getresponse()
        body = response.read()
        connection.close()
    # the H&E and the virtual slide have the readout's size: the one of its name
    assert manifest["index_layer"] == {"url": "index_layer.png", "slide": 1, "world_width": 1600 * MPP}
    assert response.status == 200 and response.getheader("Content-Type") == "image/png"
    assert body == (tmp_path / "readout" / "index_layer.png").read_bytes()


def test_without_a_readout_there_is_no_layer(slides, serve_slides):
    with serve_slides(slides) as server:
        assert server.manifest["index_layer"] is None
        connection = http.client.HTTPConnection(*server.server_address[:2], timeout=10)
        connection.request("GET", "/index_layer.png")
        assert connection.getresponse().status == 404
        connection.close()


def test_a_readout_of_no_given_slide_is_an_error(slides, tmp_path, capsys):
    folder = readout_folder(tmp_path / "readout", virtual_size=(999, 777))
    assert cli.main(["view", str(slides[0]), "--readout", str(folder), "--port", "0"]) == 2
    assert "999x777 virtual slide" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    with pytest.raises(SlideOpenError, match="not a virtual-ihc readout folder"):
        open_index_layer(tmp_path / "empty", [])


def test_layer_json_says_where_the_regions_lie(tmp_path):
    description = json.loads((readout_folder(tmp_path / "readout") / "index_layer.json").read_text())
    assert description == {"image": "index_layer.png", "slide": "virtual.tif", "virtual_size": [1600, 1200],
                           "columns": 2, "rows": 2, "region_px": 800.0, "region_um": 400.0}
