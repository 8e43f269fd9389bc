"""Speaker encoders: waveforms in, one embedding per waveform out.

An encoder is one small class registered under its ``name``::

    @register
    class MyEncoder(Encoder):
        name = "mine"
        def load(self, model, device): ...          # sets self.dim, self.sample_rate
        def embed(self, waves): ...                 # list of [T_i] float32 -> [B, dim]

and ``jsae embed --encoder mine`` uses it. torch, NeMo and resemblyzer are imported
inside ``load`` only, so importing this module (or ``jsae embed --help``) stays fast.

Encoders shipped here:

``titanet``
  NeMo's ``EncDecSpeakerLabelModel`` (TitaNet, ECAPA, SpeakerNet: any model of that
  class) from a local ``.nemo`` file (``restore_from``) or a pretrained name
  (``from_pretrained("titanet_large")``, which downloads unless NeMo's cache has it).
  Embeddings are the raw decoder embeddings (192-d for TitaNet), not normalised.

  *Batching.* NeMo's own batch path (``batch_inference`` → ``fixed_seq_collate_fn``)
  makes every clip as long as the longest of its batch by *repeating* it, and gives
  the model that repeated clip: a segment's embedding then depends on its batch-mates.
  We do not do that. Mel features are computed clip by clip (exactly as NeMo's
  single-clip ``infer_segment`` / ``get_embedding`` compute them), then zero-padded to
  the longest clip and run through the encoder and decoder as one batch with the true
  lengths: NeMo's masked convolutions, masked squeeze-excitation and length-masked
  attentive pooling ignore the padding. The features are computed per clip because the
  preprocessor's per-feature normalisation is ill-conditioned on empty mel bands (audio
  upsampled from 8 kHz has no energy above 4 kHz, std ≈ 1e-3): summing over a padded
  time axis changes float32 rounding there by ~1e-3 relative in the embedding. With
  per-clip features each embedding equals NeMo's single-clip path to float32 rounding
  (measured ≤ 1e-6 relative L2; the tests require < 1e-4), independently of batch-mates.
  ``load`` verifies this on two probe clips (one band-limited); a model that fails the
  check is run on groups of equal-length clips through ``model.forward`` only.
  ``info()["batching"]`` records which was used.

``resemblyzer``
  The GE2E LSTM encoder of the ``resemblyzer`` package (256-d), whose pretrained weights
  ship inside the PyPI package: fully offline. Input is volume-normalised as by
  resemblyzer's ``preprocess_wav`` (to −30 dBFS, increase only), but its webrtcvad silence
  trimming is not applied (segments are already non-silent, and trimming would delete
  music). The embedding is resemblyzer's ``embed_utterance``: the L2-normalised mean of
  the embeddings of 1.6 s partial windows. Batched: the partial windows of all clips of a
  batch go through the LSTM together — every window has the same 160 frames, so no
  padding is involved and the result equals ``embed_utterance`` clip by clip.
"""
from __future__ import annotations

import abc
import logging
import warnings
from pathlib import Path
from typing import Any, ClassVar, Sequence

import numpy as np

from jsae.errors import JsaeError

__all__ = [
    "Encoder",
    "EncoderLoadError",
    "ENCODERS",
    "register",
    "get_encoder",
    "resolve_device",
    "TitaNetEncoder",
    "ResemblyzerEncoder",
]

log = logging.getLogger("jsae.embed")


class EncoderLoadError(JsaeError, RuntimeError):
    """The encoder or its weights cannot be loaded; the message says how to fix it."""


class Encoder(abc.ABC):
    """A speaker encoder.

    Attributes (valid after :meth:`load`):
      name: registry key (``--encoder NAME``).
      dim: embedding size ``M``.
      sample_rate: rate of the waveforms :meth:`embed` takes, Hz.
      model: the model path or name that was loaded (for ``store.json``).
    """

    name: ClassVar[str]
    default_model: ClassVar[str | None] = None
    #: install hint shown when the backend's package is missing
    requirement: ClassVar[str] = ""
    #: default clips per ``embed`` call on a CPU (on a GPU the exporter uses 32);
    #: see benchmarks/RESULTS.md, section "embed"
    cpu_batch_size: ClassVar[int] = 16
    dim: int = 0
    sample_rate: int = 16000
    model: str | None = None

    @abc.abstractmethod
    def load(self, model: str | None = None, device: str = "cpu") -> "Encoder":
        """Load weights (``model``: a path or name; ``None`` = :attr:`default_model`) onto ``device``."""

    @abc.abstractmethod
    def embed(self, waves: Sequence[np.ndarray]) -> np.ndarray:
        """Embed a batch of mono float32 waveforms ``[T_i]`` at :attr:`sample_rate`.

        Clips may have different lengths. Returns float32 ``[B, dim]``, row ``i`` for
        ``waves[i]``; a clip's row does not depend on the other clips of the batch.
        """

    def info(self) -> dict[str, Any]:
        """What ``store.json`` records about the encoder."""
        return {"name": self.name, "dim": self.dim, "model": self.model, "sample_rate": self.sample_rate}


