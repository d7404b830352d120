"""Generators of the small datasets that the demos and tests train on
(files written to disk, not dataset classes)."""
