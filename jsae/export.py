"""Export trained models to the on-disk layouts of SAELens and EleutherAI's sparsify.

``jsae export RUN --format saelens|sparsify --out DIR [--model k20_L200 ...]`` (the command:
:mod:`jsae.sweeps.export_cli`) reads ``RUN/models`` (:mod:`jsae.runs.modelfiles`) and writes ``DIR/<model>/`` per model,
each loadable by the library itself::

    saelens:  DIR/<model>/cfg.json + sae_weights.safetensors
              sae_lens.SAE.load_from_disk(DIR/<model>)  →  TopKSAE (TopK) or StandardSAE (ReLU+L1)
    sparsify: DIR/<model>/cfg.json + sae.safetensors
              sparsify.Sae.load_from_disk(DIR/<model>)  (or Sae.load_many(DIR, local=True))

plus ``README.md`` files (what it is, the source run/model/step, the folding) and a
``.jsae-export`` marker (JSON) in ``DIR`` and in every model folder: ``--out`` must be
new, empty, or an earlier jsae export, finished or interrupted (which is then replaced;
anything else, a file or a symbolic link is refused, :mod:`jsae.safety`). The export is
written into a temporary sibling of ``DIR`` and takes its place when complete
(:func:`jsae.safety.replace_folder`): a killed export or a full disk leaves ``DIR`` as it
was (the next export cleans up), and the same command again finishes the job. Every model
folder is named by the model's name, which must be a plain name (no path separator, no
``..``, no leading dot): an export never writes outside ``DIR``, whatever a tampered
``models/index.json`` lists. The layouts were read from the loaders of sae-lens 6.54.12 and
eai-sparsify 1.3.3 (``SAE.load_from_disk`` / ``TopKSAEConfig``, ``SparseCoder.load_from_disk``
/ ``SparseCoderConfig``) and are tested by loading them with those libraries.

**The exported SAE takes raw embeddings.** jsae trains on ``x_n = (x − μ) / s``
(:mod:`jsae.core.normalize`; ``s`` a scalar or per-dimension vector). With that::

    pre = (x_n − b_pre) W_enc + b_enc
        = ((x − μ − s⊙b_pre) / s) W_enc + b_enc
        = (x − c) (diag(1/s) W_enc) + b_enc,          c = μ + s⊙b_pre
    x̂  = s ⊙ (v W_dec + b_pre) + μ
        = v (W_dec · diag(s)) + c

so both libraries' ``encode(x) = act((x − b_dec) W_enc + b_enc)``, ``decode(v) = v W_dec + b_dec``
reproduce jsae exactly (codes v and the raw reconstruction x̂) with::

    b_dec  = c = μ + s ⊙ b_pre
    W_enc' = W_enc / s[:, None]
    W_dec' = W_dec * s[None, :]        (rows no longer unit norm unless s = 1)
    b_enc' = b_enc

computed in float64 and stored as float32. Name by name:

=====================  ===========================  ================================  ==========================
jsae (model file)      folded (raw space)           SAELens ``sae_weights.safetensors``  sparsify ``sae.safetensors``
=====================  ===========================  ================================  ==========================
``W_enc [M, L]``       ``W_enc / s[:, None]``       ``W_enc [d_in, d_sae]``           ``encoder.weight [L, M]`` (transposed)
``b_enc [L]``          ``b_enc``                    ``b_enc [d_sae]``                 ``encoder.bias [L]``
``W_dec [L, M]``       ``W_dec * s[None, :]``       ``W_dec [d_sae, d_in]``           ``W_dec [L, M]``
``b_pre [M]``, μ, s    ``μ + s ⊙ b_pre``            ``b_dec [d_in]``                  ``b_dec [M]``
``M``, ``L``           —                            cfg ``d_in``, ``d_sae``           cfg ``d_in``, ``num_latents``
spec ``k`` (TopK)      —                            cfg ``k``, ``architecture: topk`` cfg ``k``, ``activation: topk``
ReLU+L1                —                            ``architecture: standard``        refused (no ReLU SAE)
=====================  ===========================  ================================  ==========================

Fixed cfg values: SAELens ``apply_b_dec_to_input: true`` (``x − b_dec`` before the
encoder), ``normalize_activations: "none"`` (the normalisation is folded),
``rescale_acts_by_decoder_norm: false`` (TopK on the plain pre-activations, as jsae;
do not call ``fold_W_dec_norm``: it would change the TopK choice), ``dtype float32``;
sparsify ``normalize_decoder: false`` (the folded decoder rows are not unit norm; keep
them), ``multi_topk``/``skip_connection``/``transcode: false``. Activations: jsae and
SAELens take ``ReLU(TopK_k(pre))``, sparsify ``TopK_k(ReLU(pre))``: the same dense codes
(they differ only in which zero-valued latents fill the k slots when fewer than k are
positive, which decodes the same).

This module needs numpy and ``safetensors`` only; the libraries themselves are needed
only to load the exports (the ``export`` extra).
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from .core.kinds import ACTIVATION_KINDS, TOPK
from .errors import BadValueError
from .jsonio import atomic_write_bytes, json_bytes
from .runs.modelfiles import ModelFile, read_models
from .safety import check_deletable, check_no_link, check_writable_folder, replace_folder

__all__ = ["FORMATS", "MARKER", "EXPORT_FORMAT", "SAELENS_VERSION", "SPARSIFY_VERSION", "fold_normalizer",
           "export_model", "export_models", "is_export_dir", "model_folder"]

FORMATS = ("saelens", "sparsify")
MARKER = ".jsae-export"
EXPORT_FORMAT = "jsae-export"
#: the library versions whose loaders the layouts were written for and tested with
SAELENS_VERSION = "6.54.12"
SPARSIFY_VERSION = "1.3.3"
_WEIGHTS = {"saelens": "sae_weights.safetensors", "sparsify": "sae.safetensors"}
_MODEL_ENTRIES = ("cfg.json", "sae_weights.safetensors", "sae.safetensors", "README.md", MARKER)
_WHAT = "a jsae export"


def fold_normalizer(model_file: ModelFile) -> dict[str, np.ndarray]:
    """The raw-space parameters ``W_enc [M, L]``, ``b_enc [L]``, ``W_dec [L, M]``, ``b_dec [M]``
    (float32; folded in float64, see the module docstring)."""
    p = model_file.params
    mu = np.asarray(model_file.normalizer.mean, np.float64)
    s = np.asarray(model_file.normalizer.scale, np.float64)
    w_enc = np.asarray(p["W_enc"], np.float64) / s[:, None]
    w_dec = np.asarray(p["W_dec"], np.float64) * s[None, :]
    b_dec = mu + s * np.asarray(p["b_pre"], np.float64)
    out = {"W_enc": w_enc, "b_enc": np.asarray(p["b_enc"], np.float64), "W_dec": w_dec, "b_dec": b_dec}
    return {k: np.ascontiguousarray(v, dtype=np.float32) for k, v in out.items()}


def _check_format(fmt: str, mf: ModelFile) -> None:
    if fmt not in FORMATS:
        raise BadValueError(f"export format {fmt!r} is not one of {', '.join(FORMATS)}.")
    if mf.activation not in ACTIVATION_KINDS:
        raise BadValueError(f"{mf.path}: model {mf.name} has activation {mf.activation!r}; only "
                            f"{' and '.join(ACTIVATION_KINDS)} models can be exported.")
    if fmt == "sparsify" and mf.activation != TOPK:
        raise BadValueError(f"model {mf.name} is a ReLU+L1 SAE; sparsify has only TopK (and groupmax) SAEs, so it "
                            "cannot load it: export it with --format saelens (its standard ReLU SAE) or pick a "
                            "TopK model.")


def _is_tmp(name: str) -> bool:
    return name.startswith(".") and name.endswith(".tmp")


def _read_marker(path: Path) -> dict | None:
    try:
        obj = json.loads((path / MARKER).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError):
        return None
    return obj if isinstance(obj, dict) and obj.get("format") == EXPORT_FORMAT else None


def _export_files_only(path: Path) -> bool:
    """A model folder an interrupted export left before its marker: plain files of an export
    (or their temporary files) only, possibly none."""
    return all(not e.is_symlink() and e.is_file() and (e.name in _MODEL_ENTRIES or _is_tmp(e.name))
               for e in path.iterdir())


def is_export_dir(path: str | os.PathLike) -> bool:
    """True if ``path`` is an earlier jsae export (finished or interrupted): it holds a
    ``.jsae-export`` marker and nothing but export files and model folders that are
    themselves exports (or, interrupted, hold export files only). A symbolic link anywhere
    in it makes it not one."""
    path = Path(path)
    if path.is_symlink() or not path.is_dir() or _read_marker(path) is None:
        return False
    for entry in path.iterdir():
        if entry.is_symlink():
            return False
        if entry.is_dir():
            if not (is_export_dir(entry) or _export_files_only(entry)):
                return False
        elif entry.name not in _MODEL_ENTRIES and not _is_tmp(entry.name):
            return False
    return True


def _check_out(out_dir: Path, inputs: Sequence[str | os.PathLike]) -> None:
    """Refuse, before anything is written, a ``--out`` that is a symbolic link, a file, or a
    folder holding anything but an earlier export (or the run, the working directory, …)."""
    check_no_link(out_dir)
    check_writable_folder(out_dir, what=_WHAT, is_ours=is_export_dir)
    if out_dir.exists():
        check_deletable(out_dir, what=_WHAT, is_ours=lambda p: is_export_dir(p) or not any(p.iterdir()),
                        inputs=inputs)


def model_folder(root: str | os.PathLike, name: str) -> Path:
    """``root/name``, the folder of the model ``name`` in an export; refused (one-line
    BadValueError) unless ``name`` is a plain folder name (not empty, no path separator, not
    ``.``/``..``, no leading dot, no NUL) and the folder lies directly inside ``root``."""
    text = str(name)
    if (not text or "/" in text or "\\" in text or "\0" in text or text.startswith(".")
            or os.path.isabs(text)):
        raise BadValueError(f"model name {text!r} cannot name a folder inside the export (a path separator, '..', "
                            "a leading dot or nothing); the run's models/index.json looks altered: a model name is a "
                            "plain name such as k20_L200.")
    path = Path(root) / text
    if Path(os.path.realpath(path)).parent != Path(os.path.realpath(root)):
        raise BadValueError(f"model {text!r} would be written outside the export folder {root} "
                            f"({os.path.realpath(path)}); nothing was written there: a model name is a plain name "
                            "such as k20_L200.")
    return path


def _source(mf: ModelFile) -> dict[str, Any]:
    run_dir = mf.path.parent.parent
    return {"run": str(run_dir.resolve()), "model": mf.name, "step": mf.step, "spec": mf.spec,
            "normalizer": mf.normalizer.kind, "jsae_version": mf.run.get("version")}


def _saelens_cfg(mf: ModelFile) -> dict[str, Any]:
    cfg: dict[str, Any] = {
        "d_in": mf.dim, "d_sae": mf.latent_size, "dtype": "float32", "device": "cpu",
        "apply_b_dec_to_input": True, "normalize_activations": "none", "reshape_activations": "none",
        "metadata": {"sae_lens_version": SAELENS_VERSION, "sae_lens_training_version": None,
                     "model_name": "jsae", "hook_name": None, "jsae": _source(mf)},
    }
    if mf.activation == TOPK:
        cfg.update({"k": mf.k, "rescale_acts_by_decoder_norm": False, "architecture": "topk"})
    else:
        cfg["architecture"] = "standard"
    return cfg


def _sparsify_cfg(mf: ModelFile) -> dict[str, Any]:
    return {"activation": "topk", "expansion_factor": max(1, mf.latent_size // mf.dim), "normalize_decoder": False,
            "num_latents": mf.latent_size, "k": mf.k, "multi_topk": False, "skip_connection": False,
            "transcode": False, "d_in": mf.dim}


def _model_readme(mf: ModelFile, fmt: str) -> str:
    src = _source(mf)
    s = np.asarray(mf.normalizer.scale)
    scale = f"{s[0]:.6g} (scalar)" if np.all(s == s[0]) else f"per dimension ({s.min():.4g} … {s.max():.4g})"
    act = f"TopK, k = {mf.k}" if mf.activation == TOPK else f"ReLU (trained with L1, coefficient {mf.spec.get('l1_coef')})"
    if fmt == "saelens":
        files = "`cfg.json` + `sae_weights.safetensors`"
        load = ("from sae_lens import SAE\n"
                "sae = SAE.load_from_disk(\"<this folder>\")   # "
                + ("TopKSAE" if mf.activation == TOPK else "StandardSAE") + "\n"
                "codes = sae.encode(torch.as_tensor(x_raw, dtype=torch.float32))   # [B, L]\n"
                "x_hat = sae.decode(codes)")
        notes = ("Keep `rescale_acts_by_decoder_norm: false` and do not call `fold_W_dec_norm()`: the decoder rows "
                 "carry the scale s, and renormalising them would change the codes.")
    else:
        files = "`cfg.json` + `sae.safetensors`"
        load = ("from sparsify import Sae\n"
                "sae = Sae.load_from_disk(\"<this folder>\")\n"
                "out = sae.encode(torch.as_tensor(x_raw, dtype=torch.float32))   # top_acts, top_indices, pre_acts\n"
                "x_hat = sae.decode(out.top_acts, out.top_indices)")
        notes = ("`normalize_decoder` is false: the decoder rows carry the scale s; keep them as they are if you "
                 "fine-tune.")
    return f"""# jsae SAE `{mf.name}` exported for {"SAELens" if fmt == "saelens" else "EleutherAI sparsify"}