ENCODERS: dict[str, type[Encoder]] = {}


def register(cls: type[Encoder]) -> type[Encoder]:
    """Class decorator: make ``cls`` available as ``--encoder cls.name``."""
    ENCODERS[cls.name] = cls
    return cls


def get_encoder(name: str) -> Encoder:
    """A new, unloaded encoder by registry name."""
    try:
        return ENCODERS[name]()
    except KeyError:
        raise EncoderLoadError(f"unknown encoder {name!r}; choose one of {sorted(ENCODERS)}.") from None


def resolve_device(device: str | None) -> str:
    """``None``/``"auto"`` → ``"cuda"`` when a GPU is visible, else ``"cpu"``; checks ``cuda``."""
    import torch

    if device in (None, "", "auto"):
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise EncoderLoadError(
            f"--device {device} was asked for but torch sees no CUDA GPU (torch {torch.__version__}); "
            "use --device cpu, or install a CUDA build of torch on a GPU machine."
        )
    return device


def _load_state_dict(torch, path: Path, given: str) -> dict:
    """The ``model_state`` tensors of a resemblyzer-style weights file, read with
    ``torch.load(weights_only=True)``: tensors and plain containers only, no pickled code."""
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - torch raises UnpicklingError, RuntimeError, EOFError, ... here
        raise EncoderLoadError(
            f"--model {given}: cannot be loaded as plain weights ({type(err).__name__}); only tensors saved with "
            "torch.save(state_dict) are read, never pickled objects or code."
        ) from None
    state = ckpt.get("model_state", ckpt) if isinstance(ckpt, dict) else None
    if not isinstance(state, dict) or not state or not all(torch.is_tensor(v) for v in state.values()):
        raise EncoderLoadError(
            f"--model {given}: not a resemblyzer weights file; it must hold {{'model_state': state_dict}} "
            "(as resemblyzer's pretrained.pt does)."
        )
    return state


def _require(module: str, hint: str):
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as err:
        raise EncoderLoadError(f"cannot import {module} ({err}); install it with: {hint}") from None


