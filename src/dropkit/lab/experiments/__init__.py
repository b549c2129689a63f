"""Experiments beside the comparison lab, each a readable script: Gating Dropout in a tiny MoE language model
(``moe_lm``) and dropout in soft decision trees (``soft_tree``)."""
