"""Whole slides before training: reading, tiling, splits and registration of consecutive sections.

- ``reader``: OpenSlide / tiffslide / plain-image slides at a target magnification or um/px;
- ``tiling``: tissue tiles of whole slides into PNG folders or TFRecord shards, with a manifest;
- ``splits``: train/val/test assignment by slide, pair or patient;
- ``registration``, ``registered_pairs``: aligning consecutive H&E / Ki-67 sections into paired test tiles;
- ``synthetic_slides``: pyramidal TIFF writers and synthetic slides for tests and benchmarks.

The command lines are ``python -m data_prep.tile_slides`` and ``python -m data_prep.register_pairs``.
"""
