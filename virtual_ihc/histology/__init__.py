"""The histology domain core that slides, training, evaluation and inference all share.

- ``stains``: hematoxylin / eosin / DAB optical-density vectors, Beer-Lambert mixing and
  colour deconvolution (``skimage.color.rgb2hed``);
- ``tissue``: tissue (stained) versus glass masks and tissue fractions;
- ``nuclei``: nucleus segmentation from colour deconvolution (threshold + watershed);
- ``ki67_index``: the Ki-67 labelling index (DAB-positive nuclei / nuclei);
- ``normalization``: stain normalisation (Macenko, Reinhard, Vahadane).
"""
