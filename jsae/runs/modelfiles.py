"""Model files: one trained SAE as plain safetensors + JSON, with no optimiser and no orbax.

Every checkpoint of ``jsae sweep`` also (re)writes the run's models in this form; what
analyses and exports load (:func:`jsae.load_sweep`, ``jsae export``)::

    RUN/models/index.json                 {"format": "jsae-models", "version": 1, "step": S,
                                           "total_steps": T, "complete": bool, "dim": M,
                                           "models": [name, ...]}         (the models, in order)
    RUN/models/<name>/sae.safetensors     W_enc [M, L], b_enc [L], W_dec [L, M] (unit-norm rows),
                                          b_pre [M]: float32, jsae's names, the normalised space;
                                          norm_mean [M], norm_scale [M]: float64 (the Normalizer)
    RUN/models/<name>/cfg.json            {"format": "jsae-sae", "version": 1, "name", "spec",
                                           "dim": M, "latent_size": L, "normalizer": {"kind"},
                                           "step": S, "sha256": <of sae.safetensors>,
                                           "run": {"id": <the run's id>, ...}}   (keys sorted)

``spec`` is the model's spec dict (``{"k", "latent_size", "activation": "topk" |
"relu_l1", "l1_coef", "name"}``, as :meth:`jsae.core.spec.ModelSpec.to_dict` gives it).

A model says exactly what it is: the header of ``sae.safetensors`` records the model's
definition (``__metadata__["jsae_model"]``: the canonical JSON of name, spec, dim,
latent_size, normaliser kind, step and run id), so the sha256 recorded in ``cfg.json``
covers the definition, the normaliser arrays and the weights together; a ``cfg.json``
that says anything else (an edited ``k``) is refused, naming what differs. Every tensor's
dtype and shape are checked against the definition even when the sha256 matches. Files
from before (no definition in the header) are still read, on the weights' sha256 alone
(:attr:`ModelFile.bound` is False).

A model belongs to its run: ``cfg.json["run"]["id"]`` repeats the ``run_id`` of the run's
``sweep.json`` (created once, when the run starts), and :func:`read_models` refuses a model
folder of another run (one copied in). Runs from before run ids are read as before.

Writing is deterministic: the same parameters give byte-identical files (the safetensors
header is written here, its keys in a fixed order; JSON keys sorted).

Writes are atomic per file (a temporary file in the same folder, fsync, ``os.replace``)
and ordered: ``sae.safetensors``, then ``cfg.json`` (which holds its sha256), and
``index.json`` last. A reader therefore sees either a consistent model or a detectable
mismatch: weights newer than their ``cfg.json`` fail the sha256 check, and models newer
than the index fail the step check of :func:`read_models` (an interrupted rewrite).
Rewriting ``models/`` of the same run is the normal case (every checkpoint does it);
folders of names no longer in the index are left alone and never read.

Every error is a :class:`~jsae.errors.JsaeError` with a one-line message naming the
file and the fix. This module needs only numpy and ``safetensors`` (no JAX).
"""
from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ..errors import BadValueError, JsaeError, MissingPathError, NotFoundError
from ..jsonio import atomic_write_bytes, to_jsonable
from ..core.kinds import ACTIVATION_KINDS as _ACTIVATIONS, TOPK
from ..core.normalize import Normalizer
from .layout import SWEEP_FILE

__all__ = ["ModelFileError", "ModelFile", "MODELS_DIR", "INDEX_FILE", "WEIGHTS_FILE", "CFG_FILE", "FORMAT",
           "INDEX_FORMAT", "VERSION", "PARAM_NAMES", "write_model_files", "write_model_index", "write_model_file", "read_model_file",
           "read_models", "check_model_files", "has_model_files", "model_files_step", "models_dir", "recorded_run_id",
           "model_definition", "safetensors_bytes", "RUN_ID_KEY"]

