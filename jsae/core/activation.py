"""The activation of an SAE: :class:`TopK` (the paper's) or :class:`ReluL1` (its rejected alternative).

An activation is a small pytree: its kind is its type (static), its parameter a
leaf, so one stacked value — ``TopK(k=[5, 10, 20])`` — describes the models of a
``vmap`` and each model sees its own ``k`` inside it::

    TopK(k):      v = ReLU(TopK_k(pre))      the k largest pre-activations kept
    ReluL1(coef): v = ReLU(pre)              trained with + coef · Σ_ℓ |v_ℓ| ‖d_ℓ‖

``pre [..., L]`` are the pre-activations ``(x − b_pre) W_enc + b_enc``.
"""
from __future__ import annotations

from typing import Any, ClassVar, Union

import jax
import numpy as np
from flax import struct

from ..errors import BadValueError
from .kinds import ACTIVATION_KINDS, RELU_L1, TOPK

__all__ = ["TopK", "ReluL1", "Activation", "KINDS", "ACTIVATION_KINDS", "activation_from_dict", "stack_activations", "leading"]


class TopK(struct.PyTreeNode):
    """``v = ReLU(TopK_k(pre))``; ``k`` an int (one model) or an int array (a stack)."""

    k: Any
    kind: ClassVar[str] = TOPK

    def describe(self) -> str:
        return f"TopK(k={int(self.k)})"

    def to_dict(self) -> dict[str, Any]:
        return {"activation": self.kind, "k": int(self.k), "l1_coef": 0.0}


class ReluL1(struct.PyTreeNode):
    """``v = ReLU(pre)``, trained with an L1 penalty ``coef``; ``coef`` a float or a float array."""

    coef: Any
    kind: ClassVar[str] = RELU_L1

    def describe(self) -> str:
        return f"ReluL1(coef={float(self.coef):g})"

    def to_dict(self) -> dict[str, Any]:
        return {"activation": self.kind, "k": 0, "l1_coef": float(self.coef)}


Activation = Union[TopK, ReluL1]
#: the activation class of each kind of :data:`jsae.core.kinds.ACTIVATION_KINDS` (``grid.activation``)
KINDS: dict[str, type] = {cls.kind: cls for cls in (TopK, ReluL1)}
if tuple(KINDS) != ACTIVATION_KINDS:  # a kind added to the table without its class
    raise ImportError(f"activation classes {tuple(KINDS)} do not match the kinds {ACTIVATION_KINDS}")


def activation_from_dict(d: dict[str, Any]) -> Activation:
    """The activation of a spec dict ``{"activation": "topk"|"relu_l1", "k": .., "l1_coef": ..}``."""
    kind = d.get("activation", TOPK)
    if kind == TopK.kind:
        return TopK(int(d["k"]))
    if kind == ReluL1.kind:
        return ReluL1(float(d["l1_coef"]))
    raise BadValueError(f"activation {kind!r} is not one of {sorted(KINDS)}")


def stack_activations(acts: list[Activation]) -> Activation:
    """One stacked activation (leaves ``[n]``) of ``n`` activations of one kind."""
    kinds = {type(a) for a in acts}
    if len(kinds) != 1:
        raise BadValueError(f"cannot stack activations of different kinds: {sorted(a.kind for a in kinds)}")
    if isinstance(acts[0], TopK):
        return TopK(np.array([int(a.k) for a in acts], np.int32))
    return ReluL1(np.array([float(a.coef) for a in acts], np.float32))


def leading(act: Activation, n: int) -> Activation:
    """``act`` padded to ``n`` entries by repeating its last one (for device padding)."""
    return jax.tree.map(lambda a: np.concatenate([a, np.repeat(a[-1:], n - len(a))]) if n > len(a) else a, act)
