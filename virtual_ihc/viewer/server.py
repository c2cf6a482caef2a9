"""The viewer's local web server: the page, OpenSeadragon, and Deep Zoom tiles.

Routes (GET only)::

    /                                  the page (static/index.html)
    /slides.json                       the slides: name, DZI address, µm/px, size
    /slides/<i>.dzi                    Deep Zoom descriptor of slide i
    /slides/<i>_files/<z>/<c>_<r>.jpeg one tile
    /index_layer.png                   the readout's Ki-67 index layer (``--readout``), if any
    /static/<file>                     the page's script and style, OpenSeadragon

No address is turned into a file path: slides are served by their index among the
slides given on the command line, and static files from a table of the files
shipped in ``virtual_ihc/viewer/static`` made when the server starts. A request
for anything else (``../``, encoded or not, absolute paths, other files) is a 404.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import mimetypes
import re
import socket
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlsplit

import openslide

from virtual_ihc.viewer.deep_zoom import ViewerSlide
from virtual_ihc.viewer.index_layer import IndexLayer

logger = logging.getLogger(__name__)

STATIC_DIR = Path(__file__).parent / "static"
#: loopback: the viewer is a local tool; other hosts only with --host
DEFAULT_HOST = "127.0.0.1"

_DZI = re.compile(r"/slides/(\d{1,9})\.dzi")
_TILE = re.compile(r"/slides/(\d{1,9})_files/(\d{1,9})/(\d{1,9})_(\d{1,9})\.jpeg")


@dataclasses.dataclass(frozen=True)
class ServerOptions:
    """Where the viewer listens.

    Attributes:
        host: address to bind; loopback unless the user asks for more.
        port: TCP port; 0 lets the system pick a free one.
    """

    host: str = DEFAULT_HOST
    port: int = 8000


def static_files(folder: Path = STATIC_DIR) -> dict[str, Path]:
    """``{"/static/<relative path>": file}`` for every file under ``folder`` (what may be served)."""
    return {"/static/" + path.relative_to(folder).as_posix(): path
            for path in sorted(folder.rglob("*")) if path.is_file()}


def slides_manifest(slides: list[ViewerSlide], index_layer: IndexLayer | None = None) -> dict:
    """What the page needs to lay out the panes (``/slides.json``).

    ``world_units`` is ``"um"`` when every slide has a µm/px: each slide is then
    placed with its physical width, so slides scanned or stained at different
    resolutions line up; otherwise ``"slide_width"``: each slide is one unit wide.
    ``index_layer`` (or ``None``): the readout layer's address, the pane it covers and its
    width in world units.
    """
    physical = all(slide.mpp for slide in slides)
    world_width = [slide.dimensions[0] * slide.mpp if physical else 1.0 for slide in slides]
    layer = None
    if index_layer is not None:
        layer = {"url": "index_layer.png", "slide": index_layer.slide,
                 "world_width": world_width[index_layer.slide] * index_layer.width_fraction}
    return {
        "index_layer": layer,
        "world_units": "um" if physical else "slide_width",
        "slides": [{
            "name": slide.name,
            "dzi": f"slides/{index}.dzi",
            "width": slide.dimensions[0],
            "height": slide.dimensions[1],
            "mpp": slide.mpp,
            "world_width": world_width[index],
        } for index, slide in enumerate(slides)],
    }


class ViewerRequestHandler(BaseHTTPRequestHandler):
    """Answers GET requests from the server's slide list and static-file table."""

    server: "ViewerServer"
    protocol_version = "HTTP/1.1"  # keep-alive: a pane loads many tiles

    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        path = unquote(urlsplit(self.path).path)
        try:
            if path in ("/", "/index.html"):
                self._send_file(self.server.static["/static/index.html"])
            elif path == "/slides.json":
                self._send(json.dumps(self.server.manifest).encode(), "application/json")
            elif path == "/index_layer.png" and self.server.index_layer is not None:
                self._send(self.server.index_layer.png, "image/png")
            elif path in self.server.static:
                self._send_file(self.server.static[path])
            elif match := _DZI.fullmatch(path):
                slide = self._slide(match[1])
                if slide is not None:
                    self._send(slide.dzi().encode(), "application/xml")
            elif match := _TILE.fullmatch(path):
                slide = self._slide(match[1])
                if slide is not None:
                    self._send_tile(slide, *(int(value) for value in match.groups()[1:]))
            else:
                self.send_error(HTTPStatus.NOT_FOUND)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the browser dropped a tile it no longer needs

    def _slide(self, index: str) -> ViewerSlide | None:
        slides = self.server.slides
        if int(index) < len(slides):
            return slides[int(index)]
        self.send_error(HTTPStatus.NOT_FOUND, "no such slide")
        return None

    def _send_tile(self, slide: ViewerSlide, level: int, column: int, row: int) -> None:
        try:
            tile = slide.tile_jpeg(level, column, row)
        except ValueError:
            self.send_error(HTTPStatus.NOT_FOUND, "no such tile")
            return
        except openslide.OpenSlideError as error:
            # one unreadable region shows as a missing tile; the server keeps going
            logger.warning("%s: tile %d/%d_%d unreadable: %s", slide.path, level, column, row, error)
            self.send_error(HTTPStatus.INTERNAL_SERVER_ERROR, "unreadable tile")
            return
        self._send(tile, "image/jpeg")

    def _send_file(self, path: Path) -> None:
        content_type = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
        self._send(path.read_bytes(), content_type)

    def _send(self, body: bytes, content_type: str) -> None:
        self.send_response(HTTPStatus.OK)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        # the same address serves other slides after a restart: let the browser revalidate
        self.send_header("Cache-Control", "no-cache")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args) -> None:  # noqa: A002 (http.server's signature)
        logger.debug("%s - " + format, self.address_string(), *args)


class ViewerServer(ThreadingHTTPServer):
    """A threaded HTTP server over a fixed list of slides.

    Attributes:
        slides: the slides, served by index.
        manifest: :func:`slides_manifest` of the slides.
        static: :func:`static_files` of the package.
        index_layer: a readout's index layer over one of the slides, or ``None``.
    """

    daemon_threads = True

    def __init__(self, slides: list[ViewerSlide], options: ServerOptions = ServerOptions(),
                 index_layer: IndexLayer | None = None):
        self.slides = list(slides)
        self.index_layer = index_layer
        self.manifest = slides_manifest(self.slides, index_layer)
        self.static = static_files()
        if ":" in options.host:  # an IPv6 address such as ::1
            self.address_family = socket.AF_INET6
        super().__init__((options.host, options.port), ViewerRequestHandler)

    @property
    def url(self) -> str:
        """The page's address, e.g. ``http://127.0.0.1:8000/``."""
        host, port = self.server_address[:2]
        host = f"[{host}]" if ":" in host else host
        return f"http://{host}:{port}/"

    def server_close(self) -> None:
        super().server_close()
        for slide in self.slides:
            slide.close()