FORMAT = "jsae-sae"
INDEX_FORMAT = "jsae-models"
VERSION = 1
MODELS_DIR = "models"
INDEX_FILE = "index.json"
WEIGHTS_FILE = "sae.safetensors"
CFG_FILE = "cfg.json"
#: the SAE parameters, float32, jsae's names (:class:`jsae.core.sae.SAEParams`)
PARAM_NAMES = ("W_enc", "b_enc", "W_dec", "b_pre")
_NORM_NAMES = ("norm_mean", "norm_scale")
#: the dtype each tensor is written with (and must have when read)
_DTYPES = {"W_enc": np.dtype("<f4"), "b_enc": np.dtype("<f4"), "W_dec": np.dtype("<f4"), "b_pre": np.dtype("<f4"),
           "norm_mean": np.dtype("<f8"), "norm_scale": np.dtype("<f8")}
_ST_DTYPES = {"F32": np.dtype("<f4"), "F64": np.dtype("<f8")}
#: the key of the model's definition in the safetensors header's ``__metadata__``
_DEFINITION_KEY = "jsae_model"
#: the key of the run id in ``sweep.json`` (cfg.json repeats it as ``run["id"]``)
RUN_ID_KEY = "run_id"

_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+=-]*$")
_SHA256_RE = re.compile(r"^[0-9a-f]{64}$")


def _usable_name(name: Any) -> bool:
    """Whether ``name`` can be a model folder under ``models/``: not empty, no path separator, no
    ``..``, no leading dot (letters, digits, ``_ . + = -``); what the writer accepts, checked on reading too."""
    return isinstance(name, str) and bool(_NAME_RE.match(name)) and ".." not in name

_REWRITE = "re-run the `jsae sweep` command that made the run to write them"
_MIXED = ("model files are from different steps (an interrupted write); re-run the sweep command, or load "
          "from the checkpoints: load_sweep(run, source='checkpoint')")
_WRONG_RUN = ("copy the model back from its own run, or re-run the `jsae sweep` command that made this run to "
              "rewrite its models")
_EDITED = ("cfg.json was edited, or joined to another model's weights; restore the folder from a copy of the run, or "
           "re-run the `jsae sweep` command that made the run to rewrite it")
_DAMAGED = ("a torn or damaged file (an interrupted write, or a copy that changed it); re-run the `jsae sweep` "
            "command that made the run to rewrite it, or load from the checkpoints: "
            "load_sweep(run, source='checkpoint')")


class ModelFileError(JsaeError, ValueError):
    """A model file (``RUN/models/...``) is damaged, inconsistent or not a jsae model file."""


@dataclass(frozen=True, eq=False)
class ModelFile:
    """One model read back by :func:`read_model_file`.

    ``params``: ``W_enc [M, L]``, ``b_enc [L]``, ``W_dec [L, M]``, ``b_pre [M]`` (float32,
    the normalised space); ``normalizer`` maps raw embeddings to that space.
    """

    name: str
    spec: dict
    params: dict[str, np.ndarray]
    normalizer: Normalizer
    dim: int
    step: int
    run: dict
    path: Path
    #: True when ``sae.safetensors`` records the model's definition (checked against ``cfg.json``);
    #: False for files written before it did (verified by the weights' sha256 only)
    bound: bool = False

    @property
    def run_id(self) -> str | None:
        """The id of the run the model was written by (None for files from before run ids)."""
        rid = self.run.get("id")
        return rid if isinstance(rid, str) else None

    @property
    def latent_size(self) -> int:
        return int(self.params["W_enc"].shape[1])

    @property
    def activation(self) -> str:
        """``"topk"`` or ``"relu_l1"``."""
        return str(self.spec["activation"])

    @property
    def k(self) -> int:
        """TopK's k (0 for a ReLU+L1 model)."""
        return int(self.spec.get("k") or 0)


def models_dir(run_dir: str | os.PathLike) -> Path:
    """``RUN/models``."""
    return Path(run_dir) / MODELS_DIR


# ----------------------------------------------------------------------------------------- writing


