"""Neural style transfer baseline (Gatys et al. 2016): H&E tiles restyled as Ki-67 IHC.

The learned CycleGAN is compared against this optimisation-based method, which
needs no training but hundreds of VGG19 forward/backward passes per tile.
"""

from virtual_ihc.nst.config import NSTConfig
from virtual_ihc.nst.features import build_feature_extractor, build_vgg19
from virtual_ihc.nst.transfer import NSTResult, StyleTransfer

__all__ = ["NSTConfig", "NSTResult", "StyleTransfer", "build_feature_extractor", "build_vgg19"]
