"""dropkit: structured and rule-based dropout regularizers for deep networks, and a lab that compares them.

    >>> import dropkit
    >>> layer = dropkit.create("dropblock", p=0.1, block_size=5)
    >>> handle = dropkit.attach(model, "spatial_dropout", at=["features.3"], p=0.2)
"""

from dropkit import schedule
from dropkit.attach import AttachHandle, attach, dropkit_layers, mc_dropout
from dropkit.base import DropkitModule
from dropkit.methods.dropblock import DropBlock, dropblock
from dropkit.methods.dropconnect import DropConnect, dropconnect_weight
from dropkit.methods.drop_path import DropPath, drop_path
from dropkit.methods.dropout import Dropout, GaussianDropout, dropout, gaussian_dropout
from dropkit.methods.spatial_dropout import SpatialDropout, spatial_dropout
from dropkit.registry import FAMILIES, KINDS, TAXONOMY_AXES, MethodCard, create, get_card, methods, register

__version__ = "0.1.0"

__all__ = [
    "AttachHandle", "DropBlock", "DropConnect", "DropPath", "Dropout", "DropkitModule", "FAMILIES",
    "GaussianDropout", "KINDS", "MethodCard", "SpatialDropout", "TAXONOMY_AXES", "attach", "create",
    "drop_path", "dropblock", "dropconnect_weight", "dropkit_layers", "dropout", "gaussian_dropout", "get_card",
    "mc_dropout", "methods", "register", "schedule", "spatial_dropout",
]
