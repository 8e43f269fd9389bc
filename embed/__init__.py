"""embed: audio → speaker embeddings → a jsae embedding store.

The export step of jsae (``jsae embed``). Modules, one concern each:

- :mod:`embed.audio`     reading any audio file as mono float32 at the encoder rate
- :mod:`embed.segment`   non-silent stretches → 4–8 s segments
- :mod:`embed.encoders`  speaker encoders (TitaNet via NeMo, resemblyzer) and their registry
- :mod:`embed.plan`      inputs (manifest / folder) → one planned row per segment
- :mod:`embed.export`    resumable, shardable embedding of the plan into the store
- :mod:`embed.cli`       the command line

Importing this package imports neither torch nor NeMo.
"""
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
]
