"""Where jsae finds its bundled sweep configs and stores, installed or not.

    from jsae.resources import bundled_store, config_path, demo_data_dir
    config_path("paper_grid")        # → .../configs/paper_grid.yaml
    config_path("my_sweep.yaml")     # an existing file is returned as it is
    demo_data_dir()                  # → .../data/demo (sae_train, language, music stores)
    bundled_store("data/synthetic")  # → .../data/synthetic, unless ./data/synthetic exists (then None)

The repository's top-level ``configs/*.yaml``, ``data/demo/`` and ``data/synthetic/`` are
the source of truth. A built wheel carries copies of them in ``jsae/_bundled/``
(``setup.py`` copies them there at build time: ``jsae/_bundled/configs/``,
``jsae/_bundled/data/demo/``, ``jsae/_bundled/data/synthetic/``); a source checkout or
an editable install (``pip install -e .``) reads them in place.

**A sweep's ``data.store``** is a path relative to the working directory (or absolute).
The bundled configs name bundled stores (``configs/default.yaml``: ``data/synthetic``).
So that ``jsae sweep default --out RUN`` works from any folder, ``jsae sweep`` resolves
``data.store`` with :func:`bundled_store`: a folder that exists under the working
directory always wins; a relative path that does not exist there but names a store jsae
ships (:data:`STORE_NAMES`, e.g. ``data/synthetic``, ``data/demo/sae_train``) is read
from the first root below that has it, and the sweep prints one line saying so (the
run's ``config.yaml`` records the store it used); anything else is left as it is, so a
typo (``data.store=missing_store``) stays the one-line "does not exist" error.

Every resource is looked up in these roots, in order; the first that has it wins:

1. ``$JSAE_DATA``: a folder laid out like the repository (``configs/NAME.yaml``,
   ``data/demo/``, ``data/synthetic/``), e.g. a checkout or your own copy with edited configs;
2. the package data of an installed wheel (``jsae/_bundled/``);
3. the source checkout that this module lies in (``<repo>/jsae/resources.py``).

An explicit argument (a config file path, ``demo_data_dir(path)``, ``jsae demo --data``)
always comes first. This module imports nothing heavy (no JAX).
"""
from __future__ import annotations

import os
from pathlib import Path

from .errors import MissingPathError

__all__ = ["ENV_VAR", "CONFIG_NAMES", "STORE_NAMES", "bundled_store", "config_path", "config_names", "demo_data_dir",
           "resource_roots"]

#: environment variable naming a folder laid out like the repository (``configs/``, ``data/demo/``)
ENV_VAR = "JSAE_DATA"
#: the configs jsae ships (``configs/NAME.yaml``)
CONFIG_NAMES = ("default", "demo", "paper_grid", "relu_l1")
#: the embedding stores jsae ships, as a config names them (relative to a resource root)
STORE_NAMES = ("data/synthetic", "data/demo/sae_train", "data/demo/language", "data/demo/music")

_HERE = Path(__file__).resolve().parent
_BUNDLED = _HERE / "_bundled"      # filled by setup.py's build_py in a wheel (absent in a checkout)
_CHECKOUT = _HERE.parent           # <repo>/ when jsae/ is imported from a source checkout


def resource_roots() -> list[Path]:
    """The folders searched for ``configs/`` and ``data/demo/``, first match wins (see the module doc)."""
    roots: list[Path] = []
    env = os.environ.get(ENV_VAR, "").strip()
    if env:
        root = Path(env).expanduser()
        if not root.is_dir():
            raise MissingPathError(f"{ENV_VAR}={env} is not a folder; point it at a folder laid out like the "
                                   f"jsae repository (configs/*.yaml, data/demo/) or unset it.")
        roots.append(root)
    if _BUNDLED.is_dir():
        roots.append(_BUNDLED)
    # a checkout, not any site-packages that happens to hold a configs/ folder
    if (_CHECKOUT / "pyproject.toml").is_file() and (_CHECKOUT / "configs").is_dir():
        roots.append(_CHECKOUT)
    return roots


def _where() -> str:
    roots = resource_roots()
    return ", ".join(str(r) for r in roots) if roots else f"no bundled resources found (set {ENV_VAR})"


def config_names() -> list[str]:
    """Names of every config found in the roots (``config_path`` accepts each of them)."""
    names = {p.stem for root in resource_roots() for p in (root / "configs").glob("*.yaml")}
    return sorted(names)


def config_path(name: str | os.PathLike) -> Path:
    """The YAML file of a sweep config: an existing file path as it is, else a bundled name.

    ``name`` is a path to an existing file, or the name of a bundled config with or
    without ``.yaml`` (``"demo"``, ``"paper_grid"``, ``"default"``, ``"relu_l1"``),
    looked up in :func:`resource_roots`. Anything else raises
    :class:`~jsae.errors.MissingPathError` naming the bundled configs.
    """
    path = Path(name).expanduser()
    if path.is_file():
        return path
    text = os.fspath(name)
    if path.exists():  # a folder, not a config
        raise MissingPathError(f"config {text} is a folder, not a YAML file; give e.g. configs/default.yaml "
                               f"or a bundled name ({', '.join(CONFIG_NAMES)}).")
    stem = text[:-5] if text.endswith(".yaml") else text
    if stem and "/" not in stem and os.sep not in stem:
        for root in resource_roots():
            found = root / "configs" / f"{stem}.yaml"
            if found.is_file():
                return found
    names = ", ".join(config_names()) or ", ".join(CONFIG_NAMES)
    raise MissingPathError(f"config {text} is neither a file nor a bundled config; give a YAML path or one of: "
                           f"{names} (searched: {_where()}).")


def demo_data_dir(path: str | os.PathLike | None = None) -> Path:
    """The folder of the demo stores (``sae_train``, ``language``, ``music``).

    ``path`` (e.g. ``jsae demo --data``) wins when given and must exist; otherwise
    ``data/demo`` in the first of :func:`resource_roots` that has it.
    """
    if path is not None:
        given = Path(path).expanduser()
        if not given.is_dir():
            raise MissingPathError(f"demo data folder {given} does not exist; give a folder with the sae_train, "
                                   f"language and music stores.")
        return given
    for root in resource_roots():
        found = root / "data" / "demo"
        if (found / "sae_train").is_dir():
            return found
    raise MissingPathError(f"the bundled demo data (data/demo) was not found (searched: {_where()}); reinstall "
                           f"jsae from a wheel or a checkout, set {ENV_VAR}, or pass --data.")


def bundled_store(store: str | os.PathLike) -> Path | None:
    """The bundled copy that a sweep's ``data.store`` stands for, or ``None`` to read it as given.

    ``None`` when ``store`` exists (relative paths are relative to the working directory,
    which always wins), is absolute, or is not one of :data:`STORE_NAMES` (``./`` and
    doubled separators aside: ``data/synthetic``, ``./data/synthetic``); otherwise the store
    of that name in the first of :func:`resource_roots` that holds one (its ``store.json``),
    or ``None`` when none does (opening ``store`` then fails: "does not exist").
    """
    given = Path(store).expanduser()
    if given.is_absolute() or os.path.lexists(given):
        return None
    name = os.path.normpath(os.fspath(store)).replace(os.sep, "/")
    if name not in STORE_NAMES:
        return None
    for root in resource_roots():
        found = root / name
        if (found / "store.json").is_file():
            return found
    return None