@register
class TitaNetEncoder(Encoder):
    """NeMo ``EncDecSpeakerLabelModel`` (TitaNet); see the module docstring for batching."""

    name = "titanet"
    default_model = "titanet_large"
    #: TitaNet-L on a CPU is fastest one clip at a time (bigger batches overflow the caches)
    cpu_batch_size = 1
    requirement = "pip install torch==2.13.0 'nemo_toolkit[asr]==3.0.0'"
    #: probe check: relative difference allowed between padded-batch and single-clip embeddings
    probe_tolerance = 1e-4

    def __init__(self) -> None:
        self._model = None
        self._torch = None
        self.device = "cpu"
        self.pad_batches = True

    def load(self, model: str | None = None, device: str = "cpu") -> "TitaNetEncoder":
        torch = self._torch = _require("torch", self.requirement)
        _require("nemo.collections.asr", self.requirement)
        from nemo.collections.asr.models import EncDecSpeakerLabelModel

        from nemo.utils import logging as nemo_logging

        self.device = resolve_device(device)
        model = model or self.default_model
        quiet = log.getEffectiveLevel() > logging.DEBUG
        with nemo_logging.temp_verbosity(logging.ERROR if quiet else nemo_logging.getEffectiveLevel()):
            net = self._restore(model, EncDecSpeakerLabelModel, torch)
        net.eval()
        net.freeze()
        self._model = net
        cfg = net.cfg
        self.sample_rate = int(cfg.preprocessor.get("sample_rate", None) or cfg.train_ds.get("sample_rate", 16000))
        probes = self._probes()
        single = [self._forward([w]) for w in probes]
        self.dim = int(single[0].shape[1])
        try:
            batched = self._forward_padded(probes)
        except Exception as err:  # a model whose modules do not take lengths
            log.warning("%s: padded batches fail (%s); batching only clips of equal length.", model, err)
            batched = np.full((len(probes), self.dim), np.inf, np.float32)
        err = max(
            float(np.linalg.norm(batched[i] - single[i][0]) / max(np.linalg.norm(single[i][0]), 1e-12))
            for i in range(len(probes))
        )
        self.pad_batches = err <= self.probe_tolerance
        if not self.pad_batches:
            log.warning(
                "%s: zero-padded batches change embeddings (relative difference %.2g > %.0e); "
                "batching only clips of equal length instead.", self.model, err, self.probe_tolerance,
            )
        self.probe_error = err
        return self

    def _restore(self, model: str, cls, torch):
        """``cls.restore_from(path)`` for a file, ``cls.from_pretrained(name)`` otherwise."""
        path = Path(model).expanduser()
        looks_like_path = path.suffix == ".nemo" or "/" in model or path.exists()
        if looks_like_path:
            if not path.is_file():
                raise EncoderLoadError(
                    f"--model {model}: no such .nemo file. Pass the path of a NeMo speaker model "
                    "(e.g. a fine-tuned TitaNet saved with `model.save_to('titanet.nemo')`) or a "
                    "pretrained name such as titanet_large."
                )
            try:
                net = cls.restore_from(str(path), map_location=torch.device(self.device))
            except Exception as err:  # NeMo raises many kinds for a bad archive
                raise EncoderLoadError(
                    f"--model {model}: NeMo could not restore an EncDecSpeakerLabelModel from it ({err})."
                ) from err
            self.model = str(path.resolve())
        else:
            try:
                net = cls.from_pretrained(model, map_location=torch.device(self.device))
            except Exception as err:
                raise EncoderLoadError(
                    f"--model {model}: could not get the pretrained NeMo model {model!r} ({type(err).__name__}: "
                    f"{err}). from_pretrained downloads the weights, which needs the network. Offline, "
                    f"download the .nemo elsewhere (EncDecSpeakerLabelModel.from_pretrained({model!r})"
                    f".save_to('{model}.nemo')) and pass --model /path/{model}.nemo."
                ) from err
            self.model = model
        return net

    def _probes(self) -> list[np.ndarray]:
        """Two clips of different length; the second is band-limited like upsampled 8 kHz audio."""
        rng = np.random.default_rng(1234)
        out = []
        for seconds, f0, cutoff in ((1.0, 130.0, None), (1.37, 210.0, 3600.0)):
            n = int(seconds * self.sample_rate)
            t = np.arange(n) / self.sample_rate
            w = 0.2 * np.sin(2 * np.pi * f0 * t) * (0.6 + 0.4 * np.sin(2 * np.pi * 3.0 * t))
            w = w + 0.02 * rng.standard_normal(n)
            if cutoff:
                spec = np.fft.rfft(w)
                spec[np.fft.rfftfreq(n, 1 / self.sample_rate) > cutoff] = 0
                w = np.fft.irfft(spec, n)
            out.append(w.astype(np.float32))
        return out

    def _forward(self, waves: Sequence[np.ndarray]) -> np.ndarray:
        """NeMo's own path (``model.forward``) on clips of equal length, stacked."""
        torch = self._torch
        lengths = {int(w.shape[0]) for w in waves}
        if len(lengths) != 1:
            raise ValueError("_forward needs clips of equal length")
        with torch.inference_mode():
            signal = torch.from_numpy(np.stack(waves)).to(self.device)
            length = torch.full((len(waves),), lengths.pop(), device=self.device, dtype=torch.long)
            _, emb = self._model.forward(input_signal=signal, input_signal_length=length)
        return emb.float().cpu().numpy().reshape(len(waves), -1)

    def _forward_padded(self, waves: Sequence[np.ndarray]) -> np.ndarray:
        """Features clip by clip, then encoder + decoder on the zero-padded batch with lengths."""
        torch = self._torch
        net = self._model
        with torch.inference_mode():
            feats, flens = [], []
            for w in waves:
                f, fl = net.preprocessor(
                    input_signal=torch.from_numpy(np.ascontiguousarray(w))[None].to(self.device),
                    length=torch.tensor([w.shape[0]], device=self.device, dtype=torch.long),
                )
                feats.append(f[0])
                flens.append(fl[0])
            t_max = max(f.shape[-1] for f in feats)
            batch = feats[0].new_zeros((len(feats), feats[0].shape[0], t_max))
            for i, f in enumerate(feats):
                batch[i, :, : f.shape[-1]] = f
            encoded = net.encoder(audio_signal=batch, length=torch.stack(flens))
            encoded, length = encoded if isinstance(encoded, tuple) else (encoded, None)
            out = net.decoder(encoder_output=encoded, length=length)
            emb = out[1] if isinstance(out, tuple) else out
        return emb.float().cpu().numpy().reshape(len(waves), -1)

    def embed(self, waves: Sequence[np.ndarray]) -> np.ndarray:
        if self._model is None:
            raise RuntimeError("call load() before embed().")
        if not len(waves):
            return np.zeros((0, self.dim), np.float32)
        if self.pad_batches:
            return self._forward_padded(waves)
        out = np.zeros((len(waves), self.dim), np.float32)
        groups: dict[int, list[int]] = {}
        for i, w in enumerate(waves):
            groups.setdefault(int(w.shape[0]), []).append(i)
        for idx in groups.values():
            out[idx] = self._forward([waves[i] for i in idx])
        return out

    def info(self) -> dict[str, Any]:
        return {
            **super().info(),
            "class": "nemo.collections.asr.models.EncDecSpeakerLabelModel",
            "normalised": False,
            "batching": "per-clip features, zero-padded encoder batch" if self.pad_batches else "equal-length groups",
        }


