"""Measurement helpers shared by the analysis tools and the tests: FLOP and
parameter counting (``complexity``), and the reference implementations of
LightViT with the checks that they match ours (``official_reference``)."""
