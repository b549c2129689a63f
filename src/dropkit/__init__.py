"""dropkit: structured and rule-based dropout regularizers for deep networks, and a lab that compares them.

    >>> import dropkit
    >>> layer = dropkit.create("dropblock", p=0.1, block_size=5)
    >>> handle = dropkit.attach(model, "spatial_dropout", at=["features.3"], p=0.2)
"""

from dropkit import schedule
from dropkit.attach import AttachHandle, attach, dropkit_layers, mc_dropout
from dropkit.base import DropkitModule
from dropkit.methods.biased_dropout import BiasedDropout, CrossmapDropout, biased_dropout, crossmap_dropout
from dropkit.methods.channel_dropblock import ChannelDropBlock, channel_dropblock
from dropkit.methods.clustering_dropout import ClusteringDropout
from dropkit.methods.corrdrop import CorrDropChannel, CorrDropSpatial, corrdrop_channel, corrdrop_spatial
from dropkit.methods.cutout import Cutout, cutout
from dropkit.methods.drop_path import DropPath, drop_path
from dropkit.methods.dropblock import DropBlock, dropblock
from dropkit.methods.dropconnect import DropConnect, dropconnect_weight
from dropkit.methods.dropout import Dropout, GaussianDropout, dropout, gaussian_dropout
from dropkit.methods.focused_dropout import FocusedDropout, ParticipationWeightDecay, focused_dropout
from dropkit.methods.gating_dropout import GatingDropoutMoE, moe_aux_loss, moe_comm_stats
from dropkit.methods.guided_dropout import GuidedDropout, guided_dropout
from dropkit.methods.hme_dropout import HMEDropout, hme_dropout
from dropkit.methods.heuristic_dropout import HeuristicDropout, heuristic_dropout
from dropkit.methods.maxout import Maxout, maxout
from dropkit.methods.ns_dropout import NSDropout, ns_dropout_mask
from dropkit.methods.spatial_dropout import SpatialDropout, spatial_dropout
from dropkit.methods.spectral_dropout import SpectralDropout, spectral_dropout
from dropkit.methods.standout import Standout, standout
from dropkit.methods.stochastic_pooling import StochasticPool2d, stochastic_pooling
from dropkit.methods.structural_dropout import StructuralDropout, structural_dropout
from dropkit.methods.weighted_channel_dropout import WeightedChannelDropout, weighted_channel_dropout
from dropkit.protocol import feed_validation, step_statistics, supervise, wants_validation
from dropkit.registry import FAMILIES, KINDS, TAXONOMY_AXES, MethodCard, create, get_card, methods, register
from dropkit.slim import slim, width_sweep

__version__ = "0.1.0"

__all__ = [
    "AttachHandle", "BiasedDropout", "ChannelDropBlock", "ClusteringDropout", "CorrDropChannel", "CorrDropSpatial",
    "CrossmapDropout", "Cutout", "DropBlock", "DropConnect", "DropPath", "Dropout", "DropkitModule", "FAMILIES",
    "FocusedDropout", "GatingDropoutMoE", "GaussianDropout", "HMEDropout", "GuidedDropout", "HeuristicDropout", "KINDS", "Maxout", "MethodCard",
    "NSDropout", "ParticipationWeightDecay", "SpatialDropout", "SpectralDropout", "Standout", "StochasticPool2d",
    "StructuralDropout", "TAXONOMY_AXES", "WeightedChannelDropout", "attach", "biased_dropout",
    "channel_dropblock", "corrdrop_channel", "corrdrop_spatial", "create", "crossmap_dropout", "cutout",
    "drop_path", "dropblock", "dropconnect_weight", "dropkit_layers", "dropout", "feed_validation",
    "focused_dropout", "gaussian_dropout", "get_card", "guided_dropout", "heuristic_dropout", "hme_dropout", "maxout", "moe_aux_loss", "moe_comm_stats",
    "mc_dropout", "methods", "ns_dropout_mask", "register", "schedule", "slim", "spatial_dropout",
    "spectral_dropout", "standout", "step_statistics", "stochastic_pooling", "structural_dropout", "supervise",
    "wants_validation", "weighted_channel_dropout", "width_sweep",
]
