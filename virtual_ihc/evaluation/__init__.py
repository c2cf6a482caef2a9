"""Evaluation of trained runs (``python evaluate.py``; definitions in ``docs/evaluation.md``).

- ``image_metrics``: SSIM, MS-SSIM, PSNR, MAE per image (reconstruction and paired);
- ``phash`` and ``resnet18``: the paper's P-hash on a Keras ResNet-18 with torchvision's layout and weights;
- ``distribution``: FID and KID on InceptionV3 pool features;
- ``tiles``, ``models``: tile folders and pairs; runs (export or checkpoints) and folders of virtual tiles;
- ``evaluator``: every metric of every model on every tile set; ``results``: the rows and per-tile values it gives;
- ``report``, ``figures``: ``metrics.csv``, ``per_tile.csv``, ``summary.md`` and the three figures;
- ``cli``: the command line.

The pathology consistency measures are in :mod:`virtual_ihc.histology.consistency` (the training guard uses them too).
"""
