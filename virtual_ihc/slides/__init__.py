"""Whole slides before training: reading, tiling, splits and registration of consecutive sections.

- ``tiling``: tissue tiles of whole slides into PNG folders or TFRecord shards, with a manifest;
- ``splits``: train/val/test assignment by slide, pair or patient;
- ``registration``, ``registered_pairs``: aligning consecutive H&E / Ki-67 sections into paired test tiles;
- ``synthetic_slides``: synthetic slides for tests, demos and benchmarks.

Slides are read with :mod:`virtual_ihc.io.slides`.

The command lines are ``python -m data_prep.tile_slides`` and ``python -m data_prep.register_pairs``.
"""
