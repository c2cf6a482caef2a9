"""File and slide I/O, the bottom of the package: it imports nothing else of ``virtual_ihc``.

- ``images``: reading, writing and decoding RGB images of any bit depth or layout; atomic writes;
- ``slides``: one reader for whole-slide images and plain images, at a target magnification or µm/px;
- ``tfrecords``: tiles as sharded TFRecord files;
- ``tiff_pyramid``: pyramidal tiled TIFFs (written whole, or streamed row by row) and their downsample rule.
"""