def _check_spec(spec: Any, latent_size: int, where: str) -> dict:
    if not isinstance(spec, dict):
        raise BadValueError(f"{where}: the model spec must be a dict (ModelSpec.to_dict()), got "
                            f"{type(spec).__name__}.")
    missing = [k for k in ("k", "latent_size", "activation", "name") if k not in spec]
    if missing:
        raise BadValueError(f"{where}: the model spec lacks {', '.join(missing)}; pass ModelSpec.to_dict().")
    name = spec["name"]
    if not _usable_name(name):
        raise BadValueError(f"{where}: model name {name!r} is not usable as a folder name (letters, digits, "
                            "_ . + = - only).")
    if spec["activation"] not in _ACTIVATIONS:
        raise BadValueError(f"{where}: model {name}: activation {spec['activation']!r} is not one of "
                            f"{', '.join(_ACTIVATIONS)}.")
    if int(spec["latent_size"]) != latent_size:
        raise BadValueError(f"{where}: model {name}: spec latent_size {spec['latent_size']} does not match the "
                            f"parameters' L = {latent_size}.")
    if spec["activation"] == TOPK and not 0 < int(spec["k"]) <= latent_size:
        raise BadValueError(f"{where}: model {name}: k = {spec['k']} must be in 1..{latent_size}.")
    return dict(spec)


def _check_params(params: Any, where: str) -> tuple[dict[str, np.ndarray], int, int]:
    if not isinstance(params, dict) or any(k not in params for k in PARAM_NAMES):
        got = sorted(params) if isinstance(params, dict) else type(params).__name__
        raise BadValueError(f"{where}: params must hold {', '.join(PARAM_NAMES)}; got {got}.")
    out = {k: np.ascontiguousarray(np.asarray(params[k]), dtype=np.float32) for k in PARAM_NAMES}
    if out["W_enc"].ndim != 2:
        raise BadValueError(f"{where}: W_enc must be [M, L], got shape {out['W_enc'].shape}.")
    m, n_lat = out["W_enc"].shape
    want = {"W_enc": (m, n_lat), "b_enc": (n_lat,), "W_dec": (n_lat, m), "b_pre": (m,)}
    for k, shape in want.items():
        if out[k].shape != shape:
            raise BadValueError(f"{where}: {k} has shape {out[k].shape}, expected {shape} (M = {m}, L = {n_lat}).")
        if not np.all(np.isfinite(out[k])):
            raise BadValueError(f"{where}: {k} holds NaN or Inf; the model diverged — lower the learning rate "
                                "and retrain.")
    return out, m, n_lat


def _norm_arrays(normalizer: Normalizer, m: int, where: str) -> dict[str, np.ndarray]:
    if not isinstance(normalizer, Normalizer):
        raise BadValueError(f"{where}: normalizer must be a jsae.core.normalize.Normalizer, got "
                            f"{type(normalizer).__name__}.")
    mean = np.ascontiguousarray(np.broadcast_to(np.asarray(normalizer.mean, np.float64), (m,)))
    scale = np.ascontiguousarray(np.broadcast_to(np.asarray(normalizer.scale, np.float64), (m,)))
    if not (np.all(np.isfinite(mean)) and np.all(np.isfinite(scale)) and np.all(scale > 0)):
        raise BadValueError(f"{where}: the normalizer has non-finite values or a scale ≤ 0.")
    return {"norm_mean": mean, "norm_scale": scale}


def _canonical_json(obj: Any) -> str:
    return json.dumps(to_jsonable(obj), sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False)


def model_definition(name: str, spec: dict, dim: int, latent_size: int, normalizer_kind: str, step: int,
                     run_id: str | None) -> dict:
    """What defines a model besides its arrays, as recorded in its ``sae.safetensors`` header
    (strict-JSON values: what ``cfg.json`` reads back as)."""
    return json.loads(_canonical_json({"name": name, "spec": spec, "dim": int(dim), "latent_size": int(latent_size),
                                       "normalizer": {"kind": str(normalizer_kind)}, "step": int(step),
                                       "run_id": run_id}))


