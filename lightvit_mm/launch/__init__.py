"""The preflight of ``tools/train.py`` and ``tools/test.py``: one call,
:func:`~lightvit_mm.launch.prepare.prepare`, applies the command line to the
config and checks the machine before mmengine's Runner is built. Its steps
live beside it: data root (``data_root``), visualization backends
(``vis_backends``), mixed precision (``amp``), distributed set-up
(``distributed``) and test outputs (``test_outputs``)."""
