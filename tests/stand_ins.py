"""Small, offline stand-ins for tests and benchmarks: a tiny random TitaNet and test audio.

:func:`build_tiny_titanet` makes a NeMo ``EncDecSpeakerLabelModel`` with TitaNet's
architecture (mel front end, separable convolution blocks with squeeze-excitation,
attentive statistics pooling, 192-d embedding) but about 40 thousand weights, and saves it
with ``save_to`` as a ``.nemo`` file, which then loads through the same
``restore_from`` path a real fine-tuned TitaNet takes. Its batch-norm statistics are
calibrated on synthetic audio so that its embeddings actually depend on the input
(with the default running statistics a random net maps every clip to nearly the same
vector, which would make equality tests meaningless).

:func:`speechlike` makes deterministic "voiced" audio: harmonic tones whose pitch
glides and whose amplitude is modulated at a syllable rate, plus a little noise.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np

__all__ = ["tiny_titanet_config", "titanet_large_config", "build_tiny_titanet", "speechlike", "silence"]


def _block(filters: int, kernel: int, residual: bool, repeat: int = 1) -> dict[str, Any]:
    return dict(filters=filters, repeat=repeat, kernel=[kernel], stride=[1], dilation=[1], dropout=0.0,
                residual=residual, separable=True, se=True, se_context_size=-1)


def tiny_titanet_config(sample_rate: int = 16000, filters: int = 32, emb_size: int = 192) -> dict[str, Any]:
    """The model section of a NeMo TitaNet config, shrunk (TitaNet-S has 256 filters, 3072 out)."""
    return {
        "sample_rate": sample_rate,
        "train_ds": {"manifest_filepath": None, "sample_rate": sample_rate, "labels": None,
                     "batch_size": 8, "shuffle": False},
        "preprocessor": {
            "_target_": "nemo.collections.asr.modules.AudioToMelSpectrogramPreprocessor",
            "normalize": "per_feature", "window_size": 0.025, "sample_rate": sample_rate,
            "window_stride": 0.01, "window": "hann", "features": 40, "n_fft": 512,
            "frame_splicing": 1, "dither": 1e-5,
        },
        "encoder": {
            "_target_": "nemo.collections.asr.modules.ConvASREncoder",
            "feat_in": 40, "activation": "relu", "conv_mask": True,
            "jasper": [_block(filters, 3, False), _block(filters, 7, True, 2),
                       _block(filters, 11, True, 2), _block(2 * filters, 1, False)],
        },
        "decoder": {
            "_target_": "nemo.collections.asr.modules.SpeakerDecoder",
            "feat_in": 2 * filters, "num_classes": 8, "pool_mode": "attention",
            "emb_sizes": emb_size, "attention_channels": 16,
        },
        "loss": {"_target_": "nemo.collections.asr.losses.angularloss.AngularSoftmaxLoss",
                 "scale": 30, "margin": 0.2},
    }


def titanet_large_config(sample_rate: int = 16000) -> dict[str, Any]:
    """TitaNet-L's architecture (NeMo's ``titanet-large.yaml``: 1024 filters, 3 repeats,
    kernels 3/7/11/15, 3072 channels into attentive pooling, 80 mels, 192-d), for timing
    the real model's cost with random weights."""
    cfg = tiny_titanet_config(sample_rate)
    cfg["preprocessor"]["features"] = 80
    cfg["encoder"]["feat_in"] = 80
    cfg["encoder"]["jasper"] = [_block(1024, 3, False), _block(1024, 7, True, 3), _block(1024, 11, True, 3),
                                _block(1024, 15, True, 3), _block(3072, 1, False)]
    cfg["decoder"].update(feat_in=3072, attention_channels=128)
    return cfg


def speechlike(seconds: float, sample_rate: int = 16000, *, f0: float = 140.0, seed: int = 0,
               level: float = 0.3) -> np.ndarray:
    """Deterministic voiced-sound stand-in, float32 ``[round(seconds * sample_rate)]``.

    Five harmonics of a gliding ``f0`` (Hz), amplitude-modulated at ≈4 Hz (syllables)
    between 35 % and 100 %, plus noise 30 dB down; peak ≈ ``level`` (full scale = 1).
    """
    rng = np.random.default_rng(seed)
    n = int(round(seconds * sample_rate))
    t = np.arange(n) / sample_rate
    pitch = f0 * (1.0 + 0.08 * np.sin(2 * np.pi * 0.7 * t + rng.uniform(0, 6.28)))
    phase = 2 * np.pi * np.cumsum(pitch) / sample_rate
    voiced = sum((0.6 ** k) * np.sin((k + 1) * phase + rng.uniform(0, 6.28)) for k in range(5))
    envelope = 0.675 + 0.325 * np.sin(2 * np.pi * rng.uniform(3.5, 4.5) * t + rng.uniform(0, 6.28))
    x = voiced * envelope
    x = x / max(np.max(np.abs(x)), 1e-9) * level
    x = x + level * 0.03 * rng.standard_normal(n)
    return x.astype(np.float32)


def silence(seconds: float, sample_rate: int = 16000, *, seed: int = 0, level_db: float = -75.0) -> np.ndarray:
    """Near-silence: white noise at ``level_db`` dBFS RMS (below the default floor of −55 dBFS)."""
    rng = np.random.default_rng(seed)
    n = int(round(seconds * sample_rate))
    return (10 ** (level_db / 20) * rng.standard_normal(n)).astype(np.float32)


def build_tiny_titanet(path: str | os.PathLike, *, seed: int = 0, filters: int = 32,
                       sample_rate: int = 16000, calibration: Sequence[np.ndarray] | None = None,
                       config: dict[str, Any] | None = None) -> Path:
    """Build a random TitaNet, calibrate its batch norms, ``save_to(path)``; returns ``path``.

    ``config`` (default :func:`tiny_titanet_config` with ``filters``) is the model section
    of a NeMo config. Deterministic for a given ``seed``. Needs ``nemo_toolkit[asr]``;
    downloads nothing.
    """
    import torch
    from omegaconf import OmegaConf
    from nemo.collections.asr.models import EncDecSpeakerLabelModel

    torch.manual_seed(seed)
    config = config or tiny_titanet_config(sample_rate, filters)
    model = EncDecSpeakerLabelModel(cfg=OmegaConf.create(config))
    if calibration is None:
        calibration = [speechlike(2.0, sample_rate, f0=f0, seed=seed + i)
                       for i, f0 in enumerate((95.0, 120.0, 150.0, 185.0, 220.0, 260.0))]
    n = min(len(c) for c in calibration)
    batch = torch.from_numpy(np.stack([np.asarray(c[:n], np.float32) for c in calibration]))
    for mod in model.modules():
        if isinstance(mod, torch.nn.modules.batchnorm._BatchNorm):
            mod.reset_running_stats()
            mod.momentum = None          # cumulative average over the calibration pass
    model.train()
    with torch.no_grad():
        model.preprocessor.featurizer.dither = 0.0
        model.forward(input_signal=batch, input_signal_length=torch.full((batch.shape[0],), n))
        model.preprocessor.featurizer.dither = 1e-5
    model.eval()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    model.save_to(str(path))
    return path
