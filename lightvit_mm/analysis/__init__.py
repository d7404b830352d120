"""Measurement helpers shared by the analysis tools and the tests: FLOP and
parameter counting."""
