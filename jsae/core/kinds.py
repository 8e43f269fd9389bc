"""The activation kinds of an SAE: the one table every other module reads.

``topk`` — ``v = ReLU(TopK_k(pre))`` (the paper's); ``relu_l1`` — ``v = ReLU(pre)`` trained
with an L1 penalty (its rejected alternative). Configs (``grid.activation``), spec dicts,
model files and exports name a model's activation by these strings. No JAX here.
"""
from __future__ import annotations

from typing import Literal, get_args

__all__ = ["ActivationKind", "ACTIVATION_KINDS", "TOPK", "RELU_L1"]

#: the activation kind of a model, as configs and files spell it
ActivationKind = Literal["topk", "relu_l1"]
#: every activation kind, in that order
ACTIVATION_KINDS: tuple[str, ...] = get_args(ActivationKind)
TOPK, RELU_L1 = ACTIVATION_KINDS
