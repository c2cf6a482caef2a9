"""``virtual-ihc view``: an H&E slide and its virtual Ki-67 side by side in the browser.

- ``deep_zoom``: slides opened with OpenSlide (plain images with Pillow), Deep Zoom
  tiles from ``openslide.deepzoom.DeepZoomGenerator``.
- ``server``: a standard-library threaded HTTP server for the page, OpenSeadragon and the tiles.
- ``cli``: the ``view`` subcommand.
- ``static/``: the page (``index.html``, ``viewer.js``, ``viewer.css``) and OpenSeadragon's
  release files from its npm package (BSD-3-Clause, ``static/openseadragon/LICENSE.txt``).
"""
