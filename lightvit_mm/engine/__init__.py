"""Run-time helpers for mmengine's Runner: hooks and the distributed set-up."""
