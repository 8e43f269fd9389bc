"""An independent single-model TopK SAE trainer in plain numpy float64 (no jax, no jsae).

It mirrors the *math* of jsae's training step (README "The model"; jsae/sae.py and
jsae/grid.py describe it), written out by hand so that the tests can compare a
grid member trained by jsae with something that shares none of its code:

* ``pre = (x − b_pre) W_enc + b_enc``; ``v = ReLU(TopK_k(pre))`` — the k largest
  entries of each row (the lower index first among equal values), ReLU'd, others 0;
* ``x̂ = v W_dec + b_pre``; ``NMSE = Σ‖x̂ − x‖² / Σ‖x − mean_b(x)‖²``;
* AuxK: ``dead_ℓ`` ⇔ the latent has not fired (activation > ``fire_threshold`` in a
  batch) for ``≥ dead_after_samples`` training samples; the top ``k_aux``
  pre-activations among the dead latents (ReLU'd) reconstruct the residual
  ``r = x − stop_grad(x̂)`` *without* ``b_pre``; ``AuxK = Σ‖v_aux W_dec − r‖² /
  Σ‖r − mean_b(r)‖²``, 0 when nothing is dead; loss = NMSE + ``auxk_coef`` · AuxK;
* gradients derived by hand (below, :func:`loss_and_grads`);
* the decoder gradient loses its component along each (unit) decoder row;
* Adam exactly as optax's ``adam`` computes it: ``m ← β₁m + (1−β₁)g``,
  ``v ← β₂v + (1−β₂)g²``, ``t ← t+1``,
  update ``−lr · (m/(1−β₁ᵗ)) / (sqrt(v/(1−β₂ᵗ)) + ε)``;
* decoder rows renormalised to unit norm after the update;
* dead counter: 0 for latents that fired in the batch, else ``+ batch size``.

Gradient clipping and learning-rate warm-up are not modelled: the tests train with
``optim.grad_clip=0`` and ``optim.warmup_steps=0`` (jsae's defaults).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

PARAM_NAMES = ("W_enc", "b_enc", "W_dec", "b_pre")


def topk_mask(pre: np.ndarray, k: int) -> np.ndarray:
    """``[B, L]`` bool: the k largest entries of each row (lower index first among equals)."""
    order = np.argsort(-pre, axis=1, kind="stable")[:, :k]
    mask = np.zeros(pre.shape, bool)
    np.put_along_axis(mask, order, True, axis=1)
    return mask


def selection_margin(pre: np.ndarray, k: int) -> float:
    """Smallest gap between the k-th and the (k+1)-th largest entry of a row (inf if k ≥ L):
    how far the TopK choice is from flipping under rounding."""
    if k >= pre.shape[1] or k <= 0:
        return np.inf
    s = -np.sort(-pre, axis=1)
    gap = s[:, k - 1] - s[:, k]
    gap = gap[np.isfinite(gap)]
    return float(gap.min()) if gap.size else np.inf


def nmse(recon: np.ndarray, target: np.ndarray) -> float:
    var = np.sum((target - target.mean(axis=0)) ** 2)
    return float(np.sum((recon - target) ** 2) / max(var, 1e-12))


@dataclass
class StepInfo:
    """Diagnostics of one step (before the update)."""

    loss: float
    nmse: float
    auxk: float
    n_dead: int
    fired: np.ndarray  # [L] bool
    margin: float  # min distance of a float the step's discrete choices hinge on from flipping


def loss_and_grads(p: dict[str, np.ndarray], x: np.ndarray, k: int, dead: np.ndarray, *, k_aux: int,
                   auxk_coef: float, fire_threshold: float, residual: np.ndarray | None = None
                   ) -> tuple[dict[str, np.ndarray], StepInfo]:
    """Loss of one TopK model on ``x [B, M]`` and its gradient, derived by hand.

    Forward: ``xc = x − b_pre``, ``pre = xc W_enc + b_enc``, ``A`` = TopK mask ∧ pre > 0,
    ``v = A ⊙ pre``, ``x̂ = v W_dec + b_pre``, ``e = x̂ − x``, ``N = e:e / var(x)``.

    Backward of N: ``G = 2e / var(x)`` [B, M]; ``∂W_dec = vᵀG``; ``∂v = G W_decᵀ``;
    ``∂pre = A ⊙ ∂v``; ``∂W_enc = xcᵀ ∂pre``; ``∂b_enc = Σ_b ∂pre``;
    ``∂b_pre = Σ_b G − W_enc ∂b_enc`` (``b_pre`` enters x̂ directly and ``xc`` with −1).

    AuxK (``c`` = auxk_coef, ``r = x − x̂`` a constant): ``A'`` = top-k_aux among dead
    latents ∧ pre > 0, ``u = A' ⊙ pre``, ``a = u W_dec``, ``X = (a − r):(a − r) / var(r)``;
    ``G' = 2c(a − r)/var(r)``; ``∂W_dec += uᵀG'``; ``∂pre' = A' ⊙ (G' W_decᵀ)``;
    ``∂W_enc += xcᵀ∂pre'``; ``∂b_enc += Σ_b ∂pre'``; ``∂b_pre −= W_enc Σ_b ∂pre'`` (no direct
    ``b_pre`` term: the AuxK reconstruction has no bias and ``r`` carries no gradient).
    """
    W_enc, b_enc, W_dec, b_pre = (p[n] for n in PARAM_NAMES)
    xc = x - b_pre
    pre = xc @ W_enc + b_enc
    sel = topk_mask(pre, k)
    act = sel & (pre > 0)
    v = np.where(act, pre, 0.0)
    recon = v @ W_dec + b_pre
    e = recon - x
    var = max(np.sum((x - x.mean(axis=0)) ** 2), 1e-12)
    main = float(np.sum(e * e) / var)
    G = 2.0 * e / var
    d_pre = np.where(act, G @ W_dec.T, 0.0)
    g = {"W_dec": v.T @ G, "W_enc": xc.T @ d_pre, "b_enc": d_pre.sum(axis=0)}
    g["b_pre"] = G.sum(axis=0) - W_enc @ g["b_enc"]

    # The discrete choices: the TopK cut, ReLU at 0 on the kept entries, firing at the threshold.
    kept = pre[sel]
    margin = min(selection_margin(pre, k), float(np.min(np.abs(kept))) if kept.size else np.inf,
                 float(np.min(np.abs(v[act] - fire_threshold))) if act.any() else np.inf)

    aux = 0.0
    n_dead = int(dead.sum())
    if n_dead and auxk_coef > 0 and k_aux > 0:
        masked = np.where(dead, pre, -np.inf)
        sel_a = topk_mask(masked, min(k_aux, n_dead)) & dead
        act_a = sel_a & (pre > 0)
        u = np.where(act_a, pre, 0.0)
        r = x - recon if residual is None else residual  # a constant here (stop_grad)
        a = u @ W_dec
        var_r = max(np.sum((r - r.mean(axis=0)) ** 2), 1e-12)
        aux = float(np.sum((a - r) ** 2) / var_r)
        Ga = 2.0 * auxk_coef * (a - r) / var_r
        d_pre_a = np.where(act_a, Ga @ W_dec.T, 0.0)
        g["W_dec"] = g["W_dec"] + u.T @ Ga
        g["W_enc"] = g["W_enc"] + xc.T @ d_pre_a
        db = d_pre_a.sum(axis=0)
        g["b_enc"] = g["b_enc"] + db
        g["b_pre"] = g["b_pre"] - W_enc @ db
        kept_a = pre[sel_a]
        margin = min(margin, selection_margin(masked, min(k_aux, n_dead)),
                     float(np.min(np.abs(kept_a))) if kept_a.size else np.inf)

    fired = np.any(v > fire_threshold, axis=0)
    info = StepInfo(loss=main + auxk_coef * aux, nmse=main, auxk=aux, n_dead=n_dead, fired=fired, margin=margin)
    return g, info


def project_decoder_grad(W_dec: np.ndarray, g_dec: np.ndarray) -> np.ndarray:
    """``g − (g·d) d`` per row: the component along the (unit) decoder row removed."""
    return g_dec - np.sum(g_dec * W_dec, axis=1, keepdims=True) * W_dec


def normalize_rows(W: np.ndarray) -> np.ndarray:
    return W / np.maximum(np.linalg.norm(W, axis=1, keepdims=True), 1e-12)


@dataclass
class ReferenceSAE:
    """One TopK SAE trained by :func:`loss_and_grads` + projection + Adam + renormalisation."""

    params: dict[str, np.ndarray]
    k: int
    k_aux: int
    auxk_coef: float
    dead_after_samples: int
    fire_threshold: float
    lr: float
    b1: float = 0.9
    b2: float = 0.999
    eps: float = 1e-8
    since_fired: np.ndarray | None = None
    m: dict[str, np.ndarray] = field(default_factory=dict)
    v: dict[str, np.ndarray] = field(default_factory=dict)
    t: int = 0
    history: list[StepInfo] = field(default_factory=list)

    def __post_init__(self):
        self.params = {n: np.array(self.params[n], np.float64) for n in PARAM_NAMES}
        L = self.params["b_enc"].shape[0]
        if self.since_fired is None:
            self.since_fired = np.zeros(L, np.int64)
        for n in PARAM_NAMES:
            self.m.setdefault(n, np.zeros_like(self.params[n]))
            self.v.setdefault(n, np.zeros_like(self.params[n]))

    @property
    def dead(self) -> np.ndarray:
        return self.since_fired >= self.dead_after_samples

    def step(self, x: np.ndarray) -> StepInfo:
        x = np.asarray(x, np.float64)
        g, info = loss_and_grads(self.params, x, self.k, self.dead, k_aux=self.k_aux, auxk_coef=self.auxk_coef,
                                 fire_threshold=self.fire_threshold)
        g["W_dec"] = project_decoder_grad(self.params["W_dec"], g["W_dec"])
        self.t += 1
        for n in PARAM_NAMES:
            self.m[n] = self.b1 * self.m[n] + (1 - self.b1) * g[n]
            self.v[n] = self.b2 * self.v[n] + (1 - self.b2) * g[n] ** 2
            m_hat = self.m[n] / (1 - self.b1 ** self.t)
            v_hat = self.v[n] / (1 - self.b2 ** self.t)
            self.params[n] = self.params[n] - self.lr * m_hat / (np.sqrt(v_hat) + self.eps)
        self.params["W_dec"] = normalize_rows(self.params["W_dec"])
        self.since_fired = np.where(info.fired, 0, self.since_fired + x.shape[0])
        self.history.append(info)
        return info
