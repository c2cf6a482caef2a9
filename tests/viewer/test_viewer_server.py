"""``virtual-ihc view`` without a browser: slides, DZI, tiles, what is never served, the command line."""

import http.client
import json
import os
import signal
import subprocess
import sys
import xml.etree.ElementTree as ElementTree
from pathlib import Path

import cv2
import numpy as np
import openslide
import pytest

from virtual_ihc import cli
from virtual_ihc.viewer.cli import is_loopback
from virtual_ihc.viewer.deep_zoom import SlideOpenError, TileOptions, open_viewer_slide
from virtual_ihc.viewer.server import STATIC_DIR

REPO = Path(__file__).parents[2]


def get(server, path: str, host: str | None = None):
    """``(status, body, content type)`` of a GET sent with ``path`` exactly as written (no normalisation)."""
    connection = http.client.HTTPConnection(host or server.server_address[0], server.server_address[1], timeout=10)
    try:
        connection.request("GET", path)
        response = connection.getresponse()
        return response.status, response.read(), response.getheader("Content-Type")
    finally:
        connection.close()


def textured_image(height: int, width: int, seed: int = 0) -> np.ndarray:
    """Smooth random colours: survive JPEG well enough to compare tiles pixel by pixel."""
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (height // 16 + 1, width // 16 + 1, 3), dtype=np.uint8)
    return cv2.resize(small, (width, height), interpolation=cv2.INTER_LINEAR)


def test_dzi_describes_the_slide(make_slide, serve_slides):
    path = make_slide("he.tif", textured_image(600, 1000), mpp=0.5)
    with serve_slides([path]) as server:
        status, body, content_type = get(server, "/slides/0.dzi")
    assert status == 200 and content_type == "application/xml"
    image = ElementTree.fromstring(body)
    namespace = "{http://schemas.microsoft.com/deepzoom/2008}"
    assert image.tag == namespace + "Image"
    assert (image.get("TileSize"), image.get("Overlap"), image.get("Format")) == ("254", "1", "jpeg")
    size = image.find(namespace + "Size")
    assert (int(size.get("Width")), int(size.get("Height"))) == (1000, 600)


def test_full_resolution_tile_holds_the_slide_pixels(make_slide, serve_slides):
    image = textured_image(600, 1000, seed=1)
    path = make_slide("he.tif", image, mpp=0.5)
    # Deep Zoom levels go from 1 x 1 up to full size: 1000 px wide -> levels 0..10
    with serve_slides([path]) as server:
        status, body, content_type = get(server, "/slides/0_files/10/1_0.jpeg")
    assert status == 200 and content_type == "image/jpeg"
    tile = cv2.cvtColor(cv2.imdecode(np.frombuffer(body, np.uint8), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
    # column 1 of 254-px tiles with a 1-px overlap on each side: x from 253 to 509, y from 0 to 255
    assert tile.shape == (255, 256, 3)
    expected = image[0:255, 253:509].astype(int)
    assert np.abs(tile.astype(int) - expected).mean() < 4  # two JPEG encodings (slide, tile) apart


def test_tile_options_set_tile_size_overlap_and_quality(make_slide):
    path = make_slide("he.tif", textured_image(600, 1000, seed=3), mpp=0.5)
    small_tiles = open_viewer_slide(path, TileOptions(tile_size=126, overlap=2))
    low_quality = open_viewer_slide(path, TileOptions(quality=30))
    default = open_viewer_slide(path)
    try:
        image = ElementTree.fromstring(small_tiles.dzi())
        assert (image.get("TileSize"), image.get("Overlap")) == ("126", "2")
        tile = cv2.imdecode(np.frombuffer(small_tiles.tile_jpeg(10, 1, 1), np.uint8), cv2.IMREAD_COLOR)
        assert tile.shape == (126 + 2 * 2, 126 + 2 * 2, 3)  # an interior tile: overlap on every side
        assert len(low_quality.tile_jpeg(10, 0, 0)) < 0.8 * len(default.tile_jpeg(10, 0, 0))  # quality 30 vs 80
    finally:
        for slide in (small_tiles, low_quality, default):
            slide.close()


@pytest.mark.parametrize("options", [dict(tile_size=0), dict(overlap=-1), dict(quality=0), dict(quality=96)])
def test_tile_options_reject_bad_values(options):
    with pytest.raises(ValueError):
        TileOptions(**options)


def test_plain_png_is_served_as_a_one_level_slide(tmp_path, serve_slides):
    image = textured_image(300, 400, seed=2)
    path = tmp_path / "he.png"
    cv2.imwrite(str(path), cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
    with serve_slides([path]) as server:
        manifest = json.loads(get(server, "/slides.json")[1])
        status, body, _ = get(server, "/slides/0_files/9/0_0.jpeg")  # 400 px wide -> levels 0..9
    assert manifest["slides"][0]["width"] == 400 and manifest["slides"][0]["mpp"] is None
    tile = cv2.cvtColor(cv2.imdecode(np.frombuffer(body, np.uint8), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
    assert status == 200 and tile.shape == (255, 255, 3)
    assert np.abs(tile.astype(int) - image[:255, :255]).mean() < 3


def test_manifest_places_slides_by_physical_size(make_slide, serve_slides):
    # a virtual slide stained at half the resolution covers the same micrometres
    he = make_slide("he.tif", textured_image(512, 800), mpp=0.25)
    virtual = make_slide("virtual.tif", textured_image(256, 400), mpp=0.5)
    with serve_slides([he, virtual]) as server:
        status, body, content_type = get(server, "/slides.json")
    manifest = json.loads(body)
    assert status == 200 and content_type == "application/json"
    assert manifest["world_units"] == "um"
    assert [slide["name"] for slide in manifest["slides"]] == ["he.tif", "virtual.tif"]
    assert [slide["mpp"] for slide in manifest["slides"]] == pytest.approx([0.25, 0.5])
    assert [slide["world_width"] for slide in manifest["slides"]] == pytest.approx([200.0, 200.0])


def test_manifest_falls_back_to_slide_widths_without_mpp(make_slide, serve_slides):
    he = make_slide("he.tif", textured_image(256, 400), mpp=0.25)
    virtual = make_slide("virtual.tif", textured_image(256, 400), mpp=None)
    with serve_slides([he, virtual]) as server:
        manifest = json.loads(get(server, "/slides.json")[1])
    assert manifest["world_units"] == "slide_width"
    assert [slide["world_width"] for slide in manifest["slides"]] == [1.0, 1.0]


def test_page_and_openseadragon_are_served(make_slide, serve_slides):
    path = make_slide("he.tif", textured_image(256, 256))
    with serve_slides([path]) as server:
        page = get(server, "/")
        script = get(server, "/static/openseadragon/openseadragon.min.js")
        button = get(server, "/static/openseadragon/images/zoomin_rest.png")
    assert page[0] == 200 and page[2] == "text/html" and b"openseadragon.min.js" in page[1]
    assert script[0] == 200 and script[1] == (STATIC_DIR / "openseadragon" / "openseadragon.min.js").read_bytes()
    assert button[0] == 200 and button[2] == "image/png"


def test_every_static_file_is_package_data():
    import tomllib
    from pathlib import PurePosixPath

    patterns = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"][
        "virtual_ihc.viewer"]
    files = [PurePosixPath(path.relative_to(STATIC_DIR.parent).as_posix())
             for path in STATIC_DIR.rglob("*") if path.is_file()]
    assert len(files) > 40  # page, script, style, OpenSeadragon, its licence and button images
    unshipped = [str(file) for file in files
                 if not any(file.match(pattern) and len(file.parts) == len(PurePosixPath(pattern).parts)
                            for pattern in patterns)]
    assert not unshipped


@pytest.mark.parametrize("host, loopback", [("127.0.0.1", True), ("127.0.0.2", True), ("localhost", True),
                                            ("::1", True), ("0.0.0.0", False), ("192.168.1.20", False),
                                            ("::", False), ("example.org", False)])
def test_is_loopback(host, loopback):
    assert is_loopback(host) is loopback


def test_openseadragon_ships_with_its_licence():
    licence = (STATIC_DIR / "openseadragon" / "LICENSE.txt").read_text()
    assert "Redistribution and use in source and binary forms" in licence
    assert (STATIC_DIR / "openseadragon" / "openseadragon.min.js").read_text()[:40].startswith("//! openseadragon")


@pytest.mark.parametrize("path", [
    "/static/../server.py",
    "/static/%2e%2e/server.py",
    "/static/..%2fserver.py",
    "/static/openseadragon/../../deep_zoom.py",
    "/static/%2E%2E%2F%2E%2E%2Fsecret.txt",
    "/../secret.txt",
    "/slides/../secret.txt",
    "/slides/0_files/../../secret.txt",
    "/slides/..%2f..%2fsecret.txt",
    "/slides/0.dzi/../../secret.txt",
    "//etc/passwd",
    "/static//etc/passwd",
    "/secret.txt",
    "/static/secret.txt",
])
def test_paths_outside_the_slides_and_static_files_are_never_served(path, tmp_path, make_slide, serve_slides):
    slide = make_slide("he.tif", textured_image(256, 256))
    secret = "do not serve me"
    (tmp_path / "secret.txt").write_text(secret)
    with serve_slides([slide]) as server:
        status, body, _ = get(server, path)
        control = get(server, "/static/viewer.js")  # the same server does serve its own files
    assert status == 404
    assert secret.encode() not in body and b"import " not in body and b"root:" not in body
    assert control[0] == 200


@pytest.mark.parametrize("path", ["/slides/1.dzi", "/slides/0_files/99/0_0.jpeg", "/slides/0_files/9/5_0.jpeg",
                                  "/slides/0_files/1234567890123/0_0.jpeg"])
def test_unknown_slides_and_tiles_are_404(path, make_slide, serve_slides):
    slide = make_slide("he.tif", textured_image(256, 256))
    with serve_slides([slide]) as server:
        assert get(server, path)[0] == 404
        assert get(server, "/slides/0_files/8/0_0.jpeg")[0] == 200


def test_unreadable_tile_is_a_500_and_the_server_goes_on(make_slide, serve_slides, monkeypatch):
    slide = make_slide("he.tif", textured_image(256, 256))
    with serve_slides([slide]) as server:
        viewer_slide = server.slides[0]
        read_tile = viewer_slide.tile_jpeg
        calls = []

        def failing_once(*args):
            calls.append(args)
            if len(calls) == 1:
                raise openslide.OpenSlideError("damaged JPEG tile")
            return read_tile(*args)

        monkeypatch.setattr(viewer_slide, "tile_jpeg", failing_once)
        assert get(server, "/slides/0_files/8/0_0.jpeg")[0] == 500
        assert get(server, "/slides/0_files/8/0_0.jpeg")[0] == 200


def test_server_binds_loopback_by_default(make_slide, serve_slides):
    with serve_slides([make_slide("he.tif", textured_image(256, 256))]) as server:
        assert server.server_address[0] == "127.0.0.1"
        assert server.url == f"http://127.0.0.1:{server.server_address[1]}/"


def test_missing_slide_is_an_error_naming_it(tmp_path, make_slide, capsys):
    slide = make_slide("he.tif", textured_image(256, 256))
    missing = tmp_path / "virtual_missing.tif"
    assert cli.main(["view", str(slide), str(missing), "--port", "0"]) == 2
    error = capsys.readouterr().err
    assert str(missing) in error and "no such file" in error


@pytest.mark.filterwarnings("ignore:Corrupt EXIF data")
@pytest.mark.parametrize("content", [b"", b"II*\x00 this is not a TIFF", b"\x89PNG\r\n\x1a\n truncated"])
def test_unreadable_slide_is_an_error_naming_it(content, tmp_path, make_slide, capsys):
    slide = make_slide("he.tif", textured_image(256, 256))
    broken = tmp_path / "broken.tif"
    broken.write_bytes(content)
    assert cli.main(["view", str(slide), str(broken), "--port", "0"]) == 2
    assert str(broken) in capsys.readouterr().err
    with pytest.raises(SlideOpenError, match="broken.tif"):
        open_viewer_slide(broken)


def test_folder_is_not_a_slide(tmp_path):
    with pytest.raises(SlideOpenError, match="not a file"):
        open_viewer_slide(tmp_path)


def start_view_command(*args: str) -> tuple[subprocess.Popen, str]:
    """Run ``virtual-ihc view ARGS`` in a subprocess; returns it and the address it prints."""
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    process = subprocess.Popen([sys.executable, "-m", "virtual_ihc.cli", "view", *args],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    line = process.stdout.readline()
    if "http://" not in line:
        process.kill()
        raise AssertionError(f"no address printed: {line!r} {process.stderr.read()}")
    return process, line.split("open ", 1)[1].split()[0]


def stop_view_command(process: subprocess.Popen) -> int:
    process.send_signal(signal.SIGINT)  # Ctrl+C
    return process.wait(timeout=30)


def reachable(host: str, port: int) -> bool:
    try:
        connection = http.client.HTTPConnection(host, port, timeout=5)
        connection.request("GET", "/slides.json")
        return connection.getresponse().status == 200
    except ConnectionRefusedError:
        return False


@pytest.mark.parametrize("host_args, listening, not_listening", [
    ((), "127.0.0.1", "127.0.0.2"),
    (("--host", "127.0.0.2"), "127.0.0.2", "127.0.0.1"),
])
def test_view_command_listens_only_on_its_host(host_args, listening, not_listening, make_slide):
    slide = make_slide("he.tif", textured_image(256, 256))
    process, url = start_view_command(str(slide), "--port", "0", *host_args)
    try:
        port = int(url.rstrip("/").rsplit(":", 1)[1])
        assert url == f"http://{listening}:{port}/"
        assert reachable(listening, port)
        assert not reachable(not_listening, port)
    finally:
        assert stop_view_command(process) == 0


def test_view_command_uses_the_given_port(make_slide):
    import socket

    with socket.socket() as probe:  # a port that is free now
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    slide = make_slide("he.tif", textured_image(256, 256))
    process, url = start_view_command(str(slide), "--port", str(port))
    try:
        assert url == f"http://127.0.0.1:{port}/" and reachable("127.0.0.1", port)
    finally:
        assert stop_view_command(process) == 0


def test_port_in_use_is_a_clear_error(make_slide, serve_slides, capsys):
    slide = make_slide("he.tif", textured_image(256, 256))
    with serve_slides([slide]) as server:
        port = server.server_address[1]
        assert cli.main(["view", str(slide), "--port", str(port)]) == 2
    assert f"cannot listen on 127.0.0.1:{port}" in capsys.readouterr().err


def test_viewer_does_not_import_tensorflow():
    code = ("import sys; from virtual_ihc import cli; cli.build_parser('view'); "
            "import virtual_ihc.viewer.server; assert 'tensorflow' not in sys.modules, 'tensorflow imported'")
    completed = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                               env=dict(os.environ, PYTHONPATH=str(REPO)))
    assert completed.returncode == 0, completed.stderr
