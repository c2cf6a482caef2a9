"""Inference: whole-image and whole-slide virtual staining (``virtual-ihc stain``).

- :mod:`~virtual_ihc.inference.model`: an exported generator as a tile function.
- :mod:`~virtual_ihc.inference.blending`: Hann blending windows with a context margin.
- :mod:`~virtual_ihc.inference.stitching`: tile grid and row-by-row stitching.
- :mod:`~virtual_ihc.inference.whole_slide`: one image or slide, end to end, with resume.
- :mod:`~virtual_ihc.inference.distributed`: many slides on a Dask cluster, one per task.
- :mod:`~virtual_ihc.inference.seams`: the seam score.
- :mod:`~virtual_ihc.inference.cli`: the command line.
"""
