"""Checkpoint reading (formats, safe unpickling) and complexity counting."""
