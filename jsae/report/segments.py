"""The top-activating segments of a feature: the rows of a store where a latent fires most.

:func:`top_activating` streams the store in blocks through one model
(``v = encode(x) [b, L]``, the requested latents ``[b, J]``) and keeps, per latent, the
``top`` rows with the largest activation (rows where it never fires are left out).
:func:`feature_section` lays them out for the report: the metadata of each row (``id``,
``source``, ``offset``, ``duration``, labels), its activation and an audio player.
"""
from __future__ import annotations

from typing import Any, Iterable, Sequence

import numpy as np
import pandas as pd

from ..errors import NotFoundError
from ..store import is_descriptor
from .audio import AudioCheck, audio_roots
from .tables import table

__all__ = ["top_activating", "feature_section", "HIDE_COLUMNS"]

#: metadata columns a segment table leaves out (``spans``: played by the audio cell; the
#: descriptor columns, :func:`jsae.store.is_descriptor`, are left out too)
HIDE_COLUMNS = ("split", "spans")


def top_activating(model, store, latents: Sequence[int], top: int = 5, block: int = 8192) -> dict[int, pd.DataFrame]:
    """The ``top`` rows of ``store`` with the largest activation of each latent.

    Returns ``{latent: metadata rows + "activation"}``, streaming the store in blocks.
    """
    latents = [int(j) for j in latents]
    best_val = {j: np.empty(0) for j in latents}
    best_row = {j: np.empty(0, int) for j in latents}
    for start, x in store.iter_blocks(block):
        v = model.encode(x)[:, latents]  # [b, J]
        for t, j in enumerate(latents):
            vals = np.concatenate([best_val[j], v[:, t]])
            rows = np.concatenate([best_row[j], start + np.arange(len(x))])
            keep = np.argsort(-vals, kind="stable")[:top]
            best_val[j], best_row[j] = vals[keep], rows[keep]
    out = {}
    for j in latents:
        fired = best_val[j] > 0
        table = store.metadata.iloc[best_row[j][fired]].reset_index(drop=True).copy()
        table.insert(0, "activation", best_val[j][fired])
        out[j] = table
    return out


def feature_section(sweep, feats: Sequence[dict[str, Any]], store, top: int,
                    audio_root: str | Iterable[str] | None = None) -> dict[str, Any]:
    """The top-activating segments of the features ``feats`` (``{"k", "latent_size",
    "latent", "why"}``) of ``sweep`` on ``store``, for the template: ``{"store",
    "features": [{"k", "L", "latent", "why", "table"}], "notes", "audio_not_found",
    "audio_roots"}`` (``audio_not_found``: segments whose audio file was not found under the
    roots). Features of models the run does not have (another run's analysis) are left out."""
    out: dict[str, Any] = {"store": str(store.path), "features": [], "notes": []}
    check = AudioCheck(audio_roots(store.info, audio_root))
    by_model: dict[tuple[int, int], list[dict[str, Any]]] = {}
    for f in feats:
        by_model.setdefault((int(f["k"]), int(f["latent_size"])), []).append(f)
    for (k, L), fs in by_model.items():
        try:
            model = sweep.model(k=k, latent_size=L)
        except NotFoundError:  # a feature of a model the run does not have (another run's analysis)
            continue
        lat = list(dict.fromkeys(int(f["latent"]) for f in fs))
        tops = top_activating(model, store, lat, top)
        for f in fs:
            j = int(f["latent"])
            rows = tops[j].copy()
            entry = {"k": k, "L": L, "latent": j, "why": str(f.get("why", "")), "table": None}
            if not rows.empty:
                if "source" in rows.columns:
                    rows["audio"] = [check.cell(r) for r in rows.to_dict("records")]
                cols = [c for c in rows.columns
                        if c not in HIDE_COLUMNS and not str(c).startswith("_") and not is_descriptor(c)]
                entry["table"] = table(rows[cols])
            out["features"].append(entry)
    out["notes"] += check.notes()
    out["audio_not_found"] = check.not_found  # summed into one warning by jsae.report.build_report
    out["audio_roots"] = [str(r) for r in check.roots]
    return out
