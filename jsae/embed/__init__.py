"""embed: audio → speaker embeddings → a jsae embedding store.

The export step of jsae (``jsae embed``). Modules, one concern each:

- :mod:`jsae.embed.audio`     reading any audio file as mono float32 at the encoder rate
- :mod:`jsae.embed.segment`   non-silent stretches → 4–8 s segments
- :mod:`jsae.embed.encoders`  speaker encoders (TitaNet via NeMo, resemblyzer) and their registry
- :mod:`jsae.embed.plan`      inputs (manifest / folder) → one planned row per segment
- :mod:`jsae.embed.export`    resumable, shardable embedding of the plan into the store
- :mod:`jsae.embed.describe`  per-segment acoustic descriptors (openSMILE eGeMAPS, silero-vad)
- :mod:`jsae.embed.cli`       the command lines (``jsae embed``, ``jsae describe``)

Importing this package imports neither torch, NeMo, opensmile nor silero-vad.
"""
from jsae.embed.describe import describe_store, describe_waves
from jsae.embed.encoders import ENCODERS, Encoder, EncoderLoadError, get_encoder, register
from jsae.embed.export import ExportConfig, ExportError, export_status, finalize, run_export
from jsae.embed.segment import SegmentConfig

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
