"""What each atlas page shows: the template contexts, built from an :class:`~jsae.analyses.atlas.AtlasResult`.

:class:`ModelPages` holds one model's statistics as arrays (each table of the
:class:`~jsae.analyses.atlas.ModelAtlas` cut into one block per latent once, so a page
costs no table scan) and gives the context of its index (:meth:`ModelPages.index`) and of
each latent page (:meth:`ModelPages.latent`). Numbers are formatted here, as text plus the
raw value the script sorts by; every text reaches the template as text, which escapes it.
A store row's metadata cells and audio player are rendered once (:func:`row_fragments`)
and shared by every page that shows the row.

:func:`evidence` states where a latent's one-line description comes from: the label's
counts (hits of the firing rows, of the value's rows, base rate, lift) and the correlate's
means, effect size and tests, with the rule that chose them (:mod:`jsae.analyses.atlas`).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np
import pandas as pd

from ..analyses.atlas import AtlasOptions, AtlasResult, ModelAtlas, format_rate
from ..report.segments import HIDE_COLUMNS
from ..store import is_descriptor
from .clips import Clip
from .links import Appearance

__all__ = ["HIDDEN", "MAX_VALUES_SHOWN", "MAX_TEXT", "row_values", "row_fragments", "shown_columns", "ModelPages",
           "missing", "evidence", "histogram", "latent_file", "fmt", "signed"]

#: metadata columns the examples table leaves out (bookkeeping: spans are played, clip is the audio)
HIDDEN = (*HIDE_COLUMNS, "clip")
#: values of a categorical column listed on a latent page (those with hits, best first)
MAX_VALUES_SHOWN = 10
#: a metadata text longer than this is shortened on the page
MAX_TEXT = 200
MINUS = "\u2212"


def latent_file(j: int) -> str:
    """The file name of latent ``j``'s page inside its model's folder."""
    return f"latent-{int(j)}.html"


def _finite(x: Any) -> bool:
    try:
        return math.isfinite(float(x))
    except (TypeError, ValueError):
        return False


def missing(x: Any) -> bool:
    """A table cell with no value (None, NaN, NA: pandas' string columns hold NaN for None)."""
    return x is None or (pd.api.types.is_scalar(x) and bool(pd.isna(x)))


def fmt(x: Any, spec: str = ".3g") -> str:
    """A number as text (``""`` when missing or not finite; minus as U+2212)."""
    if not _finite(x):
        return ""
    return format(float(x), spec).replace("-", MINUS)


def signed(x: Any, spec: str = "+.2f") -> str:
    return fmt(x, spec)


def _cell(x: Any, spec: str = ".3g") -> dict[str, str]:
    """``{"t": text, "v": raw value for sorting}`` of a number."""
    if not _finite(x):
        return {"t": "", "v": ""}
    return {"t": format(float(x), spec).replace("-", MINUS), "v": f"{float(x):.6g}"}


def _value_text(v: Any) -> str:
    """A metadata cell as page text (missing → ``""``; long text shortened)."""
    if v is None:
        return ""
    if isinstance(v, str):
        return v if len(v) <= MAX_TEXT else v[:MAX_TEXT - 1] + "…"
    if isinstance(v, (bool, np.bool_)):
        return str(bool(v))
    if isinstance(v, (int, np.integer)):
        return str(int(v))
    if isinstance(v, (float, np.floating)):
        return "" if not math.isfinite(float(v)) else f"{float(v):.4g}"
    if pd.api.types.is_scalar(v) and pd.isna(v):
        return ""
    text = str(v if not isinstance(v, np.ndarray) else v.tolist())
    return text if len(text) <= MAX_TEXT else text[:MAX_TEXT - 1] + "…"


def shown_columns(table: pd.DataFrame) -> list[str]:
    """The metadata columns an examples table shows: all but :data:`HIDDEN`, ``_*`` and the
    descriptor columns (:func:`jsae.store.is_descriptor`: ``acoustic.*``, ``vad.*``,
    ``describe.*``, about a hundred measurements per row, left out as the report leaves them
    out; a latent's page adds the column of its own correlate, :class:`ModelPages`)."""
    return [str(c) for c in table.columns if c not in HIDDEN and not str(c).startswith("_") and not is_descriptor(c)]


def row_values(table: pd.DataFrame, rows: Sequence[int], columns: Sequence[str]) -> dict[int, list[str]]:
    """``{row: [text of each column]}`` for the store rows ``rows`` of ``table``."""
    rows = sorted({int(r) for r in rows})
    if not rows:
        return {}
    sub = table.iloc[rows][list(columns)]
    cols = [sub[c].to_numpy(object) for c in columns]
    return {r: [_value_text(col[i]) for col in cols] for i, r in enumerate(rows)}


def row_fragments(values: dict[int, list[str]], clips: dict[int, Clip] | None, macro: Callable[..., Any],
                  audio_prefix: str) -> dict[int, Any]:
    """The cells of each row rendered once by the template ``macro`` (autoescaped Markup):
    its audio cell (``clips`` None: no audio column) and its metadata cells."""
    out = {}
    for row, vals in values.items():
        if clips is None:
            audio = None
        else:
            c = clips.get(row)
            audio = ({"src": audio_prefix + c.file, "reason": ""} if c is not None and c.file
                     else {"src": "", "reason": (c.note() if c is not None else "") or "not cut"})
        out[row] = macro(vals, audio)
    return out


def histogram(counts: np.ndarray, edges: np.ndarray, width: int = 520, height: int = 140) -> dict[str, Any]:
    """Bars of a latent's activation histogram in SVG user units: ``{"width", "height",
    "bars": [(x, y, w, h, title)], "x_max", "y_max", axis positions}``."""
    counts = np.asarray(counts, np.int64)
    edges = np.asarray(edges, np.float64)
    left, right, top, bottom = 44, 8, 8, 22
    pw, ph = width - left - right, height - top - bottom
    n = len(counts)
    cmax = int(counts.max()) if n else 0
    bw = pw / max(n, 1)
    bars = []
    for i, c in enumerate(counts):
        h = 0.0 if cmax == 0 else ph * c / cmax
        bars.append((f"{left + i * bw:.1f}", f"{top + ph - h:.1f}", f"{max(bw - 1, 0.5):.1f}", f"{h:.1f}",
                     f"{fmt(edges[i])} to {fmt(edges[i + 1])}: {int(c)} row{'' if c == 1 else 's'}"))
    return {"width": width, "height": height, "bars": bars, "left": left, "top": top, "bottom": top + ph,
            "right": left + pw, "x_max": fmt(edges[-1]) if len(edges) else "", "y_max": str(cmax),
            "label_y": height - 6, "mid_y": top + ph / 2}


def _label_index(m: ModelAtlas, V: int) -> dict[tuple[str, str], int]:
    if V == 0:
        return {}
    cols = m.enrichment["column"].to_numpy(object)[:V]
    vals = m.enrichment["value"].to_numpy(object)[:V]
    return {(str(c), str(v)): i for i, (c, v) in enumerate(zip(cols, vals))}


def evidence(row: dict[str, Any], enr: dict[str, Any] | None, cor: dict[str, Any] | None, n_rows: int,
             o: AtlasOptions, n_tests: int) -> list[str]:
    """The sentences that back a latent's description (see the module docstring).

    ``row``: the latent's ``latents`` row; ``enr``: the label value's counts (``hits,
    n_fires, n_value, n_known, base_rate, lift``) or None; ``cor``: the correlate's row of
    the correlations table or None; ``n_tests``: latents × numeric columns of the model (the
    BH family)."""
    n_fires = int(row["n_fires"])
    if n_fires == 0:
        return [f"Never fires on the {n_rows} rows (no activation above 0)."]
    out = [f"Fires on {n_fires} of {n_rows} rows ({format_rate(row['firing_rate'])}); status rules: rare below "
           f"{format_rate(o.rare_rate)}, dense from {format_rate(o.dense_rate)}."]
    if enr is not None:
        out.append(
            f"Label {row['label_column']} = {row['label_value']}: {enr['hits']} of the {enr['n_fires']} firing rows "
            f"that have a {row['label_column']} value have it (precision {fmt(row['label_precision'], '.2f')}), "
            f"and it fires on {enr['hits']} of the {enr['n_value']} rows of that value (recall "
            f"{fmt(row['label_recall'], '.2f')}); base rate {fmt(enr['base_rate'], '.3f')}, lift "
            f"{fmt(enr['lift'], '.2f')}. Chosen as the value of highest F1 among those with at least "
            f"{o.min_hits} hits, precision ≥ {o.min_precision:g} and precision at least {o.min_gain:g} of the "
            f"way from the base rate to 1.")
    else:
        out.append(f"No label: no categorical value has at least {o.min_hits} hits with precision ≥ "
                   f"{o.min_precision:g} and a gain of {o.min_gain:g} over its base rate.")
    if cor is not None:
        out.append(
            f"Correlate {row['correlate_column']}: mean {fmt(cor['mean_fire'])} on the {cor['n_fires']} firing rows "
            f"with a value vs {fmt(cor['mean_rest'])} on the other {int(cor['n']) - int(cor['n_fires'])}, Cohen's "
            f"d = {signed(cor['d'])} pooled sd (Welch p = {fmt(cor['p'], '.2g')}, Benjamini–Hochberg q = "
            f"{fmt(cor['q'], '.2g')} over the model's {n_tests} latent × column tests), Spearman ρ = "
            f"{signed(cor['rho'])}. Chosen as the column of largest |d| with q < {o.alpha:g}, |d| ≥ "
            f"{o.min_abs_d:g} and at least {o.min_hits} firing rows.")
    else:
        out.append(f"No correlate: no numeric column has q < {o.alpha:g} with |d| ≥ {o.min_abs_d:g} and at least "
                   f"{o.min_hits} firing rows.")
    return out


@dataclass
class _Blocks:
    """Start/stop of each latent's rows in a latent-sorted table."""

    starts: np.ndarray

    @classmethod
    def of(cls, latent: np.ndarray, L: int) -> "_Blocks":
        return cls(np.searchsorted(np.asarray(latent, np.int64), np.arange(L + 1), side="left"))

    def __call__(self, j: int) -> slice:
        return slice(int(self.starts[j]), int(self.starts[j + 1]))


class ModelPages:
    """The pages of one model of the atlas.

    Args:
      m: its :class:`~jsae.analyses.atlas.ModelAtlas`; result: the whole atlas (columns, other models).
      folders: ``{model name: its folder name in the atlas}`` (links between models).
      fragments: ``{store row: rendered cells}`` (:func:`row_fragments`).
      appears: ``{latent: [Appearance]}`` (:func:`jsae.atlas.links.appearances`).
      options: the atlas's :class:`~jsae.analyses.atlas.AtlasOptions`.
      hidden_values: ``{column: values by store row}`` of the numeric columns the examples
        table leaves out (descriptors): a latent whose correlate is one of them shows it as
        an extra column of its examples.
    """

    def __init__(self, m: ModelAtlas, result: AtlasResult, folders: dict[str, str], fragments: dict[int, Any],
                 appears: dict[int, list[Appearance]], options: AtlasOptions,
                 hidden_values: dict[str, np.ndarray] | None = None):
        self.m, self.result, self.folders, self.fragments, self.appears, self.o = m, result, folders, fragments, \
            appears, options
        self.hidden_values = hidden_values or {}
        lat = m.latents
        self.L = L = len(lat)
        self.n_rows = int(result.params.get("n_rows", len(result.rows)))
        self.lat = {c: lat[c].to_numpy(object if lat[c].dtype == object else None) for c in lat.columns}
        self.records = lat.to_dict("records")
        # enrichment: latent-major, V values per latent
        enr = m.enrichment
        self.V = V = len(enr) // L if L else 0
        self.enr_cols = enr["column"].to_numpy(object)[:V].astype(str) if V else np.zeros(0, str)
        self.enr_vals = enr["value"].to_numpy(object)[:V] if V else np.zeros(0, object)
        self.n_value = enr["n_value"].to_numpy()[:V] if V else np.zeros(0)
        self.n_known = enr["n_known"].to_numpy()[:V] if V else np.zeros(0)
        self.e = ({k: enr[k].to_numpy().reshape(L, V) for k in ("hits", "n_fires", "precision", "recall", "lift", "f1")}
                  if V else {})
        with np.errstate(invalid="ignore", divide="ignore"):
            self.base = self.n_value / self.n_known if V else np.zeros(0)
        self.value_groups = [(c, np.flatnonzero(self.enr_cols == c)) for c in result.categorical]
        self.label_index = _label_index(m, V)
        # correlations: latent-major, K columns per latent
        cor = m.correlations
        self.K = K = len(cor) // L if L else 0
        self.cor_cols = cor["column"].to_numpy(object)[:K].astype(str) if K else np.zeros(0, str)
        self.c = {k: cor[k].to_numpy().reshape(L, K) for k in ("n", "n_fires", "mean_fire", "mean_rest", "d", "p", "q",
                                                                "rho", "rho_q")} if K else {}
        ex = m.examples
        self.ex_blocks = _Blocks.of(ex["latent"].to_numpy(), L)
        self.ex_group = ex["group"].to_numpy(object)
        self.ex_rank = ex["rank"].to_numpy()
        self.ex_row = ex["row"].to_numpy()
        self.ex_act = ex["activation"].to_numpy()
        nb = m.neighbours
        self.nb_blocks = _Blocks.of(nb["latent"].to_numpy(), L)
        self.nb_idx = nb["neighbour"].to_numpy()
        self.nb_cos = nb["cosine"].to_numpy()
        mt = m.matches
        self.n_other = len(mt) // L if L and len(mt) else 0
        if self.n_other:
            self.mt_model = mt["model"].to_numpy(object).reshape(L, self.n_other)
            self.mt_latent = mt["match"].to_numpy().reshape(L, self.n_other)
            self.mt_cos = mt["cosine"].to_numpy().reshape(L, self.n_other)
            self.mt_mutual = mt["mutual"].to_numpy().reshape(L, self.n_other)
        self.descriptions = {name: other.latents["description"].to_numpy(object)
                             for name, other in result.models.items()}

    # ------------------------------------------------------------------ the model's index

    def index(self) -> dict[str, Any]:
        """The context of ``<model>/index.html``: one row per latent."""
        rows = []
        for r in self.records:
            j = int(r["latent"])
            label = "" if missing(r["label_column"]) else f"{r['label_column']} = {r['label_value']}"
            rows.append({
                "latent": j, "href": latent_file(j), "status": "" if missing(r["status"]) else r["status"],
                "rate": {"t": format_rate(r["firing_rate"]), "v": f"{r['firing_rate']:.6g}"},
                "n_fires": int(r["n_fires"]), "mean": _cell(r["mean_activation"]),
                "label": label, "P": _cell(r["label_precision"], ".2f"), "R": _cell(r["label_recall"], ".2f"),
                "correlate": "" if missing(r["correlate_column"]) else r["correlate_column"],
                "d": _cell(r["correlate_d"], "+.2f"), "q": _cell(r["correlate_q"], ".2g"),
                "description": r["description"]})
        n_dead = int((self.lat["n_fires"] == 0).sum())
        return {"model": self.m.name, "spec": self.m.spec, "L": self.L, "n_rows": self.n_rows, "rows": rows,
                "n_dead": n_dead, "n_live": self.L - n_dead}

    # ------------------------------------------------------------------ a latent's page

    def _examples(self, j: int, extra: str) -> list[dict[str, Any]]:
        s = self.ex_blocks(j)
        values = self.hidden_values.get(extra) if extra else None
        groups: list[dict[str, Any]] = []
        for g, rank, row, act in zip(self.ex_group[s], self.ex_rank[s], self.ex_row[s], self.ex_act[s]):
            if not groups or groups[-1]["group"] != g:
                title = (f"top activations (the {self.o.n_top} largest)" if g == "top"
                         else f"random rows of the {g} band of the firing rows by activation rank (0 % = the weakest "
                              "firing)")
                groups.append({"group": g, "title": title, "rows": []})
            groups[-1]["rows"].append((int(rank) + 1, fmt(act, ".4g"),
                                       None if values is None else fmt(values[int(row)], ".4g"),
                                       self.fragments.get(int(row), "")))
        return groups

    def _enrichment(self, j: int) -> list[dict[str, Any]]:
        out = []
        for column, idx in self.value_groups:
            hits = self.e["hits"][j, idx]
            if not len(idx):
                continue
            with_hits = idx[hits > 0]
            order = with_hits[np.lexsort((-self.e["precision"][j, with_hits], -self.e["f1"][j, with_hits]))] \
                if len(with_hits) else with_hits
            shown = order[:MAX_VALUES_SHOWN]
            hits, prec, rec, lift = self.e["hits"][j], self.e["precision"][j], self.e["recall"][j], self.e["lift"][j]
            rows = [(str(self.enr_vals[i]), int(hits[i]), int(self.n_value[i]), fmt(prec[i], ".2f"),
                     fmt(rec[i], ".2f"), fmt(lift[i], ".2f"), fmt(self.base[i], ".3f")) for i in shown]
            n_fires_c = int(self.e["n_fires"][j, idx[0]])
            out.append({"column": column, "n_known": int(self.n_known[idx[0]]), "n_fires": n_fires_c,
                        "n_values": len(idx), "rows": rows, "more": len(with_hits) - len(shown),
                        "no_hits": len(idx) - len(with_hits)})
        return out

    def _correlations(self, j: int) -> list[dict[str, Any]]:
        if not self.K:
            return []
        d = self.c["d"][j]
        order = np.argsort(np.where(np.isfinite(d), -np.abs(d), np.inf), kind="stable")
        p, q, rho, n1 = self.c["p"][j], self.c["q"][j], self.c["rho"][j], self.c["n_fires"][j]
        return [(self.cor_cols[k], int(n1[k]), fmt(d[k], "+.2f"), fmt(p[k], ".2g"), fmt(q[k], ".2g"),
                 fmt(rho[k], "+.2f")) for k in order]

    def _label_counts(self, j: int, r: dict[str, Any]) -> dict[str, Any] | None:
        if missing(r["label_column"]):
            return None
        i = self.label_index.get((str(r["label_column"]), str(r["label_value"])))
        if i is None:
            return None
        return {"hits": int(self.e["hits"][j, i]), "n_fires": int(self.e["n_fires"][j, i]),
                "n_value": int(self.n_value[i]), "n_known": int(self.n_known[i]), "base_rate": self.base[i],
                "lift": self.e["lift"][j, i]}

    def _correlate_row(self, j: int, r: dict[str, Any]) -> dict[str, Any] | None:
        if missing(r["correlate_column"]) or not self.K:
            return None
        hit = np.flatnonzero(self.cor_cols == str(r["correlate_column"]))
        if not len(hit):
            return None
        k = int(hit[0])
        return {key: self.c[key][j, k] for key in self.c}

    def latent(self, j: int) -> dict[str, Any]:
        """The context of ``<model>/latent-<j>.html``."""
        r = self.records[j]
        dead = int(r["n_fires"]) == 0
        ctx: dict[str, Any] = {
            "model": self.m.name, "latent": j, "L": self.L, "dead": dead,
            "status": "" if missing(r["status"]) else r["status"],
            "description": r["description"], "n_rows": self.n_rows,
            "prev": latent_file(j - 1) if j > 0 else "", "next": latent_file(j + 1) if j + 1 < self.L else "",
            "appears": self.appears.get(j, []),
            "evidence": evidence(r, self._label_counts(j, r), self._correlate_row(j, r), self.n_rows, self.o,
                                 self.L * self.K),
        }
        if dead:
            return {**ctx, "stats": [], "quantiles": [], "hist": None, "groups": [], "extra": "", "enrichment": [],
                    "correlations": [], "neighbours": [], "matches": []}
        qcols = [c for c in self.lat if c.startswith("q") and c[1:2].isdigit()]
        ctx["stats"] = [("firing rate", f"{format_rate(r['firing_rate'])} ({int(r['n_fires'])} of {self.n_rows} rows)"),
                        ("mean activation (firing rows)", fmt(r["mean_activation"], ".4g")),
                        ("max activation", fmt(r["max_activation"], ".4g"))]
        ctx["quantiles"] = [(c[1:].replace("_", ".") + " %", fmt(r[c], ".4g")) for c in qcols]
        ctx["hist"] = histogram(self.m.hist_counts[j], self.m.hist_edges[j])
        extra = "" if missing(r["correlate_column"]) else str(r["correlate_column"])
        ctx["extra"] = extra if extra in self.hidden_values else ""
        ctx["groups"] = self._examples(j, ctx["extra"])
        ctx["enrichment"] = self._enrichment(j)
        ctx["correlations"] = self._correlations(j)
        s = self.nb_blocks(j)
        own = self.descriptions[self.m.name]
        ctx["neighbours"] = [(int(i), latent_file(int(i)), fmt(c, ".3f"), own[int(i)])
                             for i, c in zip(self.nb_idx[s], self.nb_cos[s])]
        matches = []
        for t in range(self.n_other):
            other, i = str(self.mt_model[j, t]), int(self.mt_latent[j, t])
            if i < 0:
                matches.append((other, None, "", "", False, "no live latent"))
                continue
            matches.append((other, i, f"../{self.folders[other]}/{latent_file(i)}", fmt(self.mt_cos[j, t], ".3f"),
                            bool(self.mt_mutual[j, t]), self.descriptions[other][i]))
        ctx["matches"] = matches
        return ctx
