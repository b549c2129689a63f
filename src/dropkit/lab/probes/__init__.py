"""Probes of trained models: the co-adaptation probe (``coadaptation``) and Structural Dropout's width sweep
(``width``, imported from its module: it trains, so it depends on the trainer, which depends on this package)."""

from dropkit.lab.probes.coadaptation import coadaptation_probe

__all__ = ["coadaptation_probe"]