def safetensors_bytes(arrays: dict[str, np.ndarray], metadata: dict[str, str] | None = None) -> bytes:
    """A safetensors file of ``arrays`` (little-endian), deterministic: the same arrays and metadata
    give the same bytes in every process (``safetensors.numpy.save`` orders the metadata by a
    per-process hash). Tensors are laid out like safetensors does (larger items first, then by
    name); header keys sorted; the header padded with spaces to a multiple of 8 bytes."""
    codes = {np.dtype("<f4"): "F32", np.dtype("<f8"): "F64", np.dtype("<i4"): "I32", np.dtype("<i8"): "I64",
             np.dtype("<f2"): "F16"}
    data = {k: np.ascontiguousarray(np.asarray(a), dtype=np.asarray(a).dtype.newbyteorder("<")) for k, a in
            arrays.items()}
    order = sorted(data, key=lambda k: (-data[k].dtype.itemsize, k))
    header: dict[str, Any] = {}
    if metadata:
        header["__metadata__"] = {str(k): str(metadata[k]) for k in sorted(metadata)}
    offset, chunks = 0, []
    for k in order:
        a = data[k]
        blob = a.tobytes()
        header[k] = {"dtype": codes[a.dtype], "shape": list(a.shape), "data_offsets": [offset, offset + len(blob)]}
        offset += len(blob)
        chunks.append(blob)
    text = json.dumps(header, separators=(",", ":"), ensure_ascii=True).encode("utf-8")
    text += b" " * (-len(text) % 8)
    return len(text).to_bytes(8, "little") + text + b"".join(chunks)


def _safetensors_header(blob: bytes) -> dict:
    """The JSON header of a safetensors file (its dtypes, shapes and ``__metadata__``)."""
    n = int.from_bytes(blob[:8], "little")
    header = json.loads(blob[8:8 + n].decode("utf-8"))
    if not isinstance(header, dict):
        raise ValueError("the header is not a JSON object")
    return header


def write_model_file(folder: str | os.PathLike, spec: dict, params: dict, *, normalizer: Normalizer, step: int,
                     run: dict | None = None) -> Path:
    """Write one model into ``folder`` (created if needed): ``sae.safetensors``, then ``cfg.json``.

    Args:
      spec: the model's spec dict (``ModelSpec.to_dict()``); ``spec["latent_size"]`` must be L.
      params: ``W_enc [M, L]``, ``b_enc [L]``, ``W_dec [L, M]``, ``b_pre [M]`` (cast to float32).
      normalizer: the run's :class:`~jsae.core.normalize.Normalizer` (stored as float64 ``norm_mean``,
        ``norm_scale``; its kind in ``cfg.json``).
      step: the training step the parameters are from.
      run: free JSON-able provenance (config, data source, version), stored as ``cfg.json["run"]``;
        its ``"id"`` (the run's id, ``sweep.json["run_id"]``) binds the model to its run.

    Returns the folder. The same arguments give byte-identical files.
    """
    folder = Path(folder)
    where = str(folder)
    arrays, m, n_lat = _check_params(params, where)
    spec = _check_spec(spec, n_lat, where)
    arrays.update(_norm_arrays(normalizer, m, where))
    run = to_jsonable(dict(run or {}))
    run_id = run.get("id")
    if run_id is not None and not isinstance(run_id, str):
        raise BadValueError(f"{where}: run['id'] must be a string (the run's id), got {type(run_id).__name__}.")
    definition = model_definition(spec["name"], spec, m, n_lat, normalizer.kind, step, run_id)
    folder.mkdir(parents=True, exist_ok=True)
    blob = safetensors_bytes(arrays, {"format": FORMAT, "version": str(VERSION),
                                      _DEFINITION_KEY: _canonical_json(definition)})
    atomic_write_bytes(folder / WEIGHTS_FILE, blob)
    cfg = {"format": FORMAT, "version": VERSION, "name": spec["name"], "spec": spec, "dim": m,
           "latent_size": n_lat, "normalizer": {"kind": str(normalizer.kind)}, "step": int(step),
           "sha256": hashlib.sha256(blob).hexdigest(), "run": run}
    atomic_write_bytes(folder / CFG_FILE, _sorted_json_bytes(cfg))
    return folder


