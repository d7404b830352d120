"""The preflight of ``tools/train.py`` and ``tools/test.py``: config rewrites
and checks done before mmengine's Runner is built (data root, AMP,
distributed set-up, test outputs)."""
