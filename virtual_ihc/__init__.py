"""virtual_ihc: virtual Ki-67 immunohistochemistry from H&E with an improved CycleGAN.

The package is laid out by concept:

- ``config``: dataclass configuration and the named profiles (``small``, ``paper``).
- ``models``: the ResNet generator with encoder-decoder skips, the PatchGAN
  discriminator and the ``CycleGAN`` training model.
- ``losses``: adversarial (BCE / LSGAN), L1 cycle, SSIM structural cycle and identity losses.
- ``histology``: the domain core: stain vectors and colour deconvolution, tissue
  masks, nuclei, the Ki-67 index and stain normalisation.
- ``slides``: whole slides before training: reading, tiling, splits, registration.
- ``data``: the training input: image I/O, TFRecords, the procedural sample data and
  the ``tf.data`` pipeline.
- ``training``: learning-rate schedules, atomic checkpoints, callbacks, the training run.
- ``export``: SavedModel / ``.keras`` export of the generators.
- ``inference``: whole-slide virtual staining; ``evaluation``: metrics and reports;
  ``nst``: the neural style transfer baseline.
"""

__version__ = "0.1.0"