def _sorted_json_bytes(obj: Any) -> bytes:
    """:func:`jsae.jsonio.json_bytes` with the keys sorted (the same object, the same bytes)."""
    return (json.dumps(to_jsonable(obj), indent=1, sort_keys=True, allow_nan=False) + "\n").encode("utf-8")


def write_model_files(run_dir: str | os.PathLike, models: Sequence[tuple[dict, dict[str, np.ndarray]]], *,
                      normalizer: Normalizer, step: int, total_steps: int | None, complete: bool,
                      run: dict | None = None, index: bool = True) -> Path:
    """Write every model of a run into ``RUN/models/<name>/``, then ``RUN/models/index.json``.

    ``models``: ``(spec dict, params)`` pairs in the run's order (names must be distinct,
    all of one dimension M). Returns ``RUN/models``. An existing ``models/`` of the run is
    rewritten in place (model by model, the index last). ``index=False``: the model folders
    only — a process of a distributed sweep writes the models it holds, and process 0 the
    index once all are written (:func:`write_model_index`).
    """
    out = models_dir(run_dir)
    models = list(models)
    if not models:
        raise BadValueError(f"{out}: no models to write.")
    names: list[str] = []
    dim = None
    for spec, params in models:
        name = spec.get("name") if isinstance(spec, dict) else None
        if name in names:
            raise BadValueError(f"{out}: two models are named {name!r}; model names must be distinct.")
        names.append(name)
        m = int(np.shape(params["W_enc"])[0]) if isinstance(params, dict) and "W_enc" in params else None
        if dim is None:
            dim = m
        elif m != dim:
            raise BadValueError(f"{out}: model {name!r} has dimension {m}, the others {dim}.")
    out.mkdir(parents=True, exist_ok=True)
    for spec, params in models:
        write_model_file(out / spec["name"], spec, params, normalizer=normalizer, step=step, run=run)
    if index:
        write_model_index(run_dir, names, dim=int(dim), step=step, total_steps=total_steps, complete=complete)
    return out


def write_model_index(run_dir: str | os.PathLike, names: Sequence[str], *, dim: int, step: int,
                      total_steps: int | None, complete: bool) -> Path:
    """``RUN/models/index.json``: the run's models in order, their dimension and step (written
    atomically, after the model folders it names)."""
    out = models_dir(run_dir)
    index = {"format": INDEX_FORMAT, "version": VERSION, "step": int(step),
             "total_steps": None if total_steps is None else int(total_steps), "complete": bool(complete),
             "dim": int(dim), "models": list(names)}
    atomic_write_bytes(out / INDEX_FILE, _sorted_json_bytes(index))
    return out


# ----------------------------------------------------------------------------------------- reading


def _read_json(path: Path, fmt: str) -> dict:
    try:
        obj = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as err:
        raise ModelFileError(f"{path}: not readable JSON ({err}); {_DAMAGED}") from None
    if not isinstance(obj, dict) or obj.get("format") != fmt:
        got = obj.get("format") if isinstance(obj, dict) else type(obj).__name__
        raise ModelFileError(f"{path}: not a jsae model file (format {got!r}, expected {fmt!r}); give a run "
                             "directory written by `jsae sweep`.")
    if obj.get("version") != VERSION:
        raise ModelFileError(f"{path}: format version {obj.get('version')!r} is not {VERSION}; read it with the "
                             "jsae version that wrote it, or re-run the `jsae sweep` command to rewrite it.")
    return obj


