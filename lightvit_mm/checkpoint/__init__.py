"""Checkpoint files: reading the formats in use, atomic writing, unwrapping
the state dict, and safe (weights-only) unpickling of mmengine checkpoints."""
