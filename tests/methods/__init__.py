"""Tests of ``dropkit.methods``: one file per module, ``test_<module>.py``."""
