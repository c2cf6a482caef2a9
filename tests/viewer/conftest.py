"""The viewer's server running in a thread of the test process, on a free loopback port."""

import contextlib
import threading

import pytest


@pytest.fixture
def serve_slides():
    """``with serve_slides([path, ...]) as server:`` a running :class:`ViewerServer` (port chosen by the system)."""

    @contextlib.contextmanager
    def serve(paths, **server_options):
        from virtual_ihc.viewer.deep_zoom import open_viewer_slides
        from virtual_ihc.viewer.server import ServerOptions, ViewerServer

        server = ViewerServer(open_viewer_slides(paths), ServerOptions(port=0, **server_options))
        thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        thread.start()
        try:
            yield server
        finally:
            server.shutdown()
            server.server_close()
            thread.join(timeout=10)

    return serve
