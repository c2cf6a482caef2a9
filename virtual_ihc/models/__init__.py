"""Networks: the ResNet generator with skips, the PatchGAN discriminator and the CycleGAN model."""

from virtual_ihc.models.cycle_gan import CycleGAN
from virtual_ihc.models.patchgan_discriminator import build_patchgan_discriminator
from virtual_ihc.models.resnet_generator import build_resnet_generator

__all__ = ["CycleGAN", "build_patchgan_discriminator", "build_resnet_generator"]