A sparse autoencoder trained by jsae (`jsae sweep`) on speaker embeddings, in the on-disk
layout {files} of {"sae-lens " + SAELENS_VERSION if fmt == "saelens" else "eai-sparsify " + SPARSIFY_VERSION}.

* source run: `{src['run']}`
* model: `{mf.name}` ({act}, {mf.latent_size} latents, input dimension {mf.dim})
* training step: {mf.step}
* jsae normalisation: `{mf.normalizer.kind}`, scale s = {scale}

**It takes raw embeddings.** jsae's normalisation x_n = (x − μ)/s is folded into the weights:
b_dec = μ + s ⊙ b_pre, W_enc = W_enc_jsae / s[:, None], W_dec = W_dec_jsae * s[None, :],
b_enc unchanged. The encoder computes act((x − b_dec) W_enc + b_enc), the decoder
v W_dec + b_dec — exactly jsae's codes and its reconstruction in raw space.
{notes}

```python
import torch
{load}
```
"""


def _write_marker(folder: Path, fmt: str, models: Sequence[str], source: dict[str, Any]) -> None:
    atomic_write_bytes(folder / MARKER, json_bytes({"format": EXPORT_FORMAT, "version": 1, "target": fmt,
                                                      "models": list(models), "source": source}))


def export_model(model_file: ModelFile, fmt: str, out_dir: str | os.PathLike) -> Path:
    """Write ``model_file`` into ``out_dir`` in the layout of ``fmt`` (``"saelens"`` or ``"sparsify"``).

    ``out_dir`` must be new, empty, or an earlier jsae export (replaced). A ReLU+L1
    model exports only to SAELens (its standard ReLU SAE); sparsify refuses it. Returns
    ``out_dir``.
    """
    _check_format(fmt, model_file)
    out_dir = Path(out_dir)
    _check_out(out_dir, inputs=[model_file.path])
    with replace_folder(out_dir, what=f"the export {out_dir}") as tmp:
        _write_model(model_file, fmt, tmp)
    return out_dir


def _write_model(model_file: ModelFile, fmt: str, out_dir: Path) -> None:
    """The files of one exported model (marker, weights, cfg.json, README.md) in ``out_dir``."""
    from safetensors.numpy import save

    out_dir.mkdir(parents=True, exist_ok=True)
    _write_marker(out_dir, fmt, [model_file.name], _source(model_file))
    w = fold_normalizer(model_file)
    if fmt == "saelens":
        tensors = {"W_enc": w["W_enc"], "b_enc": w["b_enc"], "W_dec": w["W_dec"], "b_dec": w["b_dec"]}
        cfg = _saelens_cfg(model_file)
    else:
        tensors = {"encoder.weight": np.ascontiguousarray(w["W_enc"].T), "encoder.bias": w["b_enc"],
                   "W_dec": w["W_dec"], "b_dec": w["b_dec"]}
        cfg = _sparsify_cfg(model_file)
    atomic_write_bytes(out_dir / _WEIGHTS[fmt], save(tensors, metadata={"format": "pt"}))
    atomic_write_bytes(out_dir / "cfg.json", json_bytes(cfg))
    atomic_write_bytes(out_dir / "README.md", _model_readme(model_file, fmt).encode("utf-8"))


def export_models(run_dir: str | os.PathLike, names: Sequence[str], fmt: str, out_dir: str | os.PathLike) -> Path:
    """``jsae export``: the models ``names`` of ``RUN/models`` into ``out_dir/<name>/`` (see
    :func:`export_model`), with a ``README.md`` and a ``.jsae-export`` marker in ``out_dir``.

    Everything is checked (the models read and verified, each one exportable to ``fmt``,
    ``out_dir`` new/empty/an earlier export) before anything is written.
    """
    if fmt not in FORMATS:
        raise BadValueError(f"export format {fmt!r} is not one of {', '.join(FORMATS)}.")
    names = list(dict.fromkeys(names))
    if not names:
        raise BadValueError("no model to export; name one with --model (e.g. --model k20_L200).")
    index, files = read_models(run_dir, names)
    for mf in files:
        _check_format(fmt, mf)
        model_folder(out_dir, mf.name)  # a plain folder name, before anything is written
    out_dir = Path(out_dir)
    _check_out(out_dir, inputs=[run_dir])
    source = {"run": str(Path(run_dir).resolve()), "step": int(index["step"]), "complete": index.get("complete"),
              "total_steps": index.get("total_steps")}
    with replace_folder(out_dir, what=f"the export {out_dir}") as tmp:
        _write_marker(tmp, fmt, [mf.name for mf in files], source)
        for mf in files:
            _write_model(mf, fmt, model_folder(tmp, mf.name))
        _write_readme(tmp, fmt, [mf.name for mf in files], source)
    return out_dir


def _write_readme(out_dir: Path, fmt: str, names: Sequence[str], source: dict[str, Any]) -> None:
    """The ``README.md`` of an export folder (its models, the source run, how to load them)."""
    lib = f"sae-lens {SAELENS_VERSION}" if fmt == "saelens" else f"eai-sparsify {SPARSIFY_VERSION}"
    load = ("from sae_lens import SAE\nsae = SAE.load_from_disk(\"<this folder>/<model>\")" if fmt == "saelens"
            else "from sparsify import Sae\nsaes = Sae.load_many(\"<this folder>\", local=True)   # {model: Sae}")
    readme = f"""# jsae export ({lib} layout)

SAEs trained by jsae on speaker embeddings, one folder per model: {", ".join(f"`{n}`" for n in names)}.

* source run: `{source['run']}` (step {source['step']} of {source['total_steps']}, complete: {source['complete']})
* each model takes **raw** embeddings: jsae's normalisation (x − μ)/s is folded into the weights
  (b_dec = μ + s ⊙ b_pre, W_enc / s, W_dec · s); each folder's README.md has the details.

```python
{load}
```
"""
    atomic_write_bytes(out_dir / "README.md", readme.encode("utf-8"))
