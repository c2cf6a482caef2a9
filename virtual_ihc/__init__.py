"""virtual_ihc: virtual Ki-67 immunohistochemistry from H&E with an improved CycleGAN.

The package is laid out by concept:

- ``config``: dataclass configuration and the named profiles (``small``, ``paper``).
- ``models``: the ResNet generator with encoder-decoder skips, the PatchGAN
  discriminator and the ``CycleGAN`` training model.
- ``losses``: adversarial (BCE / LSGAN), L1 cycle, SSIM structural cycle and identity losses.
- ``data``: image I/O, stain vectors, tissue masks, tiling, the procedural sample
  data and the ``tf.data`` training pipeline.
- ``training``: learning-rate schedules, atomic checkpoints, callbacks, the training run.
- ``export``: SavedModel / ``.keras`` export of the generators.
"""

__version__ = "0.1.0"