def read_model_file(folder: str | os.PathLike) -> ModelFile:
    """Read one model folder back, verified.

    Checks: both files exist, ``cfg.json`` is a jsae-sae v1 file, the sha256 of
    ``sae.safetensors`` matches, the dtypes (float32 parameters, float64 normaliser) and
    shapes (``W_enc [M, L]``, ``W_dec [L, M]``, ``b_enc [L]``, ``b_pre [M]``, ``norm_* [M]``)
    agree with each other and with ``cfg.json`` (``dim``, ``latent_size``,
    ``spec["latent_size"]``), values are finite, and ``cfg.json`` says what the weights were
    written as (the definition recorded in the safetensors header: name, spec, dim, normaliser
    kind, step, run id) — files from before that record are read without this last check.
    """
    from safetensors.numpy import load

    folder = Path(folder)
    if not folder.is_dir():
        raise MissingPathError(f"{folder}: no such model folder; {_REWRITE}, or load from the checkpoints: "
                               "load_sweep(run, source='checkpoint').")
    cfg_path, w_path = folder / CFG_FILE, folder / WEIGHTS_FILE
    for p in (cfg_path, w_path):
        if not p.is_file():
            raise MissingPathError(f"{p} is missing; {_REWRITE}, or load from the checkpoints: "
                                   "load_sweep(run, source='checkpoint').")
    cfg = _read_json(cfg_path, FORMAT)
    recorded = cfg.get("sha256")
    if not isinstance(recorded, str) or not _SHA256_RE.match(recorded):
        what = "lacks its 'sha256' field" if recorded is None else f"has a 'sha256' of {str(recorded)[:20]!r}"
        raise ModelFileError(f"{cfg_path} {what} (the checksum of {WEIGHTS_FILE}, 64 hex digits), so the weights "
                             f"cannot be verified: {_DAMAGED}")
    blob = w_path.read_bytes()
    digest = hashlib.sha256(blob).hexdigest()
    if digest != recorded:
        raise ModelFileError(f"{w_path}: sha256 {digest[:12]}… does not match the {str(cfg.get('sha256'))[:12]}… "
                             f"recorded in {cfg_path.name}: {_DAMAGED}")
    try:
        arrays = load(blob)
    except Exception as err:  # safetensors' own error type; the sha256 matched, so the writer was wrong
        raise ModelFileError(f"{w_path}: not a readable safetensors file ({err}); {_DAMAGED}") from None
    missing = [k for k in PARAM_NAMES + _NORM_NAMES if k not in arrays]
    if missing:
        raise ModelFileError(f"{w_path}: lacks {', '.join(missing)}; {_DAMAGED}")
    try:
        m, n_lat = int(cfg["dim"]), int(cfg["latent_size"])
        spec, name, step = cfg["spec"], str(cfg["name"]), int(cfg["step"])
        kind = str(cfg["normalizer"]["kind"])
    except (KeyError, TypeError, ValueError) as err:
        raise ModelFileError(f"{cfg_path}: lacks or mangles {err}; {_DAMAGED}") from None
    want = {"W_enc": (m, n_lat), "b_enc": (n_lat,), "W_dec": (n_lat, m), "b_pre": (m,),
            "norm_mean": (m,), "norm_scale": (m,)}
    for k, shape in want.items():
        if arrays[k].dtype != _DTYPES[k]:
            raise ModelFileError(f"{w_path}: {k} is stored as {arrays[k].dtype}, not {_DTYPES[k].name} (what jsae "
                                 f"writes); {_DAMAGED}")
        if arrays[k].shape != shape:
            raise ModelFileError(f"{w_path}: {k} has shape {arrays[k].shape}, but {cfg_path.name} says M = {m}, "
                                 f"L = {n_lat} (expected {shape}); {_DAMAGED}")
        if not np.all(np.isfinite(arrays[k])):
            raise ModelFileError(f"{w_path}: {k} holds NaN or Inf; the model diverged or the file is damaged — "
                                 "retrain with a lower learning rate.")
    if not isinstance(spec, dict) or spec.get("latent_size") is None or int(spec["latent_size"]) != n_lat:
        got = spec.get("latent_size") if isinstance(spec, dict) else spec
        raise ModelFileError(f"{cfg_path}: spec latent_size {got!r} does not match the weights' L = {n_lat}; "
                             f"{_DAMAGED}")
    if spec.get("activation") not in _ACTIVATIONS:
        raise ModelFileError(f"{cfg_path}: spec activation {spec.get('activation')!r} is not one of "
                             f"{', '.join(_ACTIVATIONS)}; {_DAMAGED}")
    if np.any(arrays["norm_scale"] <= 0):
        raise ModelFileError(f"{w_path}: norm_scale has a value ≤ 0; {_DAMAGED}")
    run = cfg.get("run") if isinstance(cfg.get("run"), dict) else {}
    bound = _check_definition(blob, cfg_path, w_path,
                              model_definition(name, spec, m, n_lat, kind, step,
                                               run.get("id") if isinstance(run.get("id"), str) else None))
    params = {k: np.asarray(arrays[k], np.float32) for k in PARAM_NAMES}
    normalizer = Normalizer(kind=kind, mean=np.asarray(arrays["norm_mean"], np.float64),
                            scale=np.asarray(arrays["norm_scale"], np.float64))
    return ModelFile(name=name, spec=dict(spec), params=params, normalizer=normalizer, dim=m, step=step, run=run,
                     path=folder, bound=bound)


