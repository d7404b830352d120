"""Generators of the small datasets the demos and tests train on (files on disk, not dataset classes)."""