@register
class ResemblyzerEncoder(Encoder):
    """resemblyzer's GE2E ``VoiceEncoder`` (256-d, weights inside the package)."""

    name = "resemblyzer"
    default_model = None
    requirement = "pip install 'setuptools<81' wheel && pip install --no-build-isolation resemblyzer"

    def __init__(self) -> None:
        self._enc = None
        self.device = "cpu"
        #: embed_utterance's defaults: partial windows per second and last-window coverage
        self.rate = 1.3
        self.min_coverage = 0.75

    def load(self, model: str | None = None, device: str = "cpu") -> "ResemblyzerEncoder":
        torch = _require("torch", "pip install torch==2.13.0")
        with warnings.catch_warnings():   # resemblyzer's imports (pkg_resources, scipy.ndimage.morphology) are old
            warnings.filterwarnings("ignore", message="pkg_resources is deprecated", category=UserWarning)
            warnings.filterwarnings("ignore", category=DeprecationWarning)
            resemblyzer = _require("resemblyzer", self.requirement)
        from resemblyzer import hparams

        self._torch = torch
        self.device = resolve_device(device)
        weights = state = None
        if model:
            weights = Path(model).expanduser()
            if not weights.is_file():
                raise EncoderLoadError(
                    f"--model {model}: no such file. For resemblyzer, --model is an optional custom "
                    "weights file (.pt); leave it out to use the weights shipped with the package."
                )
            state = _load_state_dict(torch, weights, model)
        # the package's own weights first; a custom file is loaded as plain tensors, never unpickled
        self._enc = resemblyzer.VoiceEncoder(device=self.device, verbose=False)
        if state is not None:
            missing, _ = self._enc.load_state_dict(state, strict=False)
            if missing:
                raise EncoderLoadError(
                    f"--model {model}: the weights lack {len(missing)} of the GE2E encoder's tensors "
                    f"(e.g. {missing[:3]}); give a resemblyzer weights file ({{'model_state': state_dict}})."
                )
        self._enc.eval()
        self._hp = hparams
        self.sample_rate = int(hparams.sampling_rate)
        self.dim = int(hparams.model_embedding_size)
        self.model = str(weights.resolve()) if weights else f"resemblyzer-{_version('resemblyzer')}/pretrained.pt"
        return self

    def _partials(self, wav: np.ndarray) -> np.ndarray:
        """``[n_partials, 160, 40]`` mel windows of one clip, as ``embed_utterance`` makes them."""
        from resemblyzer import audio

        wav = audio.normalize_volume(np.asarray(wav, np.float32), self._hp.audio_norm_target_dBFS, increase_only=True)
        wav_slices, mel_slices = self._enc.compute_partial_slices(len(wav), self.rate, self.min_coverage)
        need = wav_slices[-1].stop
        if need >= len(wav):
            wav = np.pad(wav, (0, need - len(wav)), "constant")
        mel = audio.wav_to_mel_spectrogram(wav)
        return np.stack([mel[s] for s in mel_slices])

    def embed(self, waves: Sequence[np.ndarray]) -> np.ndarray:
        if self._enc is None:
            raise RuntimeError("call load() before embed().")
        if not len(waves):
            return np.zeros((0, self.dim), np.float32)
        torch = self._torch
        parts = [self._partials(w) for w in waves]
        counts = [p.shape[0] for p in parts]
        with torch.inference_mode():
            mels = torch.from_numpy(np.concatenate(parts)).to(self.device)
            _, (hidden, _) = self._enc.lstm(mels)
            raw = self._enc.relu(self._enc.linear(hidden[-1]))
            partial = raw / torch.linalg.vector_norm(raw, dim=1, keepdim=True).clamp_min(1e-12)
            partial = partial.cpu().numpy()
        out = np.zeros((len(waves), self.dim), np.float32)
        start = 0
        for i, c in enumerate(counts):
            mean = partial[start : start + c].mean(axis=0)
            out[i] = mean / max(float(np.linalg.norm(mean)), 1e-12)
            start += c
        return out

    def info(self) -> dict[str, Any]:
        return {**super().info(), "class": "resemblyzer.VoiceEncoder (GE2E)", "normalised": True,
                "batching": "1.6 s partial windows of all clips in one LSTM batch"}


def _version(package: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(package)
    except PackageNotFoundError:
        return "unknown"
