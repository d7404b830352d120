"""Checkpoint reading and complexity counting."""
