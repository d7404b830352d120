"""Run-time additions to mmengine's Runner: the hooks in :mod:`.hooks`."""
