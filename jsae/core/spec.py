"""A model's identity: its latent size and activation (:class:`ModelSpec`), and its name.

``ModelSpec(200, TopK(20))`` is ``k20_L200``; the spec dict
(:meth:`ModelSpec.to_dict`: ``{"k", "latent_size", "activation", "l1_coef", "name"}``)
is how ``sweep.json`` and the model files record it.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .activation import Activation, ReluL1, TopK, activation_from_dict

__all__ = ["ModelSpec"]


@dataclass(frozen=True)
class ModelSpec:
    """One model: its latent size ``L`` and its :data:`~jsae.core.activation.Activation`.

    ``ModelSpec(200, TopK(20))`` is ``k20_L200``; ``ModelSpec(100, ReluL1(1e-3))`` is
    ``l1_0.001_L100``. ``k`` / ``l1_coef`` read the activation's parameter (0 for the
    other kind), as the spec dicts of ``sweep.json`` and the model files spell it.
    """

    latent_size: int
    activation: Activation

    @property
    def kind(self) -> str:
        """``"topk"`` or ``"relu_l1"``."""
        return self.activation.kind

    @property
    def k(self) -> int:
        return int(self.activation.k) if isinstance(self.activation, TopK) else 0

    @property
    def l1_coef(self) -> float:
        return float(self.activation.coef) if isinstance(self.activation, ReluL1) else 0.0

    @property
    def name(self) -> str:
        if isinstance(self.activation, TopK):
            return f"k{self.k}_L{self.latent_size}"
        return f"l1_{self.l1_coef:g}_L{self.latent_size}"

    def to_dict(self) -> dict[str, Any]:
        """``{"k", "latent_size", "activation" (kind), "l1_coef", "name"}`` (JSON)."""
        return {"k": self.k, "latent_size": self.latent_size, "activation": self.kind,
                "l1_coef": self.l1_coef, "name": self.name}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "ModelSpec":
        """The inverse of :meth:`to_dict`."""
        return cls(int(d["latent_size"]), activation_from_dict(d))