def _flat(d: Any, prefix: str = "") -> dict[str, Any]:
    if not isinstance(d, dict):
        return {prefix.rstrip("."): d}
    out: dict[str, Any] = {}
    for k, v in d.items():
        out.update(_flat(v, f"{prefix}{k}.") if isinstance(v, dict) else {f"{prefix}{k}": v})
    return out


def _check_definition(blob: bytes, cfg_path: Path, w_path: Path, said: dict) -> bool:
    """Refuse a ``cfg.json`` that does not say what the weights were written as (the definition
    in their header). False for a file from before the header recorded it (nothing to check)."""
    try:
        meta = _safetensors_header(blob).get("__metadata__") or {}
        text = meta.get(_DEFINITION_KEY) if isinstance(meta, dict) else None
        recorded = None if text is None else json.loads(text)
    except (UnicodeDecodeError, ValueError) as err:
        raise ModelFileError(f"{w_path}: its header is not readable ({err}); {_DAMAGED}") from None
    if recorded is None:
        return False
    if not isinstance(recorded, dict):
        raise ModelFileError(f"{w_path}: its header's model definition is not a JSON object; {_DAMAGED}")
    a, b = _flat(said), _flat(recorded)
    diff = [k for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)]
    if diff:
        shown = ", ".join(f"{k} = {json.dumps(a.get(k))} (written as {json.dumps(b.get(k))})" for k in diff[:4])
        more = f" and {len(diff) - 4} more" if len(diff) > 4 else ""
        raise ModelFileError(f"{cfg_path} does not say what {w_path.name} was written as: {shown}{more}; {_EDITED}")
    return True


def _read_index(run_dir: Path) -> dict:
    out = models_dir(run_dir)
    if not run_dir.is_dir():
        raise MissingPathError(f"{run_dir}: no such run directory; give a `jsae sweep` run directory.")
    path = out / INDEX_FILE
    if not path.is_file():
        raise MissingPathError(f"{path} is missing (no model files); {_REWRITE}, or load from the checkpoints: "
                               "load_sweep(run, source='checkpoint').")
    index = _read_json(path, INDEX_FORMAT)
    names = index.get("models")
    if not isinstance(names, list) or not names or not all(isinstance(n, str) for n in names):
        raise ModelFileError(f"{path}: 'models' is not a list of model names; {_DAMAGED}")
    bad = [n for n in names if not _usable_name(n)]
    if bad:  # a tampered index must not lead reads outside models/ (../x, /etc, .hidden)
        raise ModelFileError(f"{path}: model name {bad[0]!r} is not a model folder name (letters, digits, _ . + = - "
                             "only; no path separator, no '..', no leading dot): the index was edited or damaged; "
                             f"{_DAMAGED}")
    try:
        int(index["step"]), int(index["dim"])
    except (KeyError, TypeError, ValueError) as err:
        raise ModelFileError(f"{path}: lacks or mangles {err}; {_DAMAGED}") from None
    return index


