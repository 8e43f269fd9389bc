"""embed: audio → speaker embeddings → a jsae embedding store.

The export step of jsae (``jsae embed``). Modules, one concern each:

- :mod:`embed.audio`     reading any audio file as mono float32 at the encoder rate
- :mod:`embed.segment`   non-silent stretches → 4–8 s segments
- :mod:`embed.encoders`  speaker encoders (TitaNet via NeMo, resemblyzer) and their registry
- :mod:`embed.plan`      inputs (manifest / folder) → one planned row per segment
- :mod:`embed.export`    resumable, shardable embedding of the plan into the store
- :mod:`embed.describe`  per-segment acoustic descriptors (openSMILE eGeMAPS, silero-vad)
- :mod:`embed.cli`       the command lines (``jsae embed``, ``jsae describe``)

Importing this package imports neither torch, NeMo, opensmile nor silero-vad.
"""
from embed.describe import describe_store, describe_waves
from embed.encoders import ENCODERS, Encoder, EncoderLoadError, get_encoder, register
from embed.export import ExportConfig, ExportError, export_status, finalize, run_export
from embed.segment import SegmentConfig

__all__ = [
    "ENCODERS",
    "Encoder",
    "EncoderLoadError",
    "get_encoder",
    "register",
    "ExportConfig",
    "ExportError",
    "export_status",
    "finalize",
    "run_export",
    "SegmentConfig",
    "describe_store",
    "describe_waves",
]
