"""The viewer's server running in a thread of the test process, on a free loopback port."""

import contextlib
import threading

import pytest


@pytest.fixture
def serve_slides():
    """``with serve_slides([path, ...], readout=None) as server:`` a running :class:`ViewerServer` (port chosen by
    the system), with the index layer of a readout folder if given."""

    @contextlib.contextmanager
    def serve(paths, readout=None, **server_options):
        from virtual_ihc.viewer.deep_zoom import open_viewer_slides
        from virtual_ihc.viewer.index_layer import open_index_layer
        from virtual_ihc.viewer.server import ServerOptions, ViewerServer

        slides = open_viewer_slides(paths)
        layer = open_index_layer(readout, slides) if readout is not None else None
        server = ViewerServer(slides, ServerOptions(port=0, **server_options), layer)
        thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        thread.start()
        try:
            yield server
        finally:
            server.shutdown()
            server.server_close()
            thread.join(timeout=10)

    return serve