def read_models(run_dir: str | os.PathLike, names: Sequence[str] | None = None) -> tuple[dict, list[ModelFile]]:
    """The index of ``RUN/models`` and its models (all, in index order, or ``names`` in the given order).

    Only names listed in ``index.json`` are read (stale folders of earlier grids are
    ignored). Every model read must be of the index's step and dimension; models from
    different steps mean an interrupted rewrite (:class:`ModelFileError`). When the run's
    ``sweep.json`` has a ``run_id``, every model must carry it (``cfg.json["run"]["id"]``): a
    model folder copied in from another run is a :class:`ModelFileError` naming it. An
    unknown name raises :class:`~jsae.errors.NotFoundError` listing the names there are.
    """
    run_dir = Path(run_dir)
    index = _read_index(run_dir)
    run_id = recorded_run_id(run_dir)
    known = list(index["models"])
    if names is None:
        wanted = known
    else:
        wanted = [names] if isinstance(names, str) else list(names)
        unknown = [n for n in wanted if n not in known]
        if unknown:
            raise NotFoundError(f"{models_dir(run_dir) / INDEX_FILE}: no model named {', '.join(map(repr, unknown))}; "
                                f"the run has {', '.join(known)}.")
    step, dim = int(index["step"]), int(index["dim"])
    files: list[ModelFile] = []
    for name in wanted:
        mf = read_model_file(models_dir(run_dir) / name)
        if mf.step != step:
            raise ModelFileError(f"{mf.path / CFG_FILE}: step {mf.step}, but {INDEX_FILE} is of step {step}: {_MIXED}")
        if mf.name != name:
            raise ModelFileError(f"{mf.path / CFG_FILE}: holds model {mf.name!r}, not {name!r}; {_DAMAGED}")
        if mf.dim != dim:
            raise ModelFileError(f"{mf.path / CFG_FILE}: dimension {mf.dim}, but {INDEX_FILE} says {dim}; {_DAMAGED}")
        if run_id is not None and mf.run_id != run_id:
            whose = "a run from before run ids" if mf.run_id is None else f"run {mf.run_id[:12]}…"
            raise ModelFileError(f"{mf.path}: model {name} was written by {whose}, not by this run ({run_id[:12]}… in "
                                 f"{SWEEP_FILE}) — a model folder copied in from another run; {_WRONG_RUN}.")
        files.append(mf)
    return index, files


def check_model_files(run_dir: str | os.PathLike) -> dict:
    """Verify every model of ``RUN/models`` as :func:`read_models` does, one model at a time (only
    one model's weights in memory); returns the index. Raises what :func:`read_models` raises."""
    index = _read_index(Path(run_dir))
    for name in index["models"]:
        read_models(run_dir, [name])
    return index


def recorded_run_id(run_dir: str | os.PathLike) -> str | None:
    """The ``run_id`` of ``RUN/sweep.json`` (None when the run is from before run ids, or has no
    readable ``sweep.json``: nothing to check the models against)."""
    try:
        info = json.loads((Path(run_dir) / SWEEP_FILE).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError):
        return None
    rid = info.get(RUN_ID_KEY) if isinstance(info, dict) else None
    return rid if isinstance(rid, str) and rid else None


def has_model_files(run_dir: str | os.PathLike) -> bool:
    """True if ``RUN/models/index.json`` exists (nothing is verified: :func:`read_models` does that,
    so a damaged index is reported, not silently passed over)."""
    return (models_dir(run_dir) / INDEX_FILE).is_file()


def model_files_step(run_dir: str | os.PathLike, *, with_total: bool = False) -> "int | None | tuple":
    """The training step of ``RUN/models`` (its ``index.json``), or ``None`` when there are no
    readable model files (nothing else is verified); ``with_total``: ``(step, total_steps)``
    (``(None, None)`` without them)."""
    try:
        index = json.loads((models_dir(run_dir) / INDEX_FILE).read_text(encoding="utf-8"))
        step = int(index["step"])
        total = index.get("total_steps")
        return (step, None if total is None else int(total)) if with_total else step
    except (OSError, ValueError, KeyError, TypeError):
        return (None, None) if with_total else None
