"""``virtual-ihc view``: slides side by side in the browser, pan and zoom in sync.

::

    virtual-ihc view slide.svs slide_ki67.tif              # H&E | virtual Ki-67
    virtual-ihc view slide.svs slide_ki67.tif real_ki67.svs  # and the registered real Ki-67
    virtual-ihc view slide.svs slide_ki67.tif --readout readout/  # the Ki-67 index map over the virtual slide

Open the printed address (http://127.0.0.1:8000/ by default) in a browser; Ctrl+C stops the server.
Only this machine can connect unless ``--host`` names another address (``0.0.0.0``: every interface).
"""

from __future__ import annotations

import argparse
import ipaddress
import logging
from pathlib import Path

from virtual_ihc.errors import InputError
from virtual_ihc.viewer.deep_zoom import SlideOpenError, open_viewer_slides
from virtual_ihc.viewer.index_layer import open_index_layer
from virtual_ihc.viewer.server import ServerOptions, ViewerServer

logger = logging.getLogger(__name__)


def configure_parser(parser: argparse.ArgumentParser) -> None:
    """Add the ``view`` options to ``parser``."""
    defaults = ServerOptions()
    parser.add_argument("slides", type=Path, nargs="+", metavar="SLIDE",
                        help="slides or images to show side by side, in this order (e.g. the H&E, its "
                             "virtual Ki-67, a registered real Ki-67); the first pane can overlay the others")
    parser.add_argument("--port", type=int, default=defaults.port,
                        help="TCP port (default: %(default)s; 0 = any free port)")
    parser.add_argument("--host", default=defaults.host,
                        help="address to listen on (default: %(default)s, this machine only)")
    parser.add_argument("--readout", type=Path, metavar="FOLDER",
                        help="a virtual-ihc readout folder: its Ki-67 index map is a layer over the virtual slide "
                             "it was made of (a toggle and an opacity slider in the toolbar)")


def is_loopback(host: str) -> bool:
    """Whether ``host`` only accepts connections from this machine."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def run(args: argparse.Namespace) -> int:
    """Serve the slides until Ctrl+C; unreadable slides, a readout of none of them or an address in use raise
    :class:`InputError` (status 2)."""
    slides = open_viewer_slides(args.slides)
    try:
        index_layer = open_index_layer(args.readout, slides) if args.readout is not None else None
        server = ViewerServer(slides, ServerOptions(host=args.host, port=args.port), index_layer)
    except (SlideOpenError, OSError) as error:
        for slide in slides:
            slide.close()
        if isinstance(error, SlideOpenError):
            raise
        raise InputError(f"cannot listen on {args.host}:{args.port} ({error})") from error
    if not is_loopback(args.host):
        logger.warning("listening on %s: other machines can see these slides", args.host)
    print(f"virtual-ihc view: open {server.url} in a browser (Ctrl+C stops)", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0
