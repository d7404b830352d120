"""Data transforms of the official LightViT recipes that the OpenMMLab
packages lack. :mod:`.transforms` needs mmpretrain; :mod:`lightvit_mm.registration`
imports it only when mmpretrain is installed."""
