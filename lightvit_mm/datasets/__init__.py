"""Small real-image datasets for the demos."""
