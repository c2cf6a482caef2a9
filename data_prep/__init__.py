"""Data preparation commands: whole-slide tiling and consecutive-section registration.

- ``python -m data_prep.tile_slides SLIDES... --out DIR``
- ``python -m data_prep.register_pairs HE_SLIDE KI67_SLIDE --out DIR``

The logic lives in :mod:`virtual_ihc.data`; these modules only parse arguments.
"""
