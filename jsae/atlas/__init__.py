"""The feature atlas: a static site with one index per model and one page per latent.

    from jsae.atlas import build_atlas
    build_atlas("runs/demo", "data/demo/language", "runs/demo/analysis/atlas-language")
    # → runs/demo/analysis/atlas-language/index.html

``jsae atlas RUN --data STORE`` is the command. The statistics are those of
:mod:`jsae.analyses.atlas`; this package renders them (a floor above :mod:`jsae.report`,
whose audio roots and segment cutting it reuses):

* :mod:`jsae.atlas.site`: :func:`build_site` / :func:`build_atlas`, the folder, its
  checks (the one output rule of :mod:`jsae.outputs.folders`) and the atomic install;
* :mod:`jsae.atlas.pages`: what each page shows (template contexts, evidence sentences,
  the histogram's bars);
* :mod:`jsae.atlas.clips`: the examples' audio, cut once into ``OUT/audio/`` as Ogg/Opus
  (or copied from a store's ``clip`` column), only from allowed audio roots;
* :mod:`jsae.atlas.links`: where a latent appears in the run's other analyses;
* ``templates/``: ``atlas_index.html.j2``, ``model_index.html.j2``, ``latent.html.j2``
  (Jinja2, autoescaped), ``atlas.css`` and ``atlas.js`` (sorting, search, audio durations;
  the pages' CSP allows this one local script and nothing inline).

The names below load on first use (``import jsae.atlas`` alone imports nothing heavy).
"""
from __future__ import annotations

from typing import Any

__all__ = ["build_atlas", "build_site", "SiteSummary", "default_out", "is_atlas_output", "CSP"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from . import site

        return getattr(site, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
