"""Where a latent appears in the run's other analyses (probe, split, steer, …).

Every analysis folder ``RUN/analysis/<name>/`` has an ``analysis.json`` whose ``features``
list names the latents it identified, each ``{"k", "latent_size", "latent", "why"}``, and
whose ``analysis`` names its kind. :func:`appearances` maps them onto the atlas's models
(by ``(k, latent_size)``, :func:`model_keys`) and gives, per model and latent, the links a
latent page shows: the folder (a relative path from the page) and, when the run has one,
its section of the run's report page.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence
from urllib.parse import quote

from ..outputs.folders import read_analyses

__all__ = ["Appearance", "model_keys", "appearances", "relative_href"]

#: the run's report page (:mod:`jsae.report`), relative to ``RUN/analysis``
REPORT_NAME = "report.html"


@dataclass(frozen=True)
class Appearance:
    """One analysis that names a latent: its ``kind`` and folder ``name``, ``href`` (the
    folder, relative to the model's folder of the atlas), ``report`` (its section of the
    run's report page, or ``""``) and ``why`` (the analysis's own words)."""

    kind: str
    name: str
    href: str
    report: str
    why: str


def model_keys(specs: Sequence[Any]) -> dict[tuple[int, int], str]:
    """``{(k, latent_size): model name}`` of the specs (:class:`~jsae.core.spec.ModelSpec`
    or their dicts); the first model of a key wins."""
    out: dict[tuple[int, int], str] = {}
    for s in specs:
        d = s.to_dict() if hasattr(s, "to_dict") else dict(s)
        try:
            out.setdefault((int(d["k"]), int(d["latent_size"])), str(d["name"]))
        except (KeyError, TypeError, ValueError):
            continue
    return out


def relative_href(target: Path, start: Path, folder: bool = False) -> str:
    """``target`` as a URL path relative to the folder ``start`` (quoted: names come from the
    file system), with a final ``/`` for a folder."""
    rel = Path(os.path.relpath(os.path.abspath(target), os.path.abspath(start))).as_posix()
    return quote(rel) + ("/" if folder else "")


def appearances(run_dir: str | Path | None, specs: Sequence[Any], model_dirs: dict[str, Path], *,
                exclude: Path | None = None) -> dict[str, dict[int, list[Appearance]]]:
    """``{model name: {latent: [Appearance, ...]}}`` for the analyses of ``run_dir``.

    ``specs``: the atlas's models; ``model_dirs``: ``{model name: its folder in the atlas}``
    (links are relative to it, whether it exists yet or not); ``exclude``: a folder left out
    (the atlas itself). Features of other models, or of latents out of range, are skipped;
    a latent named twice by one analysis is listed once, its reasons joined.
    """
    if run_dir is None:
        return {}
    keys = model_keys(specs)
    sizes = {str(s.name if hasattr(s, "name") else s["name"]):
             int(s.latent_size if hasattr(s, "latent_size") else s["latent_size"]) for s in specs}
    root = Path(run_dir) / "analysis"
    report = root / REPORT_NAME
    skip = os.path.realpath(exclude) if exclude is not None else None
    out: dict[str, dict[int, list[Appearance]]] = {}
    for folder, info in read_analyses(run_dir):
        if skip is not None and os.path.realpath(folder) == skip:
            continue
        feats = info.get("features") if isinstance(info, dict) else None
        if not isinstance(feats, list):
            continue
        kind = str(info.get("analysis", "?"))
        seen: dict[tuple[str, int], list[str]] = {}
        for f in feats:
            if not isinstance(f, dict):
                continue
            try:
                name = keys.get((int(f["k"]), int(f["latent_size"])))
                latent = int(f["latent"])
            except (KeyError, TypeError, ValueError):
                continue
            if name is None or not 0 <= latent < sizes[name]:
                continue
            why = str(f.get("why") or "").strip()
            reasons = seen.setdefault((name, latent), [])
            if why and why not in reasons:
                reasons.append(why)
        for (name, latent), reasons in seen.items():
            start = model_dirs[name]
            out.setdefault(name, {}).setdefault(latent, []).append(Appearance(
                kind=kind, name=folder.name, href=relative_href(folder, start, folder=True),
                report=(relative_href(report, start) + "#" + quote(f"a-{folder.name}")) if report.is_file() else "",
                why="; ".join(reasons)))
    return out
