"""virtual_ihc: virtual Ki-67 immunohistochemistry from H&E with an improved CycleGAN.

The package is laid out in layers; every import points down (``tests/test_layering.py``):

- foundation: ``io`` (images, slides, TFRecords, pyramidal TIFFs), ``grid`` (tile grids and
  tissue fractions), ``pixels`` (uint8 <-> [-1, 1], the size multiple), ``errors``
  (``InputError``, ``RunFailure``), ``runtime`` (start-up, logging, exit statuses);
- ``config``: dataclass configuration and the named profiles (``small``, ``paper``, ``real``);
  ``weights``: pretrained-weight selection;
- ``histology``: the domain core: stain vectors and colour deconvolution, tissue
  masks, nuclei, the Ki-67 index, stain normalisation and the pathology consistency measures;
- ``models``: the ResNet generator with encoder-decoder skips, the PatchGAN
  discriminator and the ``CycleGAN`` training model; ``losses``; ``export``: SavedModel / ``.keras``;
- ``slides``: whole slides before training: tiling, splits, registration; ``data``: the
  training input (index, hold-out, decode, stream) and the procedural sample data;
- ``training``, ``inference`` (whole-slide virtual staining), ``evaluation`` (metrics and
  reports), ``nst`` (the neural style transfer baseline), ``viewer``;
- ``experiments`` (the ablation) and ``cli``, the one way into every command.
"""

__version__ = "0.1.0"
